"""Tightness table: certified accuracy from IBP, CROWN, α-CROWN and ``auto`` beside PGD robust accuracy,
and the open share (neither certified nor broken), on a normally trained Fashion-MNIST 3×256 ReLU MLP at
ℓ∞ ε = 0.01, 0.02, 0.03.  ``examples/bounds_tightness.cpu.txt`` records a run.

``auto`` is :func:`certify.certify` with ``certificate="auto"``: the Lipschitz certificate (pairwise bounds
from the weights), then CROWN and α-CROWN within ``--certificate-budget`` (``docs/certificates.md``).

    python examples/bounds_tightness.py [--data /usr/share/datasets/fashion-mnist] [--n 200] [--epochs 3]
                                        [--budget 30s]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bounds_mlp import EPS, pgd_broken, train  # noqa: E402  (the training and attack of examples/bounds_mlp.py)

from certify.certificates import certify, plan_certificate  # noqa: E402
from certify.certificates.auto_plan import method_names  # noqa: E402
from certify.checkpoints import LoadedModel, ModelMetadata  # noqa: E402
from certify.data import load_dataset  # noqa: E402

METHODS = ("ibp", "crown", "alpha-crown", "auto")


def narrow(plan):  # type: ignore[no-untyped-def]
    """The plan with its bisection on [0, 1/16] in 8 steps (resolution 2.4e-4, enough for ε ≤ 0.03), as
    examples/bounds_mlp.py bisects, instead of the CLI's [0, 1] in 14 steps: the same bounds, fewer passes."""
    def fit(bp):  # type: ignore[no-untyped-def]
        return replace(bp, settings=replace(bp.settings, eps_max=0.0625, iterations=8))
    if getattr(plan, "bounds", None) is not None:
        return replace(plan, bounds=fit(plan.bounds))
    return fit(plan) if hasattr(plan, "settings") else plan


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--budget", default="30s", help="auto's --certificate-budget")
    args = ap.parse_args()
    torch.set_num_threads(1)  # small float64 products: threads only contend on a shared machine
    train_set = load_dataset("fashion-mnist", split="train", data_root=args.data)
    test = load_dataset("fashion-mnist", split="test", data_root=args.data).subset(range(args.n))
    t = time.perf_counter()
    module = train(train_set, args.epochs)
    print(f"trained a 3×256 ReLU MLP for {args.epochs} epochs in {time.perf_counter() - t:.0f} s")
    model = LoadedModel(module=module, format="nn.Module", path="<memory>", sha256="0",
                        metadata=ModelMetadata(input_shape=(1, 28, 28)))
    reports = {}
    for m in METHODS:
        t = time.perf_counter()
        plan = narrow(plan_certificate(model, norm="linf", certificate=m, input_dim=784, input_shape=(1, 28, 28),
                                       certificate_budget=args.budget if m == "auto" else None))
        reports[m] = certify(model, test, norm="linf", eps=list(EPS), certificate=m, batch_size=50, plan=plan,
                             certificate_budget=args.budget if m == "auto" else None)
        print(f"{m}: {time.perf_counter() - t:.1f} s")
    auto = reports["auto"]
    print(f"auto: {auto.plan.reason.split(';')[0]}; budget {auto.plan.budget.as_dict()}")
    print(f"clean accuracy {auto.clean_accuracy:.3f} on {args.n} test points")
    x, y = test.as_float(test.x), test.y
    print("| ε | IBP | CROWN | α-CROWN | auto | auto by method | PGD robust | open (auto vs PGD) |")
    print("|---|---|---|---|---|---|---|---|")
    for eps in EPS:
        cert = {m: r.examples.certified(eps) for m, r in reports.items()}
        broken = pgd_broken(module, x, y, eps).numpy()
        if (cert["auto"] & broken).any():
            raise SystemExit("an attack broke a certified point: a bug")
        names = np.array(method_names(auto.examples.radius_method), dtype=object)[cert["auto"]].tolist()
        by = ", ".join(f"{k} {names.count(k)}" for k in sorted(set(names))) or "—"
        cells = " | ".join(f"{cert[m].mean():.1%}" for m in METHODS)
        print(f"| {eps} | {cells} | {by} | {(~broken).mean():.1%} | {(~cert['auto'] & ~broken).mean():.1%} |")


if __name__ == "__main__":
    main()
