#!/usr/bin/env bash
# One machine, N processes: one per GPU (NCCL), or N CPU processes (gloo) without CUDA.
# Only rank 0 writes results.json and draws progress; the JSON equals a one-process run's
# (its header says "world_size": N).
set -euo pipefail
NPROC=${NPROC:-$(python -c "import torch; print(max(1, torch.cuda.device_count()))")}
# CPU ranks: one thread each, or the processes fight over the cores.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

torchrun --standalone --nproc_per_node="$NPROC" -m certify attack examples/models/fmnist_baseline.pt2 \
    --data fashion-mnist --norm l2 --eps 0.5,1.5 --attacks apgd-ce,apgd-t --steps 100 \
    --json results.json

# certify, analyze and run shard the same way:
#   torchrun --standalone --nproc_per_node="$NPROC" -m certify certify examples/models/fmnist_l2nnn.pt2 \
#       --data fashion-mnist --norm l2 --eps 0.5,1,1.5 --json certify.json
#   torchrun --standalone --nproc_per_node="$NPROC" -m certify run examples/ci/suite.yaml --junit junit.xml
