#!/usr/bin/env bash
# The GPU check (docs/determinism.md), in one go (about 6-8 minutes on an H100/H200):
#   1. python -m pytest -m gpu       (every command on cuda vs cpu, TF32-off soundness)
#   2. bench_certify.py              (certify / bare inference throughput, CNN and L2NNN, 10,000 images)
#   3. bench_attacks.py              (PGD-100 vs bare loop on 10,000 points; vs foolbox/torchattacks; suite vs AutoAttack)
#   4. bench_cli.py                  (lipcert start-up; certify and attack from the shell, wall time)
#   5. bench_distributed.py          (torchrun with max(2, GPUs) ranks vs 1 process, same JSON: NCCL when
#                                     every rank has a GPU of its own, gloo when 2 ranks share the one GPU)
#   6. bench_lipschitz.py --analysis (the sound Lipschitz analysis on the device: shipped CNN and L2NNN,
#                                     ResNet-18 at widths 16 and 64, fresh and with the signed cache warm)
# and prints one table of the results, with the device named.
#
#   examples/benchmarks/gpu_check.sh [--wheels DIR] [--full-suite] [--cpu-dry-run] [--out DIR]
#
#   --wheels DIR    install foolbox, torchattacks and pyautoattack from a folder of wheels when they are
#                   missing (no package index needed; make the folder with fetch_gpu_wheels.sh)
#   --full-suite    also run the whole test suite (python -m pytest, device auto)
#   --cpu-dry-run   exercise the script on a machine without a GPU: --device cpu, small n
#   --out DIR       where the logs go (default: a fresh temporary directory)
set -uo pipefail
cd "$(dirname "$0")/../.."

WHEELS="" FULL=0 DRY=0 OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --wheels) WHEELS="$2"; shift 2 ;;
    --full-suite) FULL=1; shift ;;
    --cpu-dry-run) DRY=1; shift ;;
    --out) OUT="$2"; shift 2 ;;
    *) echo "Error: unknown option $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done
PY="${PYTHON:-python}"
OUT="${OUT:-$(mktemp -d -t lipcert-gpu-check.XXXXXX)}"
mkdir -p "$OUT"

if [ "$DRY" = 1 ]; then
  DEVICE=cpu N=200 BS=200 N_AA=50 REPEATS=1 EPOCHS=1 NTRAIN=1000 SLOW=4  # a busy CPU: longer limits
else
  if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "Error: CUDA is not available; use --cpu-dry-run to exercise the script on the CPU" >&2
    exit 2
  fi
  DEVICE=cuda N=10000 BS=10000 N_AA=1000 REPEATS=3 EPOCHS=2 NTRAIN=10000 SLOW=1
fi

if [ -n "$WHEELS" ]; then
  # module:package, dependencies first; --no-deps so nothing already installed (torch, numpy, requests) changes
  for pair in smmap:smmap gitdb:gitdb git:GitPython typing_extensions:typing-extensions requests:requests \
              eagerpy:eagerpy foolbox:foolbox tqdm:tqdm torchattacks:torchattacks pyautoattack:pyautoattack; do
    mod="${pair%%:*}" pkg="${pair#*:}"
    if ! "$PY" -c "import $mod" 2>/dev/null; then
      "$PY" -m pip install --no-index --no-deps --find-links "$WHEELS" "$pkg" >>"$OUT/pip.log" 2>&1 \
        || echo "note: could not install $pkg from $WHEELS (see $OUT/pip.log)" >&2
    fi
  done
fi

DEVICE_NAME=$("$PY" -c "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() and '$DEVICE' == 'cuda' else 'CPU (dry run)')")
CORES="$(getconf _NPROCESSORS_ONLN)"  # not nproc: it follows OMP_NUM_THREADS
CPU_INFO="$CORES CPU cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
START=$SECONDS

step() {  # step NAME TIMEOUT CMD...: run, log, and record pass/fail plus wall time
  local name="$1" limit="$2"; shift 2
  local t0=$SECONDS
  timeout "$((limit * SLOW))" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  echo "| step $name | $([ $rc = 0 ] && echo ok || echo "FAILED rc=$rc") in $((SECONDS - t0)) s | |" >>"$OUT/steps.md"
  grep -h '^| ' "$OUT/$name.log" | grep -v '^| step ' >>"$OUT/rows.md" || true
  # pytest: the summary line as a row
  grep -h -E '^(=+ )?[0-9]+ (passed|failed|skipped|error)' "$OUT/$name.log" | tail -1 \
    | sed "s/^=* *//; s/ *=*$//; s/^/| $name | /; s/$/ | all pass |/" >>"$OUT/rows.md" || true
}

: >"$OUT/steps.md"; : >"$OUT/rows.md"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$CORES}"
if [ "$DRY" = 1 ]; then
  step pytest-gpu 120 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py
else
  step pytest-gpu 240 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py
fi
for model in fmnist_baseline fmnist_l2nnn; do
  step "certify-$model" 120 "$PY" examples/benchmarks/bench_certify.py --model "examples/models/$model.pt2" \
    --data fashion-mnist --n "$N" --batch-size 256 --repeats "$REPEATS" --device "$DEVICE"
done
step attacks-pgd 240 "$PY" examples/benchmarks/bench_attacks.py --n "$N" --batch-size "$BS" --device "$DEVICE" \
  --epochs "$EPOCHS" --n-train "$NTRAIN" --sections 1,2
step attacks-autoattack 180 "$PY" examples/benchmarks/bench_attacks.py --n "$N_AA" --batch-size 500 \
  --device "$DEVICE" --epochs "$EPOCHS" --n-train "$NTRAIN" --sections 3 --suite-seeds 0
step cli 120 "$PY" examples/benchmarks/bench_cli.py --repeats 5 --device "$DEVICE" --n "$N"
if [ "$DRY" = 1 ]; then LIP_MODELS=cnn,l2nnn,resnet18-w16; else LIP_MODELS=cnn,l2nnn,resnet18-w16,resnet18-w64,resnet18-w64-trained; fi
step lipschitz-analysis 240 "$PY" examples/benchmarks/bench_lipschitz.py --analysis --rows --device "$DEVICE" \
  --threads "$CORES" --models "$LIP_MODELS" --limit 120
GPUS=$("$PY" -c "import torch; print(torch.cuda.device_count() if '$DEVICE' == 'cuda' else 0)")
PROCS=$(( GPUS > 2 ? GPUS : 2 ))
step "distributed-$PROCS-ranks" 300 "$PY" examples/benchmarks/bench_distributed.py --n "$N" --procs "$PROCS" \
  --device "$DEVICE" --runs attack,certify,lipschitz,check
if [ "$FULL" = 1 ]; then
  step pytest-all 600 "$PY" -m pytest -q -p no:cacheprovider -n 4
fi

echo
echo "lipcert GPU check · device: $DEVICE_NAME · host: $CPU_INFO · torch $("$PY" -c 'import torch; print(torch.__version__, torch.version.cuda)') · $((SECONDS - START)) s · logs: $OUT"
echo
echo "| metric | value | target |"
echo "|---|---|---|"
cat "$OUT/rows.md" "$OUT/steps.md"
