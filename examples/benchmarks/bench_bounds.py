"""Time per 1,000 points of CROWN and α-CROWN (one ε, all K−1 logit differences) for a 3×256 MLP, a small
CNN and a small ResNet-style net (a residual block, max pooling) on 28×28 inputs, beside a bare float32
forward + backward loop over the same points; with ``--fashion N``, instead, certified counts of IBP, CROWN
and α-CROWN at ℓ∞ ε = 0.01, 0.02, 0.03 on the first N Fashion-MNIST test points for a normally trained
3×256 MLP (``examples/bounds_mlp.py``'s training).

    python examples/benchmarks/bench_bounds.py [--n 100] [--batch-size 50] [--alpha-steps 20] [--device cpu]
    python examples/benchmarks/bench_bounds.py --fashion 100 [--epochs 3] [--alpha-steps 20]

Random weights (scaled like a trained model's) are enough to time the work: the relaxation's cost does not
depend on the weights, only on how many neurons are unstable, which ε sets (ℓ∞ ε = 0.01 here).
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from certify.bounds import BoundSettings, margin_bounds, network_from_module
from certify.threat import Norm


def mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                         nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))


def cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1),
                         nn.ReLU(), nn.Flatten(), nn.Linear(16 * 7 * 7, 64), nn.ReLU(), nn.Linear(64, 10))


class ResBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, c, 3, padding=1),
                                  nn.BatchNorm2d(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.body(x))


def resnet() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.ReLU(), ResBlock(8), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(8 * 7 * 7, 64), nn.ReLU(), nn.Linear(64, 10))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def per_1000(fn, n: int, device: torch.device) -> float:  # type: ignore[no-untyped-def]
    sync(device)
    t = time.perf_counter()
    fn()
    sync(device)
    return (time.perf_counter() - t) * 1000 / n


def bare(model: nn.Module, x: torch.Tensor, batch: int) -> None:
    for i in range(0, x.shape[0], batch):
        xb = x[i:i + batch].clone().requires_grad_(True)
        model(xb).sum().backward()


def bounds(model: nn.Module, net, x: torch.Tensor, batch: int, settings: BoundSettings) -> None:  # type: ignore[no-untyped-def]
    for i in range(0, x.shape[0], batch):
        xb = x[i:i + batch]
        with torch.no_grad():
            pred = model(xb).argmax(1)
        margin_bounds(net, xb, pred, torch.full((xb.shape[0],), 0.01, dtype=torch.float64, device=xb.device), settings)


def fashion(n: int, epochs: int, steps: int, batch: int) -> None:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bounds_mlp import train

    from certify.data import load_dataset

    root = "/usr/share/datasets/fashion-mnist"
    model = train(load_dataset("fashion-mnist", split="train", data_root=root), epochs)
    test = load_dataset("fashion-mnist", split="test", data_root=root).subset(range(n))
    x, y = test.as_float(test.x), test.y
    with torch.no_grad():
        pred = model(x).argmax(1)
    correct = pred == y
    net = network_from_module(model, (1, 28, 28))
    print(f"Fashion-MNIST 3×256 MLP, {epochs} epochs, clean {int(correct.sum())}/{n}; α-CROWN {steps} steps")
    print("| ε | IBP | CROWN | α-CROWN | α-CROWN > CROWN (points) | time IBP / CROWN / α-CROWN (s) |")
    print("|---|---|---|---|---|---|")
    for eps in (0.01, 0.02, 0.03):
        counts, times, lows = {}, [], {}
        for method in ("ibp", "crown", "alpha-crown"):
            s = BoundSettings(method=method, norm=Norm.LINF, lo=0.0, hi=1.0, alpha_steps=steps)
            t = time.perf_counter()
            low = torch.cat([margin_bounds(net, x[i:i + batch], pred[i:i + batch],
                                           torch.full((len(x[i:i + batch]),), eps, dtype=torch.float64, device=x.device), s)
                             for i in range(0, n, batch)])
            times.append(time.perf_counter() - t)
            lows[method] = low.amin(1)
            counts[method] = int((correct & (low > 0).all(1)).sum())
        if bool((lows["alpha-crown"] < lows["crown"]).any()) or counts["alpha-crown"] < counts["crown"]:
            raise SystemExit("α-CROWN below CROWN: a bug")
        better = int((correct & (lows["alpha-crown"] > 0) & (lows["crown"] <= 0)).sum())
        cells = " | ".join(str(counts[m]) for m in ("ibp", "crown", "alpha-crown"))
        print(f"| {eps} | {cells} | {better} | {' / '.join(f'{t:.0f}' for t in times)} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--alpha-steps", type=int, default=20)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--fashion", type=int, default=0, help="certified counts on this many Fashion-MNIST points")
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.fashion:
        fashion(args.fashion, args.epochs, args.alpha_steps, args.batch_size)
        return
    device = torch.device(args.device)
    torch.manual_seed(0)
    x = torch.rand(args.n, 1, 28, 28, device=device)
    print(f"device {device}, {args.n} points, batch {args.batch_size}, ℓ∞ ε = 0.01, α-CROWN {args.alpha_steps} steps")
    print("| model | bare fwd+bwd (s/1000) | CROWN (s/1000) | α-CROWN (s/1000) | CROWN / bare | α-CROWN / bare |")
    print("|---|---|---|---|---|---|")
    for name, make in (("MLP 3×256", mlp), ("small CNN", cnn), ("ResNet-style (residual block, max pool)", resnet)):
        model = make().eval().to(device)
        for p in model.parameters():
            p.requires_grad_(False)
        net = network_from_module(model, (1, 28, 28))
        base = per_1000(lambda m=model: bare(m, x, args.batch_size), args.n, device)
        times = []
        for method in ("crown", "alpha-crown"):
            s = BoundSettings(method=method, norm=Norm.LINF, lo=0.0, hi=1.0, alpha_steps=args.alpha_steps)
            times.append(per_1000(lambda m=model, n=net, s=s: bounds(m, n, x, args.batch_size, s), args.n, device))
        print(f"| {name} | {base:.3f} | {times[0]:.2f} | {times[1]:.2f} | {times[0] / base:.0f}× | {times[1] / base:.0f}× |")


if __name__ == "__main__":
    main()
