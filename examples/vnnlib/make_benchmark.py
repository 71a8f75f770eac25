"""Write a small VNN-COMP-style benchmark folder for `lipcert verify --instances`.

Trains a 784-64-10 ReLU MLP on 800 images of lipcert's bundled Fashion-MNIST demo set (a few
seconds on a CPU), exports it to ONNX with a flat ``(1, 784)`` input, as VNN-COMP's MNIST networks
are, and writes ℓ∞ robustness properties (``Y_j ≥ Y_label`` for some j ≠ label is the unsafe region)
around the first test images (800 on) that the network classifies correctly, at several ε, plus ``instances.csv``::

    python examples/vnnlib/make_benchmark.py bench/ [--images 5] [--eps 0.001,0.004,0.03] [--timeout 30]
    lipcert verify --instances bench/instances.csv --results bench/results.csv
"""

from __future__ import annotations

import argparse
import io
import warnings
from pathlib import Path

import torch
from torch import nn

from certify.data import load_dataset


def train(x: torch.Tensor, y: torch.Tensor) -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(60):
        for i in range(0, len(x), 100):
            loss = nn.functional.cross_entropy(net(x[i:i + 100]), y[i:i + 100])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


def onnx_bytes(net: nn.Module) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, 784, device="cpu"),), buf, dynamo=False, input_names=["X"], output_names=["Y"])
    return buf.getvalue()


def property_text(x: torch.Tensor, label: int, eps: float) -> str:
    lines = [f"; ℓ∞ robustness of a test image, label {label}, eps {eps}"]
    lines += [f"(declare-const X_{i} Real)" for i in range(784)] + [f"(declare-const Y_{j} Real)" for j in range(10)]
    for i, v in enumerate(x.tolist()):
        lines += [f"(assert (<= X_{i} {min(1.0, v + eps)!r}))", f"(assert (>= X_{i} {max(0.0, v - eps)!r}))"]
    clauses = "\n".join(f"    (and (>= Y_{j} Y_{label}))" for j in range(10) if j != label)
    return "\n".join(lines) + f"\n(assert (or\n{clauses}\n))\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder", type=Path)
    ap.add_argument("--images", type=int, default=5)
    ap.add_argument("--eps", default="0.001,0.004,0.03")
    ap.add_argument("--timeout", type=float, default=30)
    args = ap.parse_args()
    data = load_dataset("demo")
    x, y = data.batch(0, len(data), "cpu")
    x = x.reshape(len(x), 784).float()
    net = train(x[:800], y[:800])
    out = args.folder
    (out / "onnx").mkdir(parents=True, exist_ok=True)
    (out / "vnnlib").mkdir(exist_ok=True)
    (out / "onnx" / "mlp.onnx").write_bytes(onnx_bytes(net))
    rows = []
    with torch.no_grad():
        correct = [i for i in range(800, len(x)) if int(net(x[i:i + 1]).argmax()) == int(y[i])]
    for i in correct[:args.images]:
        for eps in (float(e) for e in args.eps.split(",")):
            name = f"vnnlib/img{i}_eps{eps:g}.vnnlib"
            (out / name).write_text(property_text(x[i], int(y[i]), eps))
            rows.append(f"onnx/mlp.onnx,{name},{args.timeout:g}")
    (out / "instances.csv").write_text("\n".join(rows) + "\n")
    print(f"wrote {len(rows)} instances to {out / 'instances.csv'}")


if __name__ == "__main__":
    main()
