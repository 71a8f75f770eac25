#!/usr/bin/env bash
# Two machines, GPUS processes each.  Run this script on both, with NODE_RANK=0 on the first and
# NODE_RANK=1 on the second; MASTER_ADDR is the first machine's address (reachable from the second),
# MASTER_PORT a free TCP port there.  Both machines need the model and the data at the same paths.
set -euo pipefail
: "${MASTER_ADDR:?the address of node 0}" "${NODE_RANK:?0 on the first node, 1 on the second}"
MASTER_PORT=${MASTER_PORT:-29500}
GPUS=${GPUS:-$(python -c "import torch; print(max(1, torch.cuda.device_count()))")}

torchrun --nnodes=2 --node_rank="$NODE_RANK" --nproc_per_node="$GPUS" \
    --master_addr="$MASTER_ADDR" --master_port="$MASTER_PORT" \
    -m certify attack examples/models/fmnist_baseline.pt2 \
    --data fashion-mnist --norm l2 --eps 0.5,1.5 --attacks apgd-ce,apgd-t --steps 100 \
    --json results.json   # written on node 0 only (by rank 0)
