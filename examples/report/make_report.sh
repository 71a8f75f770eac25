#!/usr/bin/env bash
# Rebuild the four-model comparison report (baseline CNN, PGD-trained CNN, multi-L2NNN, ℓ∞-dist Net)
# on the 1,000 embedded Fashion-MNIST test images, in L2 and in ℓ∞.  Run from the repository root:
#   bash examples/report/make_report.sh
set -euo pipefail
out=examples/report
models=(baseline baseline_adv l2nnn linf_dist)
for m in "${models[@]}"; do
  lipcert analyze "examples/models/fmnist_$m.pt2" --data demo --norm l2 --eps 0,0.1,0.3,0.5,1,1.5 \
    --attacks apgd-ce,ddn --steps 20,100 --json "$out/fmnist_${m}_l2.json" -q
  lipcert analyze "examples/models/fmnist_$m.pt2" --data demo --norm linf --eps 0,0.03,0.1 \
    --attacks apgd-ce,fmn --steps 20,100 --json "$out/fmnist_${m}_linf.json" -q
done
lipcert report "$out"/fmnist_{baseline,baseline_adv,l2nnn,linf_dist}_l2.json --pdf "$out/report_l2.pdf" --md "$out/report_l2.md" -q
lipcert report "$out"/fmnist_{baseline,baseline_adv,l2nnn,linf_dist}_linf.json --pdf "$out/report_linf.pdf" --md "$out/report_linf.md" -q
