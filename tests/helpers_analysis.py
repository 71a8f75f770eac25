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
