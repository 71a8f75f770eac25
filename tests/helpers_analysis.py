"""Shared helpers for the analysis/report/suite/gate tests: a tiny trained model on demo data."""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from torch import nn

from certify import LipschitzClaim, ModelMetadata, load_dataset, save_model


@functools.lru_cache(maxsize=None)
def trained_linear_state() -> dict[str, torch.Tensor]:
    """A linear classifier fit on the first 500 demo images (deterministic, < 1 s)."""
    torch.manual_seed(0)
    data = load_dataset("demo", limit=500)
    x, y = data.float_tensor().flatten(1), data.y
    model = nn.Linear(784, 10)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(60):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def make_model(path: Path, *, noise: float = 0.0, seed: int = 1) -> Path:
    """Save a Flatten→Linear model with a declared (true) per-logit L2 Lipschitz constant.

    ``noise`` > 0 perturbs the weights (a degraded copy).
    """
    linear = nn.Linear(784, 10)
    state = trained_linear_state()
    if noise:
        g = torch.Generator().manual_seed(seed)
        state = {k: v + noise * v.std() * torch.randn(v.shape, generator=g) for k, v in state.items()}
    linear.load_state_dict(state)
    module = nn.Sequential(nn.Flatten(), linear).eval()
    constant = float(linear.weight.detach().norm(dim=1).max()) * 1.0001
    meta = ModelMetadata(input_shape=(1, 28, 28), dataset="demo", num_classes=10,
                         lipschitz=LipschitzClaim(norm="l2", kind="per-logit", constant=constant))
    return save_model(module, path, meta, format="torch.export", example_input=torch.zeros(2, 1, 28, 28))


def fake_attack_json(cert: dict, *, attack: str = "L2PGD", factor: float = 1.6, unbroken_every: int = 7) -> dict:
    """An attack JSON (the issue-5 contract) consistent with ``cert``: every d(x) ≥ radius (sound).

    d(x) = factor·radius + 0.05 for correct points, 0 for clean errors, null (none found) for
    every ``unbroken_every``-th point.
    """
    pe = cert["per_example"]
    dist = []
    for i, (y, p, r) in enumerate(zip(pe["label"], pe["prediction"], pe["radius"])):
        dist.append(0.0 if y != p else (None if i % unbroken_every == 0 else factor * (r or 0.0) + 0.05))
    n = len(dist)
    results, scaling = [], []
    for eps in (e["eps"] for e in cert["results"]):
        for steps, restarts in ((10, 1), (100, 1), (100, 5)):
            broken = sum(1 for d in dist if d is not None and d <= eps * (0.8 if steps == 10 else 1.0))
            row = {"attack": attack, "eps": eps, "steps": steps, "restarts": restarts,
                   "robust_accuracy": 1 - broken / n, "seconds": 0.1}
            results.append(row)
            scaling.append({k: row[k] for k in ("attack", "steps", "restarts", "eps", "robust_accuracy")})
    return {
        "lipcert_version": "0.1.0", "schema_version": 1, "command": "attack", "created": "2026-01-01T00:00:00+00:00",
        "argv": [], "model": cert["model"], "data": cert["data"], "norm": cert["norm"],
        "eps": [e["eps"] for e in cert["results"]], "clean_accuracy": cert["clean_accuracy"],
        "results": results, "worst_case": [], "certified_skipped": {}, "violations": [],
        "iteration_scaling": scaling, "flags": [{"id": "zero-gradients", "message": "3% of points had zero gradients"}],
        "partial": False, "seed": 0,
        "per_example": {**pe, "min_adv_distance": dist, "min_adv_attack": [attack] * n},
    }


def fake_lipschitz_json(bound: float = 1.0) -> dict:
    return {"norm": "l2", "verified": True, "unverifiable_ops": [], "global_bound": bound,
            "per_logit_bounds": [bound] * 10,
            "layers": [{"name": "1", "op": "linear", "bound": bound, "estimate": 0.9 * bound}], "empirical": {}}


def combined_from(cert: dict, attack: dict | None = None, lipschitz: dict | None = None, name: str | None = None) -> dict:
    """Combined results with analysis, built only from JSON (what lipcert report does)."""
    from certify.evaluation.pipeline import ensure_analysis
    from certify.results import combined_json

    res = combined_json(command="analyze", seed=0, model=cert["model"], data=cert["data"], certify=cert,
                        attack=attack, lipschitz=lipschitz, name=name)
    return ensure_analysis(res)
