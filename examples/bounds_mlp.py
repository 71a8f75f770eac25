"""Train a plain 3×256 ReLU MLP on Fashion-MNIST for a few epochs, then compare certified accuracy from IBP,
CROWN and α-CROWN with PGD robust accuracy at ℓ∞ ε = 0.01, 0.02, 0.03, and report the open share
(neither certified nor broken).  ``docs/bounds.md`` records a run.

    python examples/bounds_mlp.py [--data /usr/share/datasets/fashion-mnist] [--n 200] [--epochs 3] [--out model.pt2]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from certify.bounds import BoundSettings, certified_radii, network_from_module
from certify.data import load_dataset
from certify.threat import Norm

EPS = (0.01, 0.02, 0.03)


def train(data, epochs: int, seed: int = 0) -> nn.Module:  # type: ignore[no-untyped-def]
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                          nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = data.as_float(data.x), data.y
    for _ in range(epochs):
        perm = torch.randperm(len(y), device="cpu")
        for i in range(0, len(y), 128):
            j = perm[i:i + 128]
            loss = nn.functional.cross_entropy(model(x[j]), y[j])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def pgd_broken(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int = 50,
               restarts: int = 2) -> torch.Tensor:
    """True where ℓ∞ PGD (margin loss, step ε/8, random starts) finds a misclassified point, or x is wrong."""
    broken = model(x).argmax(1) != y
    gen = torch.Generator().manual_seed(0)
    for _ in range(restarts):
        adv = (x + (torch.rand(x.shape, generator=gen, device=x.device) * 2 - 1) * eps).clamp(0, 1)
        for _ in range(steps):
            adv.requires_grad_(True)
            out = model(adv)
            other = out.scatter(1, y.view(-1, 1), -1e9).amax(1)
            margin = out.gather(1, y.view(-1, 1)).squeeze(1) - other
            (g,) = torch.autograd.grad(margin.sum(), adv)
            with torch.no_grad():
                adv = torch.min(torch.max(adv - eps / 8 * g.sign(), x - eps), x + eps).clamp(0, 1)
                broken |= model(adv).argmax(1) != y
    return broken


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--out", default=None, help="save the trained model here (.pt2)")
    args = ap.parse_args()
    torch.set_num_threads(1)  # small float64 products: threads only contend on a shared machine
    train_set = load_dataset("fashion-mnist", split="train", data_root=args.data)
    test = load_dataset("fashion-mnist", split="test", data_root=args.data).subset(range(args.n))
    t = time.perf_counter()
    model = train(train_set, args.epochs)
    print(f"trained in {time.perf_counter() - t:.0f} s")
    if args.out:
        from certify.checkpoints import ModelMetadata, save_model

        save_model(model, args.out, ModelMetadata(input_shape=(1, 28, 28)), example_input=torch.zeros(2, 1, 28, 28, device="cpu"))
    x, y = test.as_float(test.x), test.y
    with torch.no_grad():
        pred = model(x).argmax(1)
    print(f"clean accuracy {float((pred == y).float().mean()):.3f} on {args.n} test points")
    net = network_from_module(model, (1, 28, 28))
    radii = {}
    for method in ("ibp", "crown", "alpha-crown"):
        t = time.perf_counter()
        s = BoundSettings(method=method, norm=Norm.LINF, lo=0.0, hi=1.0, eps_max=0.0625, iterations=8)
        lower = radii.get("crown") if method == "alpha-crown" else None
        radii[method] = torch.cat([certified_radii(net, x[i:i + 50], pred[i:i + 50], s,
                                                   lower=None if lower is None else lower[i:i + 50])
                                   for i in range(0, len(y), 50)])
        print(f"{method}: {time.perf_counter() - t:.1f} s")
    correct = pred == y
    print("| ε | IBP | CROWN | α-CROWN | PGD robust | open (α-CROWN vs PGD) |")
    print("|---|---|---|---|---|---|")
    for eps in EPS:
        cert = {m: correct & (r > eps) for m, r in radii.items()}
        broken = pgd_broken(model, x, y, eps)
        if bool((cert["alpha-crown"] & broken).any()):
            raise SystemExit("an attack broke a certified point: a bug")
        open_share = float((~cert["alpha-crown"] & ~broken).float().mean())
        cells = " | ".join(f"{float(cert[m].float().mean()):.1%}" for m in ("ibp", "crown", "alpha-crown"))
        print(f"| {eps} | {cells} | {float((~broken).float().mean()):.1%} | {open_share:.1%} |")


if __name__ == "__main__":
    main()
