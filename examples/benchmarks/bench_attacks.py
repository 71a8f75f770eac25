"""Benchmark lipcert's attacks against a bare loop, foolbox, torchattacks, ART and AutoAttack.

Prints, in one run, side by side:

1. lipcert PGD-100 vs a bare loop of 100 forward+backward passes over all
   points with no early stop (target ≤ 1.10), plus lipcert with early stop off
   (the pure bookkeeping overhead);
2. lipcert PGD vs foolbox, torchattacks and ART PGD with the same ε, steps and
   step size on the same model and data: time ratio and success rate (target:
   ≥ 3× faster than the fastest peer at ≥ its success rate), best of two runs
   for every library; plus lipcert APGD-CE with the same ε and steps (its own
   step-size schedule) for reference;
3. lipcert's default L2 and ℓ∞ suites (APGD-CE → APGD-T → DDN/FMN) vs AutoAttack
   standard (``pyautoattack``): robust accuracy and wall time (target: within
   +0.3 pp at ≤ 0.5× the time).  The lipcert suite also runs with two more seeds
   (untimed) because a point or two on the boundary flips with the random starts.

Timings use the same torch thread count for every library (``OMP_NUM_THREADS=1``
for the recorded CPU output).

The model is a small Fashion-MNIST CNN trained here for a few epochs on a
subset (CPU, ~1 minute): undefended, which is where early stop pays.
Peers are optional (``pip install lipcert[bench]``); missing ones are skipped.

    python examples/benchmarks/bench_attacks.py [--n 1000] [--device auto] [--skip-autoattack]
"""

from __future__ import annotations

import argparse
import time
from typing import Any, Callable

import torch
from torch import nn

from attacks import evaluate, run_batched
from attacks.apgd import APGD
from attacks.foolbox_attacks import FoolboxPGD
from attacks.pgd import PGD
from certify.checkpoints import LoadedModel, ModelMetadata
from certify.data import load_dataset
from certify.defaults import DEFAULT_ATTACKS, DEFAULT_PGD_REL_STEPSIZE
from certify.device import resolve_device

SETTINGS = {"l2": 1.5, "linf": 0.1}  # ε per norm on Fashion-MNIST (undefended: PGD breaks most points)
STEPS = 100


def small_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))


def train(device: torch.device, n_train: int, epochs: int) -> nn.Module:
    data = load_dataset("fashion-mnist", split="train", limit=n_train)
    x, y = data.float_tensor().to(device), data.y.to(device)
    torch.manual_seed(0)
    net = small_cnn().to(device)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    for _ in range(epochs):
        perm = torch.randperm(len(y), device=device)
        for i in range(0, len(y), 128):
            j = perm[i:i + 128]
            loss = nn.functional.cross_entropy(net(x[j]), y[j])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


def best_of(k: int, fn: Callable[[], Any], device: torch.device) -> float:
    """Fastest of ``k`` runs (the machine may be shared)."""
    return min(timed(fn, device)[1] for _ in range(k))


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[Any, float]:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def bare_loop(net: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str, bs: int) -> None:
    """100 forward+backward passes over all points with the PGD update, no early stop, no checks."""
    alpha = DEFAULT_PGD_REL_STEPSIZE[norm] * eps
    for lo in range(0, len(y), bs):
        x0, yb = x[lo:lo + bs], y[lo:lo + bs]
        xa = x0.clone()
        for _ in range(STEPS):
            xa.requires_grad_(True)
            loss = nn.functional.cross_entropy(net(xa), yb, reduction="sum")
            g, = torch.autograd.grad(loss, xa)
            with torch.no_grad():
                if norm == "linf":
                    xa = (x0 + (xa + alpha * g.sign() - x0).clamp(-eps, eps)).clamp(0, 1)
                else:
                    g = g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
                    d = xa + alpha * g - x0
                    n = d.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
                    xa = (x0 + d * torch.clamp(eps / n.clamp_min(1e-12), max=1.0)).clamp(0, 1)


def success(net: nn.Module, x_adv: torch.Tensor, y: torch.Tensor, bs: int) -> float:
    with torch.no_grad():
        # adversarial examples may come back on the CPU (run_batched): check them on the model's device
        pred = torch.cat([net(x_adv[i:i + bs].to(y.device)).argmax(1) for i in range(0, len(y), bs)])
    return float((pred != y).float().mean())


def peers(norm: str, eps: float, device: torch.device) -> dict[str, Callable[..., torch.Tensor]]:
    """Same ε, steps and step size (ε·rel), random start on, for every library that is installed."""
    alpha = DEFAULT_PGD_REL_STEPSIZE[norm] * eps
    out: dict[str, Callable[..., torch.Tensor]] = {}

    def fool(net, x, y, bs):
        return run_batched(FoolboxPGD(steps=STEPS), net, x, y, norm=norm, eps=eps, bounds=(0, 1), seed=0,
                           batch_size=bs, device=device).x_adv
    out["foolbox"] = fool
    try:
        import torchattacks

        def ta(net, x, y, bs):
            cls = torchattacks.PGD if norm == "linf" else torchattacks.PGDL2
            atk = cls(net, eps=eps, alpha=alpha, steps=STEPS, random_start=True)
            return torch.cat([atk(x[i:i + bs], y[i:i + bs]) for i in range(0, len(y), bs)])
        out["torchattacks"] = ta
    except ImportError:
        pass
    try:
        import numpy as np
        from art.attacks.evasion import ProjectedGradientDescentPyTorch
        from art.estimators.classification import PyTorchClassifier

        def art(net, x, y, bs):
            clf = PyTorchClassifier(net, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]), nb_classes=10,
                                    clip_values=(0.0, 1.0), device_type="gpu" if device.type == "cuda" else "cpu")
            atk = ProjectedGradientDescentPyTorch(clf, norm=np.inf if norm == "linf" else 2, eps=eps, eps_step=alpha,
                                                  max_iter=STEPS, num_random_init=1, batch_size=bs, verbose=False)
            return torch.from_numpy(atk.generate(x.cpu().numpy(), y.cpu().numpy())).to(device)
        out["ART"] = art
    except ImportError:
        pass
    return out


def row(metric: str, value: str, target: str) -> None:
    """One Markdown row for ``gpu_check.sh``'s summary table."""
    print(f"| {metric} | {value} | {target} |", flush=True)


def section_bare(net, x, y, bs, device) -> None:
    print(f"\n== 1. lipcert PGD-{STEPS} vs a bare loop of {STEPS} forward+backward passes (no early stop) ==")
    print(f"{'norm':6}{'bare s':>9}{'lipcert s':>11}{'ratio':>8}{'no-early-stop s':>17}{'ratio':>8}")
    for norm, eps in SETTINGS.items():
        t_bare = best_of(2, lambda: bare_loop(net, x, y, eps, norm, bs), device)
        t_lip = best_of(2, lambda: run_batched(PGD(steps=STEPS, random_start=False), net, x, y, norm=norm, eps=eps,
                                               bounds=(0, 1), seed=0, batch_size=bs, device=device), device)
        t_nes = best_of(2, lambda: run_batched(PGD(steps=STEPS, random_start=False, early_stop=False), net, x, y,
                                               norm=norm, eps=eps, bounds=(0, 1), seed=0, batch_size=bs,
                                               device=device), device)
        print(f"{norm:6}{t_bare:9.2f}{t_lip:11.2f}{t_lip / t_bare:8.2f}{t_nes:17.2f}{t_nes / t_bare:8.2f}")
        row(f"PGD-{STEPS} / bare loop, {norm}, n={len(y)}, batch {bs}, {device.type}", f"{t_lip / t_bare:.2f}",
            "≤ 1.05 on GPU")


def timed_best(k: int, fn: Callable[[], Any], device: torch.device) -> tuple[Any, float]:
    """First run's output and the fastest of ``k`` runs (every library gets the same ``k``)."""
    out, t = timed(fn, device)
    return out, min([t] + [timed(fn, device)[1] for _ in range(k - 1)])


def section_peers(net, x, y, bs, device) -> None:
    print(f"\n== 2. PGD-{STEPS}, same ε / steps / step size, random start: lipcert vs peers (best of 2 runs each) ==")
    print(f"{'norm':6}{'library':14}{'seconds':>9}{'success':>9}{'lipcert speed-up':>18}")
    for norm, eps in SETTINGS.items():
        out, t_lip = timed_best(2, lambda: run_batched(PGD(steps=STEPS), net, x, y, norm=norm, eps=eps, bounds=(0, 1),
                                                       seed=0, batch_size=bs, device=device), device)
        ours = float(out.success.float().mean())
        print(f"{norm:6}{'lipcert':14}{t_lip:9.2f}{ours:9.1%}{'':>18}")
        fastest: tuple[float, str, float] | None = None
        for name, fn in peers(norm, eps, device).items():
            adv, t = timed_best(2, lambda: fn(net, x, y, bs), device)
            rate = success(net, adv, y, bs)
            print(f"{norm:6}{name:14}{t:9.2f}{rate:9.1%}{t / t_lip:17.1f}×")
            if fastest is None or t < fastest[0]:
                fastest = (t, name, rate)
        if fastest is not None:
            row(f"PGD-{STEPS} speed-up vs fastest peer ({fastest[1]}), {norm}, {device.type}",
                f"{fastest[0] / t_lip:.1f}× (success {ours:.1%} vs {fastest[2]:.1%})", "≥ 3× at ≥ success")
        out, t = timed_best(2, lambda: run_batched(APGD(steps=STEPS), net, x, y, norm=norm, eps=eps, bounds=(0, 1),
                                                   seed=0, batch_size=bs, device=device), device)
        print(f"{norm:6}{'lipcert APGD':14}{t:9.2f}{float(out.success.float().mean()):9.1%}"
              f"{'(own step sizes)':>18}")


def section_autoattack(loaded: LoadedModel, data, net, x, y, bs, device, seeds: list[int]) -> None:
    print(f"\n== 3. lipcert default suite {dict(DEFAULT_ATTACKS)} vs AutoAttack standard ==")
    try:
        from pyautoattack import AutoAttack
    except ImportError:
        print("pyautoattack is not installed; skipped (pip install lipcert[bench])")
        row("default suite vs AutoAttack standard", "skipped: pyautoattack not installed", "≤ +0.3 pp at ≤ 0.5×")
        return
    print(f"{'norm':6}{'ε':>6}{'lipcert robust':>16}{'AA robust':>11}{'Δ pp':>7}{'lipcert s':>11}{'AA s':>8}{'time ratio':>12}")
    others: dict[str, list[float]] = {}
    for norm, eps in SETTINGS.items():
        rep, t_lip = timed(lambda: evaluate(loaded, data, norm=norm, eps=[eps], certify_first=False,
                                            min_distance=False, batch_size=bs, device=device, seed=seeds[0]), device)
        others[norm] = [evaluate(loaded, data, norm=norm, eps=[eps], certify_first=False, min_distance=False,
                                 batch_size=bs, device=device, seed=s).worst_case[0].robust_accuracy
                        for s in seeds[1:]]
        aa = AutoAttack(net, norm="L2" if norm == "l2" else "Linf", eps=eps, version="standard", device=device, seed=0)
        aa.verbose = False
        (adv, _), t_aa = timed(lambda: aa.run_standard_evaluation(x, y, batch_size=bs), device)
        r_aa = 1.0 - success(net, adv, y, bs)
        r_lip = rep.worst_case[0].robust_accuracy
        print(f"{norm:6}{eps:6g}{r_lip:16.2%}{r_aa:11.2%}{100 * (r_lip - r_aa):7.2f}{t_lip:11.2f}{t_aa:8.2f}"
              f"{t_lip / t_aa:12.2f}")
        row(f"default suite vs AutoAttack standard, {norm} ε={eps:g}, {device.type}",
            f"Δ {100 * (r_lip - r_aa):+.2f} pp, time {t_lip / t_aa:.2f}×", "≤ +0.3 pp at ≤ 0.5×")
        if others[norm]:
            all_r = [r_lip, *others[norm]]
            print(f"{'':12}lipcert robust over seeds {','.join(map(str, seeds))}: "
                  + " / ".join(f"{r:.2%}" for r in all_r)
                  + f"  (mean Δ {100 * (sum(all_r) / len(all_r) - r_aa):+.2f} pp; AutoAttack run once, seed 0)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="test points attacked")
    ap.add_argument("--n-train", type=int, default=10000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=250)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--skip-autoattack", action="store_true")
    ap.add_argument("--sections", default="1,2,3", help="which sections to run, e.g. 1,2")
    ap.add_argument("--suite-seeds", default="0,1,2", help="seeds of the lipcert suite runs in section 3 (first is timed)")
    args = ap.parse_args()
    device = resolve_device(args.device)
    net, t_train = timed(lambda: train(device, args.n_train, args.epochs), device)
    data = load_dataset("fashion-mnist", split="test", limit=args.n)
    x, y = data.float_tensor().to(device), data.y.to(device)
    clean = 1.0 - success(net, x, y, args.batch_size)
    print(f"device {device} · torch threads {torch.get_num_threads()} · CNN trained in {t_train:.0f}s · "
          f"clean accuracy {clean:.1%} on {args.n} Fashion-MNIST test points · ε {SETTINGS}")
    loaded = LoadedModel(net, "module", "<bench cnn>", "-", ModelMetadata(input_shape=(1, 28, 28), num_classes=10))
    with torch.no_grad():  # warm-up
        net(x[:args.batch_size])
    sections = {s.strip() for s in args.sections.split(",")}
    if "1" in sections:
        section_bare(net, x, y, args.batch_size, device)
    if "2" in sections:
        section_peers(net, x, y, args.batch_size, device)
    if "3" in sections and not args.skip_autoattack:
        section_autoattack(loaded, data, net, x, y, args.batch_size, device,
                           [int(s) for s in args.suite_seeds.split(",")])


if __name__ == "__main__":
    main()
