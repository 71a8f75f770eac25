"""Certify throughput vs a bare inference loop over the same data and batch size.

    python examples/benchmarks/bench_certify.py [--n 10000] [--batch-size 256] [--repeats 5]

Prints both throughputs and their ratio (target ≥ 0.95).  Both loops read the
same uint8 dataset and convert each batch to float32 on the device; lipcert's
loop additionally computes float64 gaps, margins and radii per example.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from certify import LipschitzClaim, LoadedModel, ModelMetadata, certify, load_dataset
from certify.device import resolve_device


def cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10),
    ).eval()


def bare_loop(module: nn.Module, data, batch_size: int, device) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        for _, x, _ in data.batches(batch_size, device):
            module(x)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def lipcert_loop(model: LoadedModel, data, batch_size: int, device) -> float:
    start = time.perf_counter()
    certify(model, data, norm="l2", eps=[0.1, 0.3], certificate="l2-multi", batch_size=batch_size, device=device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    device = resolve_device(args.device)
    data = load_dataset(args.data, limit=args.n)
    module = cnn().to(device)
    meta = ModelMetadata(input_shape=(1, 28, 28), lipschitz=LipschitzClaim("l2", "per-logit", 1.0))
    model = LoadedModel(module=module, format="nn.Module", path="<memory>", sha256="-", metadata=meta)
    bare_loop(module, data, args.batch_size, device)  # warm-up
    lipcert_loop(model, data, args.batch_size, device)
    bare, ours = [], []
    for _ in range(args.repeats):  # interleaved so drift hits both alike
        bare.append(bare_loop(module, data, args.batch_size, device))
        ours.append(lipcert_loop(model, data, args.batch_size, device))
    tb, to = statistics.median(bare), statistics.median(ours)
    n = len(data)
    print(f"device={device} n={n} batch_size={args.batch_size} threads={torch.get_num_threads()}")
    print(f"bare inference loop : {n / tb:10.1f} examples/s  (median {tb:.3f} s)")
    print(f"lipcert certify     : {n / to:10.1f} examples/s  (median {to:.3f} s)")
    print(f"throughput ratio certify / bare = {tb / to:.3f}  (target >= 0.95)")


if __name__ == "__main__":
    main()
