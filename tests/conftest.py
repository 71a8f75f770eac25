"""Shared fixtures: tiny models with hand-checkable logits, saved in tmp dirs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

from certify import LipschitzClaim, ModelMetadata, save_model

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
MNIST_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"

os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def _lipschitz_cache_off(tmp_path_factory: pytest.TempPathFactory):
    """The on-disk Lipschitz cache is off (also for CLI subprocesses, which inherit the environment):
    a signed entry is trusted, so a test that changes a certificate setting must not be answered by
    another test's entry.  Its signing key goes to a temporary directory, never to $HOME.  The cache's
    own tests turn it on in a tmp_path."""
    names = ("LIPCERT_CACHE_DIR", "XDG_CONFIG_HOME", "LIPCERT_CACHE_KEY")
    old = {n: os.environ.get(n) for n in names}
    os.environ["LIPCERT_CACHE_DIR"] = "off"
    os.environ["XDG_CONFIG_HOME"] = str(tmp_path_factory.mktemp("lipcert-config"))
    os.environ.pop("LIPCERT_CACHE_KEY", None)
    yield
    for n, v in old.items():
        if v is None:
            os.environ.pop(n, None)
        else:
            os.environ[n] = v


def need_fmnist() -> Path:
    if not (FMNIST_DIR / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST not installed (apt-get install -y dataset-fashion-mnist)")
    return FMNIST_DIR


class Tiny(nn.Module):
    """A 4 → ``classes`` Linear; its state_dicts stand in for user checkpoints (named by module path,
    e.g. ``tests.test_errors:Tiny``, in the error and security cases)."""

    def __init__(self, classes: int = 3):
        super().__init__()
        self.lin = nn.Linear(4, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x.flatten(1))


class Affine(nn.Module):
    """y = W·flatten(x) + b: logits we can compute by hand."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None):
        super().__init__()
        self.lin = nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            self.lin.weight.copy_(weight)
            self.lin.bias.copy_(bias if bias is not None else torch.zeros(weight.shape[0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x.flatten(1))


def unit_row_model(in_dim: int = 4, classes: int = 3, seed: int = 0) -> Affine:
    """Each logit is exactly 1-Lipschitz in L2 (unit-norm rows)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(classes, in_dim, generator=g)
    return Affine(w / w.norm(dim=1, keepdim=True))


@pytest.fixture
def save_tiny(tmp_path: Path):
    """save_tiny(module, shape, claim=..., fmt=...) → path of a saved checkpoint."""

    def _save(module: nn.Module, shape: tuple[int, ...], claim: LipschitzClaim | None = None,
              fmt: str = "torch.export", name: str = "model.pt2", **meta) -> Path:
        metadata = ModelMetadata(input_shape=shape, lipschitz=claim, **meta)
        path = tmp_path / name
        save_model(module, path, metadata, format=fmt, example_input=torch.zeros(2, *shape))
        return path

    return _save


@pytest.fixture
def tiny_data(tmp_path: Path):
    """An .npz dataset of shape (n, 1, 2, 2) with labels in [0, classes)."""

    def _make(x: torch.Tensor, y: torch.Tensor, name: str = "data.npz") -> Path:
        import numpy as np

        path = tmp_path / name
        np.savez(path, x=x.numpy(), y=y.numpy())
        return path

    return _make


@pytest.fixture
def one_thread():
    """Small float64 matmuls are ~1000× slower with two threads on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
