"""Tiny models and data for the attack tests (no conftest: imported explicitly)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from certify.checkpoints import LipschitzClaim, LoadedModel, ModelMetadata, load_model, save_model
from certify.data import Dataset

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


def orthonormal_rows(rows: int, cols: int, gen: torch.Generator) -> torch.Tensor:
    """A rows×cols matrix with all singular values 1: orthonormal rows when rows ≤ cols, else columns."""
    q, _ = torch.linalg.qr(torch.randn(max(rows, cols), min(rows, cols), generator=gen, dtype=torch.float64))
    return (q.T if rows <= cols else q).contiguous().to(torch.float32)


def lipschitz_mlp(d_in: int, hidden: int, classes: int, seed: int = 0, scale: float = 1.0) -> nn.Module:
    """Flatten → Linear(orthonormal rows) → ReLU → Linear(orthonormal rows): 1-Lipschitz L2→L2 by construction.

    Biases are free (they do not change the Lipschitz constant).
    """
    gen = torch.Generator().manual_seed(seed)
    l1, l2 = nn.Linear(d_in, hidden), nn.Linear(hidden, classes)
    with torch.no_grad():
        l1.weight.copy_(orthonormal_rows(hidden, d_in, gen))
        l2.weight.copy_(orthonormal_rows(classes, hidden, gen) * scale)
        l1.bias.copy_(torch.randn(hidden, generator=gen) * 0.1)
        l2.bias.copy_(torch.randn(classes, generator=gen) * 0.1)
    return nn.Sequential(nn.Flatten(), l1, nn.ReLU(), l2).eval()


def loaded(module: nn.Module, path: Path, input_shape: tuple[int, ...], claim: LipschitzClaim | None = None,
           num_classes: int | None = None) -> LoadedModel:
    meta = ModelMetadata(input_shape=input_shape, lipschitz=claim, num_classes=num_classes)
    save_model(module, path, meta, format="torch.export", example_input=torch.zeros(2, *input_shape))
    return load_model(path)


def blob_data(n: int = 64, shape: tuple[int, ...] = (1, 4, 4), classes: int = 3, seed: int = 0) -> Dataset:
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, *shape, generator=gen)
    y = torch.randint(0, classes, (n,), generator=gen)
    return Dataset(x, y, "blobs", "test")


def fit(module: nn.Module, data: Dataset, steps: int = 300, lr: float = 1e-2, seed: int = 0) -> nn.Module:
    """A few hundred Adam steps on ``data`` (for tests: a quickly trained, undefended model)."""
    torch.manual_seed(seed)
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    x, y = data.as_float(data.x), data.y
    module.train()
    for i in range(steps):
        j = torch.randint(0, len(y), (128,))
        loss = nn.functional.cross_entropy(module(x[j]), y[j])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return module.eval()


def small_cnn(classes: int = 10) -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1),
                         nn.ReLU(), nn.Flatten(), nn.Linear(16 * 7 * 7, 64), nn.ReLU(), nn.Linear(64, classes))
