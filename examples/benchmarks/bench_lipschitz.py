"""Benchmark: the sound Lipschitz analysis at model scale, and Lip₂,∞ of datasets
([WCAT] Table 2) with Jacobian estimates on 1,000 images.

Run:  PYTHONPATH=. python examples/benchmarks/bench_lipschitz.py --analysis [--baseline DIR] [--threads N]
      PYTHONPATH=. python examples/benchmarks/bench_lipschitz.py [--skip-fmnist] [--device auto]

``--analysis`` prints, per model (the shipped CNN and L2NNN, ResNet-18-shaped nets at widths 16
and 64, random with BatchNorm statistics set, and briefly trained): the analysis time from a
fresh process with an empty disk cache (after torch.export's one-off first use, shown apart), the
time again with the disk cache warm (the signed per-convolution bounds read back; the graph is
still exported and every other rule still runs), the conv layers' bound / estimate ratio (max and
median) and the global bound.  ``--baseline DIR`` runs the same measurement with another
checkout's ``certify`` (e.g. a ``git worktree`` of an older commit) and prints both side by side
with the speed-up of the fresh run; each model runs in its own process with a time limit
(``--limit``).  The ratio compares the guaranteed bound with a Lanczos estimate of the layer itself
(zero padding; 60 steps, ‖Ax‖/‖x‖ at the Ritz vector, never above ‖A‖): on small inputs (4×4, 8×8)
the Fourier bound sees circular padding, and the window bounds and the dense Cholesky certificate
(side³/3 flops within LIPSCHITZ_CONV_DENSE_MAX_FLOPS: 2e11 on a CPU, 1e13 on a CUDA device, or
``$LIPCERT_CONV_EXACT_FLOPS``) close that gap.  Run nothing else meanwhile: two processes with
OpenMP threads on 2 cores slow each other down many times over.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import math

import torch
from torch import nn

from certify.data import load_dataset
from certify.device import resolve_device
from certify.lipschitz.estimates import data_lipschitz, empirical_estimates

PAPER = {"fashion-mnist": 0.626, "mnist": 0.417}


# --------------------------------------------------------------------------- the analysis at model scale

MODELS = ["cnn", "l2nnn", "resnet18-w16", "resnet18-w16-trained", "resnet18-w64", "resnet18-w64-trained"]
ROOT = Path(__file__).resolve().parents[2]


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.c2, self.b2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        self.short = None
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.b2(self.c2(torch.relu(self.b1(self.c1(x)))))
        return torch.relu(y + (x if self.short is None else self.short(x)))


class ResNet18(nn.Module):
    """CIFAR ResNet-18 (3×32×32, 3×3 stem, BasicBlocks [2, 2, 2, 2]) at a given base width."""

    def __init__(self, width: int = 64, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        blocks, cin = [], width
        for i, mult in enumerate((1, 2, 4, 8)):
            for j in range(2):
                blocks.append(BasicBlock(cin, width * mult, 2 if i > 0 and j == 0 else 1))
                cin = width * mult
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def resnet(width: int, trained: bool) -> nn.Module:
    torch.manual_seed(0)
    net = ResNet18(width)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    if trained:  # a brief SGD run on random images and labels (BatchNorm statistics follow)
        steps, batch = (40, 16) if width <= 16 else (12, 8)
        opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
        g = torch.Generator().manual_seed(1)
        net.train()
        for _ in range(steps):
            x = torch.rand(batch, 3, 32, 32, generator=g, device="cpu")
            y = torch.randint(0, 10, (batch,), generator=g, device="cpu")
            opt.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
    return net.eval()


def load(name: str, device: str = "cpu"):  # type: ignore[no-untyped-def]
    """The model ``name`` on ``device`` (the analysis runs where the weights are)."""
    from certify.checkpoints import LoadedModel, ModelMetadata, load_model

    if name == "cnn":
        return load_model(ROOT / "examples/models/fmnist_baseline.pt2", device=device)
    if name == "l2nnn":
        return load_model(ROOT / "examples/models/fmnist_l2nnn.pt2", device=device)
    width = int(name.split("-w")[1].split("-")[0])
    module = resnet(width, name.endswith("trained")).to(device)
    return LoadedModel(module=module, format="nn.Module", path="<memory>", sha256="0",
                       metadata=ModelMetadata(input_shape=(3, 32, 32)))


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def measure_one(name: str, threads: int, device: str = "cpu") -> dict[str, object]:
    """Runs in a fresh process: analysis time with an empty disk cache, then with it warm."""
    torch.set_num_threads(threads)
    from certify.lipschitz import analyse, analysis

    model = load(name, device)
    os.environ["LIPCERT_CACHE_DIR"] = tempfile.mkdtemp(prefix="lipcert-bench-")
    start = time.perf_counter()  # torch.export's first use in a process (imports, tracing machinery)
    torch.export.export(nn.Linear(2, 2).to(device), (torch.zeros(1, 2, device=device),))
    if torch.device(device).type == "cuda":  # and the CUDA context, cuSOLVER and cuBLAS handles
        torch.linalg.cholesky(torch.eye(2, dtype=torch.float64, device=device))
        torch.linalg.eigh(torch.eye(2, dtype=torch.complex64, device=device))
    _sync(device)
    startup = time.perf_counter() - start
    start = time.perf_counter()
    rep = analyse(model, norm="l2")
    _sync(device)
    fresh = time.perf_counter() - start
    analysis._CACHE.clear()
    start = time.perf_counter()
    rep2 = analyse(model, norm="l2")
    _sync(device)
    warm = time.perf_counter() - start
    ratios = [lb.bound / lb.estimate for lb in rep.layers if lb.op.startswith("conv") and lb.estimate]
    return {"startup": startup, "fresh": fresh, "warm": warm, "global": rep.global_bound, "global_warm": rep2.global_bound,
            "ratio_max": max(ratios, default=float("nan")), "ratio_median": statistics.median(ratios or [math.nan]),
            "convs": len(ratios), "reused": sum(bool(getattr(lb, "reused", False)) for lb in rep2.layers)}


def run_one(name: str, threads: int, path: Path, limit: float, device: str = "cpu") -> dict[str, object] | None:
    env = dict(os.environ, PYTHONPATH=str(path))
    cmd = [sys.executable, __file__, "--one", name, "--threads", str(threads), "--device", device]
    try:
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=limit, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return None
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        sys.stderr.write(out.stderr[-2000:])
        return None
    return json.loads(lines[-1])


def analysis_table(models: list[str], threads: int, baseline: Path | None, limit: float, device: str = "cpu",
                   rows: bool = False) -> None:
    """The table (see the module docs); ``rows``: also one markdown row per model (gpu_check.sh collects them)."""
    where = torch.cuda.get_device_name(torch.device(device)) if torch.device(device).type == "cuda" else "CPU"
    print(f"Lipschitz analysis, {where}, torch threads = {threads} (times in s; '>' = did not finish in the limit;"
          " export* = torch.export's one-off first use in a process (on a GPU also the CUDA context), not included"
          " in 'fresh')")
    head = f"{'model':<22}{'export*':>8}{'fresh':>8}{'warm':>8}{'ratio max':>11}{'median':>9}{'global':>13}"
    if baseline is not None:
        head += f"  |{'base':>9}{'speed-up':>9}{'base max':>10}{'base global':>13}"
    print(head)
    for name in models:
        new = run_one(name, threads, ROOT, limit, device)
        row = f"{name:<22}"
        if new is None:
            row += f"{'>' + format(limit, '.0f'):>8}"
        else:
            row += (f"{new['startup']:>8.2f}{new['fresh']:>8.2f}{new['warm']:>8.2f}{new['ratio_max']:>11.4f}{new['ratio_median']:>9.4f}"
                    f"{new['global']:>13.6g}")
        if baseline is not None:
            base = run_one(name, threads, baseline, limit, device)
            if base is None:
                row += f"  |{'>' + format(limit, '.0f'):>9}{'—':>9}"
            else:
                speed = base["fresh"] / new["fresh"] if new else float("nan")
                row += (f"  |{base['fresh']:>9.2f}{speed:>8.1f}×{base['ratio_max']:>10.4f}"
                        f"{base['global']:>13.6g}")
        print(row, flush=True)
        if rows:
            target = {"cnn": "< 1 s on CPU", "resnet18-w64": "< 20 s on 2 CPU cores, < 2 s on an H100/H200"}.get(
                name, "ratio ≤ 1.01")
            value = ("did not finish in %.0f s" % limit if new is None else
                     f"fresh {new['fresh']:.2f} s, warm {new['warm']:.2f} s, conv ratio max {new['ratio_max']:.4f}, "
                     f"global {new['global']:.6g}")
            print(f"| lipschitz analysis {name} on {where} | {value} | {target} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-fmnist", action="store_true")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--analysis", action="store_true", help="benchmark the sound Lipschitz analysis")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--baseline", type=Path, default=None, help="another checkout to compare with")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--limit", type=float, default=400.0, help="seconds per model and checkout")
    ap.add_argument("--rows", action="store_true", help="--analysis: also one markdown row per model")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.analysis or args.one:
        dev = str(resolve_device(args.device))
        if args.one:
            print(json.dumps(measure_one(args.one, args.threads, dev)))
        else:
            analysis_table(args.models.split(","), args.threads, args.baseline, args.limit, dev, args.rows)
        return
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
