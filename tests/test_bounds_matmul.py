"""Bound propagation through ``x @ W`` (aten.matmul / aten.mm): the form ONNX MatMul and Gemm convert to,
so converted ONNX models get bound certificates; and the argument-position rule that refuses a network
value anywhere but where a rule reads it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from certify.bounds import BoundSettings, UnverifiableOpError, certified_radii, margin_bounds, network_from_module
from certify.bounds.radius import specification
from certify.threat import Norm
from tests.test_bounds import _samples

pytestmark = pytest.mark.usefixtures("one_thread")
SHAPE = (1, 4, 4)


class MatmulMLP(nn.Module):
    """relu(x W1 + b1) W2 + b2 with plain parameters and ``@``, and the same net as nn.Linear layers."""

    def __init__(self, seed: int, mm: bool = False) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w1 = nn.Parameter(torch.randn(16, 12, generator=g) / 4)
        self.b1 = nn.Parameter(torch.randn(12, generator=g) / 4)
        self.w2 = nn.Parameter(torch.randn(12, 5, generator=g) / 3)
        self.b2 = nn.Parameter(torch.randn(5, generator=g) / 4)
        self.mm = mm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1)
        h = torch.relu((torch.mm(h, self.w1) if self.mm else h @ self.w1) + self.b1)
        return h @ self.w2 + self.b2

    def as_linear(self) -> nn.Module:
        l1, l2 = nn.Linear(16, 12), nn.Linear(12, 5)
        with torch.no_grad():
            l1.weight.copy_(self.w1.T), l1.bias.copy_(self.b1), l2.weight.copy_(self.w2.T), l2.bias.copy_(self.b2)
        return nn.Sequential(nn.Flatten(), l1, nn.ReLU(), l2).eval()


@pytest.mark.parametrize("mm", [False, True], ids=["matmul", "mm"])
@pytest.mark.parametrize("norm", [Norm.LINF, Norm.L2], ids=str)
@pytest.mark.parametrize("method", ["ibp", "crown", "alpha-crown"])
def test_matmul_bounds_hold_on_samples_and_equal_the_linear_form(mm: bool, norm: Norm, method: str) -> None:
    model = MatmulMLP(1, mm).eval()
    net = network_from_module(model, SHAPE)
    ref = network_from_module(model.as_linear(), SHAPE)
    gen = torch.Generator().manual_seed(2)
    x0 = torch.rand(6, *SHAPE, generator=gen, dtype=torch.float64)
    pred = model(x0.float()).argmax(1)
    eps = torch.full((6,), 0.05 if norm is Norm.LINF else 0.2, dtype=torch.float64)
    s = BoundSettings(method=method, norm=norm, lo=0.0, hi=1.0, alpha_steps=5)
    low = margin_bounds(net, x0, pred, eps, s)
    # equal up to the float-forward allowance of the separate bias add (x @ W + b is two rounded ops)
    assert torch.allclose(low, margin_bounds(ref, x0, pred, eps, s), rtol=0, atol=1e-3)
    pts = _samples(x0, eps, norm, 10_000, gen)
    spec = specification(pred, 5)
    with torch.no_grad():
        y = model(pts.flatten(0, 1).float()).double().view(10_000, 6, 5)
    margins = torch.einsum("bsk,nbk->nbs", spec, y)
    assert (margins >= low.unsqueeze(0)).all()


def test_a_converted_onnx_model_gets_the_torch_model_s_crown_radii(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    from certify.checkpoints import load_model
    from tests.test_onnx import export

    torch.manual_seed(3)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 5)).eval()
    loaded = load_model(export(model, SHAPE, tmp_path / "m.onnx"))
    net = network_from_module(loaded.module, SHAPE)
    assert [getattr(layer, "op", "") for layer in net.layers].count("aten.matmul") == 2  # Gemm → x @ Wᵀ + b
    x0 = torch.rand(8, *SHAPE, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    pred = model(x0.float()).argmax(1)
    s = BoundSettings(method="crown", norm=Norm.LINF, lo=0.0, hi=1.0)
    ours = certified_radii(net, x0, pred, s)
    torch_r = certified_radii(network_from_module(model, SHAPE), x0, pred, s)
    step = 1.0 / 2 ** s.iterations
    assert (ours > 0).any() and ((ours - torch_r).abs() <= step).all()


class RowsTimesW(nn.Module):
    """(B, 4, 4) @ W (4, 3): the constant multiplies every row of the value (matmul over the last dim)."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(5)
        self.w = nn.Parameter(torch.randn(4, 3, generator=g))
        self.w2 = nn.Parameter(torch.randn(12, 4, generator=g) / 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu((x.view(x.shape[0], 4, 4) @ self.w).flatten(1) - 0.1) @ self.w2


@pytest.mark.parametrize("norm", [Norm.LINF, Norm.L2], ids=str)
def test_matmul_over_the_last_dimension_of_a_3d_value_is_sound(norm: Norm) -> None:
    model = RowsTimesW().eval()
    net = network_from_module(model, SHAPE)
    gen = torch.Generator().manual_seed(6)
    x0 = torch.rand(5, *SHAPE, generator=gen, dtype=torch.float64)
    pred = model(x0.float()).argmax(1)
    eps = torch.full((5,), 0.05 if norm is Norm.LINF else 0.2, dtype=torch.float64)
    for method in ("crown", "alpha-crown"):
        low = margin_bounds(net, x0, pred, eps, BoundSettings(method=method, norm=norm, lo=0.0, hi=1.0, alpha_steps=5))
        pts = _samples(x0, eps, norm, 10_000, gen)
        with torch.no_grad():
            y = model(pts.flatten(0, 1).float()).double().view(10_000, 5, 4)
        assert (torch.einsum("bsk,nbk->nbs", specification(pred, 4), y) >= low.unsqueeze(0)).all()


class ConstantLeft(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(3, 4))
        self.out = nn.Linear(12, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out((self.w @ x.view(x.shape[0], 4, 4)).flatten(1))


class TwoValues(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1)
        return h[:, :4] @ h[:, 4:8].view(-1, 4, 1).squeeze(2).unsqueeze(1).transpose(1, 2).squeeze(2).view(-1, 4)[:1].T


@pytest.mark.parametrize("module, needle", [(ConstantLeft(), "other than its first"),
                                            (TwoValues(), "unverifiable")])
def test_a_network_value_in_the_wrong_place_is_refused(module: nn.Module, needle: str) -> None:
    with pytest.raises(UnverifiableOpError, match=needle):
        network_from_module(module.eval(), SHAPE)
