"""Benchmark: Lip₂,∞ of datasets ([WCAT] Table 2) and Jacobian estimates on 1,000 images.

Run:  PYTHONPATH=. python examples/benchmarks/bench_lipschitz.py [--skip-fmnist] [--device auto]
Prints one table: dataset, n, Lip₂,∞, paper value, seconds (CPU, and CUDA when present).
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from certify.data import load_dataset
from certify.device import resolve_device
from certify.estimates import data_lipschitz, empirical_estimates

PAPER = {"fashion-mnist": 0.626, "mnist": 0.417}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-fmnist", action="store_true")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    dev = resolve_device(args.device)
    sets = [("mnist5k", "train", None), ("mnist", "test", "/work/shared/data/mnist")]
    if not args.skip_fmnist:
        sets.insert(0, ("fashion-mnist", "train", None))
    print(f"{'dataset':<16}{'split':<7}{'n':>7}{'Lip2,inf':>10}{'paper':>8}{'pair':>16}{'seconds':>9}  device")
    for name, split, root in sets:
        ds = load_dataset(name, split=split, data_root=root)
        res = data_lipschitz(ds, device=dev)
        paper = PAPER.get(name.replace("5k", ""), float("nan"))
        print(f"{name:<16}{split:<7}{res.n:>7}{res.lip_2_inf:>10.4f}{paper:>8.3f}"
              f"{str((res.index_a, res.index_b)):>16}{res.seconds:>9.1f}  {dev}")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 32, 3, padding=1),
                        nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * 7 * 7, 10)).eval().to(dev)
    demo = load_dataset("demo")
    t = time.perf_counter()
    est = empirical_estimates(net, demo, device=dev)
    print(f"Jacobian estimates on {est.n} images (small CNN): {time.perf_counter() - t:.1f} s "
          f"(‖J‖₂ mean {est.jacobian_spectral_mean:.4g}, max {est.jacobian_spectral_max.value:.4g})")


if __name__ == "__main__":
    main()
