"""Certify 1-Lipschitz models on real Fashion-MNIST test images and check against an
independent float64 numpy computation (with models written here
by plain torch code rather than lipcert's own layers)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from certify.cli import main
from certify.data import load_dataset

from .conftest import Affine, need_fmnist

N = 2000


def class_means(root) -> torch.Tensor:
    train = load_dataset(root, split="train", limit=20000)
    x = train.float_tensor().flatten(1)
    return torch.stack([x[train.y == k].mean(0) for k in range(10)])


class LinfPrototypes(nn.Module):
    """y_k = -‖x − m_k‖_∞: plain aten ops (sub, abs, amax, neg), 1-Lipschitz ℓ∞→ℓ∞."""

    def __init__(self, protos: torch.Tensor):
        super().__init__()
        self.register_buffer("protos", protos)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = (x.flatten(1).unsqueeze(1) - self.protos.unsqueeze(0)).abs().amax(dim=2)
        return -d


def independent(logits: np.ndarray, y: np.ndarray, eps: float, divisor: float) -> int:
    top = np.sort(logits, axis=1)
    gap = top[:, -1] - top[:, -2]
    correct = logits.argmax(1) == y
    return int((correct & (gap / divisor > eps)).sum())


@pytest.fixture(scope="module")
def fmnist():
    root = need_fmnist()
    test = load_dataset(root, limit=N)
    return root, class_means(root), test.float_tensor().flatten(1).double().numpy(), test.y.numpy()


@pytest.mark.parametrize("fmt", ["torch.export", "torchscript"])
def test_unit_row_linear_model_matches_independent_computation(tmp_path, fmnist, fmt):
    root, means, x, y = fmnist
    w = means / means.norm(dim=1, keepdim=True)  # every logit 1-Lipschitz in L2
    module = Affine(w).eval()
    path = tmp_path / "m.bin"
    ex = torch.zeros(2, 1, 28, 28)
    if fmt == "torch.export":
        torch.export.save(torch.export.export(module, (ex,), dynamic_shapes=({0: torch.export.Dim("b")},)), path)
    else:
        torch.jit.save(torch.jit.trace(module, ex), path)
    out = tmp_path / "out.json"
    res = CliRunner().invoke(main, ["certify", str(path), "--data", str(root), "--limit", str(N), "--norm", "l2",
                                    "--eps", "0.1", "--eps", "0.3", "--certificate", "l2-multi",
                                    "--json", str(out), "-q"])
    assert res.exit_code == 0, res.stderr
    report = json.loads(out.read_text())
    assert report["lipschitz_verified"] is True  # the analyser proves every logit 1-Lipschitz
    logits = x @ w.double().numpy().T
    assert report["clean_accuracy"] == pytest.approx(float((logits.argmax(1) == y).mean()), abs=1 / N)
    assert report["clean_accuracy"] > 0.5
    for r in report["results"]:
        # sound: never above the exact count; the floating-point allowance (docs/soundness.md) costs
        # less than 0.01 of radius here, so never below the exact count at ε + 0.01
        exact, slack = independent(logits, y, r["eps"], 2.0), independent(logits, y, r["eps"] + 0.01, 2.0)
        assert slack - 1 <= r["certified_count"] <= exact + 1
    assert report["results"][0]["certified_count"] > 0


def test_linf_prototype_net_matches_independent_computation(tmp_path, fmnist):
    root, means, x, y = fmnist
    module = LinfPrototypes(means).eval()
    path = tmp_path / "linf.pt2"
    ex = torch.zeros(2, 1, 28, 28)
    torch.export.save(torch.export.export(module, (ex,), dynamic_shapes=({0: torch.export.Dim("b")},)), path)
    res = CliRunner().invoke(main, ["certify", str(path), "--data", str(root), "--limit", str(N), "--norm", "linf",
                                    "--eps", "0.01", "--eps", "0.03", "--certificate", "linf-dist",
                                    "--json", "-", "-q"])
    assert res.exit_code == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["lipschitz_verified"] is True
    logits = -np.abs(x[:, None, :] - means.double().numpy()[None]).max(axis=2)
    for r in report["results"]:
        assert abs(r["certified_count"] - independent(logits, y, r["eps"], 2.0)) <= 1
    assert report["results"][0]["certified_count"] > 0
