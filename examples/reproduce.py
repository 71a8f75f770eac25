"""Reproduction figures for the shipped models against the papers ([L2NNN], [LINF-DIST], [WCAT]).

    python examples/reproduce.py [--limit 10000] [--models-dir examples/models]

* ℓ∞-dist Net on Fashion-MNIST at ε = 0.1: clean / PGD-20 (step 0.01) / certified,
  beside [LINF-DIST]'s 87.46 / 75.44 / 73.23.
* multi-L2NNN on Fashion-MNIST: clean accuracy, mean gap, certified accuracy at L2
  ε ∈ {0.5, 1.0, 1.5}, beside the ordinary and the PGD-trained CNN (no certificate:
  PGD-20 L2 robust accuracy instead, an upper bound on what any certificate could give).
"""

from __future__ import annotations

import click
import torch
from rich.console import Console
from rich.table import Table

from certify.certificates import certify
from certify.checkpoints import load_model
from certify.data import load_dataset
from certify.evaluation.demo import default_models_dir
from certify.reporting.strings import pct
from certify.zoo.training import pgd

L2_EPS = (0.5, 1.0, 1.5)


def pgd_accuracy(model, data, norm: str, eps: float, steps: int, step: float, batch: int = 500) -> float:  # type: ignore[no-untyped-def]
    robust = 0
    for _, x, y in data.batches(batch):
        adv = pgd(model.module, x, y, norm=norm, eps=eps, steps=steps, step_size=step)
        with torch.no_grad():
            robust += int(((model(adv).argmax(1) == y) & (model(x).argmax(1) == y)).sum())
    return robust / len(data)


@click.command()
@click.option("--limit", type=int, default=10000, show_default=True)
@click.option("--models-dir", default=str(default_models_dir()), show_default=True)
@click.option("--threads", type=int, default=2, show_default=True)
def main(limit: int, models_dir: str, threads: int) -> None:
    torch.set_num_threads(threads)
    data = load_dataset("fashion-mnist", limit=limit)
    console = Console(width=180)
    linf = load_model(f"{models_dir}/fmnist_linf_dist.pt2")
    rep = certify(linf, data, norm="linf", eps=[0.1])
    t = Table(title=f"ℓ∞-dist Net, Fashion-MNIST test n={len(data)}, ε = 0.1 (ℓ∞)")
    for c in ("", "clean", "PGD-20 (step 0.01)", "certified"):
        t.add_column(c, justify="right")
    t.add_row("[LINF-DIST] paper", "87.46%", "75.44%", "73.23%")
    t.add_row("shipped (CPU config)", pct(rep.clean_accuracy), pct(pgd_accuracy(linf, data, "linf", 0.1, 20, 0.01)),
              pct(rep.results[0].certified_accuracy))
    console.print(t)
    t = Table(title=f"L2 robustness, Fashion-MNIST test n={len(data)}")
    for c in ("model", "clean", "mean gap", *[f"certified ℓ₂ {e:g}" for e in L2_EPS],
              *[f"PGD-20 ℓ₂ {e:g}" for e in L2_EPS]):
        t.add_column(c, justify="right")
    for name in ("fmnist_l2nnn", "fmnist_baseline", "fmnist_baseline_adv"):
        m = load_model(f"{models_dir}/{name}.pt2")
        rep = certify(m, data, norm="l2", eps=L2_EPS, certificate="l2-multi" if m.metadata.lipschitz else "auto") \
            if m.metadata.lipschitz else None
        gap = rep.mean_gap if rep else _mean_gap(m, data)
        clean = rep.clean_accuracy if rep else _clean(m, data)
        certs = [pct(r.certified_accuracy) for r in rep.results] if rep else ["—"] * len(L2_EPS)
        attacks = [pct(pgd_accuracy(m, data, "l2", e, 20, 2.5 * e / 20)) for e in L2_EPS]
        t.add_row(name, pct(clean), f"{gap:.3f}", *certs, *attacks)
    console.print(t)


@torch.no_grad()
def _logits(m, data):  # type: ignore[no-untyped-def]
    return torch.cat([m(x) for _, x, _ in data.batches(1000)])


def _mean_gap(m, data) -> float:  # type: ignore[no-untyped-def]
    top2 = _logits(m, data).double().topk(2, dim=1).values
    return float((top2[:, 0] - top2[:, 1]).mean())


def _clean(m, data) -> float:  # type: ignore[no-untyped-def]
    return float((_logits(m, data).argmax(1) == data.y).float().mean())


if __name__ == "__main__":
    main()
