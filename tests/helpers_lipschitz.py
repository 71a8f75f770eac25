"""Tiny models and datasets for the Lipschitz tests (no conftest edits)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from certify.checkpoints import LoadedModel, ModelMetadata, load_model, save_model


def loaded(module: nn.Module, shape: tuple[int, ...], **meta) -> LoadedModel:  # type: ignore[no-untyped-def]
    module.eval()
    return LoadedModel(module=module, format="nn.Module", path="<memory>", sha256="0",
                       metadata=ModelMetadata(input_shape=shape, **meta))


def saved(module: nn.Module, shape: tuple[int, ...], path, **meta) -> LoadedModel:  # type: ignore[no-untyped-def]
    module.eval()
    save_model(module, path, ModelMetadata(input_shape=shape, **meta), example_input=torch.rand((2,) + shape))
    return load_model(path)


def orthogonal_mlp(d: int = 16, hidden: int = 16, k: int = 4, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    l1, l2, out = nn.Linear(d, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, k)
    with torch.no_grad():
        for lin in (l1, l2):
            q, _ = torch.linalg.qr(torch.randn(max(lin.weight.shape), max(lin.weight.shape), generator=g,
                                               dtype=torch.float64))
            lin.weight.copy_(q[: lin.weight.shape[0], : lin.weight.shape[1]])
        w = torch.randn(k, hidden, generator=g)
        out.weight.copy_(w / w.norm(dim=1, keepdim=True))
    return nn.Sequential(nn.Flatten(), l1, nn.ReLU(), l2, nn.ReLU(), out)


def small_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 8, 3), nn.ReLU(),
                         nn.Flatten(), nn.Linear(8 * 2 * 2, 3))


class LinfDist(nn.Module):
    """ℓ∞-distance neurons written with plain aten ops: u = ‖z − w‖∞ + b."""

    def __init__(self, d: int, widths: tuple[int, ...], seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        dims = (d,) + widths
        self.ws = nn.ParameterList([nn.Parameter(torch.randn(o, i, generator=g)) for i, o in zip(dims, dims[1:])])
        self.bs = nn.ParameterList([nn.Parameter(torch.randn(o, generator=g)) for o in widths])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x.flatten(1)
        for w, b in zip(self.ws, self.bs):
            z = (z.unsqueeze(1) - w).abs().amax(dim=-1) + b
        return -z


def npz_data(path, shape: tuple[int, ...], n: int = 32, k: int = 3, seed: int = 0) -> str:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    np.savez(path, x=rng.random((n,) + shape).astype(np.float32), y=rng.integers(0, k, n))
    return str(path)
