"""Certify throughput vs a bare inference loop over the same data and batch size.

    python examples/benchmarks/bench_certify.py [--model examples/models/fmnist_baseline.pt2]
                                                [--n 10000] [--batch-size 256] [--repeats 5]

Prints both throughputs and their ratio (target ≥ 0.95).  Both loops read the
same uint8 dataset and convert each batch to float32 on the device; lipcert's
loop additionally computes float64 gaps, margins and radii per example.  The
one-off Lipschitz analysis that plans the certificate (cached per model) is
timed separately.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from certify import certify, load_dataset, load_model
from certify.device import resolve_device
from certify.lipschitz import analyse


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bare_loop(module, data, batch_size: int, device: torch.device) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        for _, x, _ in data.batches(batch_size, device):
            module(x)
    sync(device)
    return time.perf_counter() - start


def lipcert_loop(model, data, batch_size: int, device: torch.device) -> float:
    start = time.perf_counter()
    certify(model, data, norm="l2", eps=[0.1, 0.3], certificate="auto", batch_size=batch_size, device=device)
    sync(device)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="examples/models/fmnist_baseline.pt2")
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    device = resolve_device(args.device)
    data = load_dataset(args.data, limit=args.n)
    model = load_model(args.model, device=device)
    start = time.perf_counter()
    analyse(model, norm="l2", input_shape=data.input_shape)
    analysis = time.perf_counter() - start
    bare_loop(model.module, data, args.batch_size, device)  # warm-up
    lipcert_loop(model, data, args.batch_size, device)
    bare, ours = [], []
    for _ in range(args.repeats):  # interleaved so drift hits both alike
        bare.append(bare_loop(model.module, data, args.batch_size, device))
        ours.append(lipcert_loop(model, data, args.batch_size, device))
    tb, to = statistics.median(bare), statistics.median(ours)
    n = len(data)
    print(f"model={args.model} device={device} n={n} batch_size={args.batch_size} threads={torch.get_num_threads()}")
    print(f"one-off Lipschitz analysis (cached per model): {analysis:.2f} s")
    print(f"bare inference loop : {n / tb:10.1f} examples/s  (median {tb:.3f} s)")
    print(f"lipcert certify     : {n / to:10.1f} examples/s  (median {to:.3f} s)")
    print(f"throughput ratio certify / bare = {tb / to:.3f}  (target >= 0.95)")
    print(f"| certify / bare inference throughput, {Path(args.model).stem}, n={n}, batch {args.batch_size}, "
          f"{device.type} | {tb / to:.3f} | ≥ 0.95 |")


if __name__ == "__main__":
    main()
