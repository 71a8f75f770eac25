"""Bound propagation on DAGs (residual sums, differences, concatenations, values with several consumers)
and max pooling: sampled points of each input set stay inside every method's bounds, α-CROWN is never
below CROWN, and unsupported variants are refused by name."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from certify.bounds import BoundSettings, InputSet, UnverifiableOpError, margin_bounds, network_from_module
from certify.bounds.alpha import alpha_bounds
from certify.bounds.crown import ibp_spec_bounds, layer_boxes, spec_bounds
from certify.bounds.fperror import model_error, spec_error
from certify.bounds.ibp import ibp_bounds
from certify.bounds.layers import Concat, Sum
from certify.bounds.pooling import MaxPool
from certify.bounds.radius import specification
from certify.threat import Norm
from tests.test_bounds import _randomise_bn, _samples

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPE = (1, 6, 6)


class ResBlock(nn.Module):
    """relu(x + bn(conv(relu(bn(conv(x))))))."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(),
                                  nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.body(x))


class TwoBranches(nn.Module):
    """cat and difference of two branches of one stem; the stem's value is read by four layers."""

    def __init__(self, join: str) -> None:
        super().__init__()
        self.join = join
        self.stem = nn.Conv2d(1, 2, 3, padding=1)
        self.a, self.b = nn.Conv2d(2, 2, 3, padding=1), nn.Conv2d(2, 2, 1)
        self.head = nn.Linear((4 if join == "cat" else 2) * 36, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.relu(self.stem(x))
        a, b = torch.relu(self.a(s)), nn.functional.leaky_relu(self.b(s), 0.1)
        if self.join == "cat":
            y = torch.cat([a, b], dim=1)
        elif self.join == "sub":
            y = a - b + s
        else:  # a value read twice by one sum, and a + α·b
            y = torch.add(s + s, a, alpha=0.5)
        return self.head(y.flatten(1))


class FeatureCat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(36, 8), nn.Linear(36, 5), nn.Linear(13, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        return self.c(torch.relu(torch.cat([self.a(x), self.b(x)], dim=-1)))


NETS = {
    "resblock-maxpool": lambda: nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), ResBlock(3), nn.MaxPool2d(2),
                                              nn.Flatten(), nn.Linear(27, 3)),
    "concat-channels": lambda: TwoBranches("cat"),
    "sub-branches": lambda: TwoBranches("sub"),
    "double-read-alpha": lambda: TwoBranches("alpha"),
    "concat-features": FeatureCat,
    "maxpool-overlap-padding": lambda: nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(),
                                                     nn.MaxPool2d(3, stride=2, padding=1), nn.Flatten(),
                                                     nn.Linear(18, 3)),
    "maxpool-first": lambda: nn.Sequential(nn.MaxPool2d(2, stride=1), nn.Conv2d(1, 2, 2), nn.ReLU(), nn.Flatten(),
                                           nn.Linear(32, 3)),
}


def _net(name: str, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return _randomise_bn(NETS[name](), torch.Generator().manual_seed(seed))


def test_the_graphs_are_read_as_dags_and_match_the_model() -> None:
    kinds = {name: {type(layer) for layer in network_from_module(_net(name, 0), SHAPE).layers} for name in NETS}
    assert Sum in kinds["resblock-maxpool"] and MaxPool in kinds["resblock-maxpool"]
    assert Concat in kinds["concat-channels"] and Concat in kinds["concat-features"]
    assert Sum in kinds["sub-branches"] and Sum in kinds["double-read-alpha"]
    x = torch.rand(3, *SHAPE, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for name in NETS:
        module = _net(name, 1)
        net = network_from_module(module, SHAPE)
        with torch.no_grad():
            assert torch.allclose(net.forward(x), module.double()(x), atol=1e-10), name


@pytest.mark.parametrize("name", sorted(NETS))
@pytest.mark.parametrize("norm", [Norm.LINF, Norm.L2], ids=str)
def test_sampled_points_stay_inside_every_method_s_bounds(name: str, norm: Norm) -> None:
    module = _net(name, 0)
    net = network_from_module(module, SHAPE)
    gen = torch.Generator().manual_seed(1)
    x0 = torch.rand(2, *SHAPE, generator=gen, dtype=torch.float64)
    eps = torch.tensor([0.03, 0.1] if norm is Norm.LINF else [0.2, 0.6], dtype=torch.float64)
    inputs = InputSet(x0, eps, norm, 0.0, 1.0)
    pred = module(x0.float()).argmax(1)
    spec = specification(pred, 3)
    boxes = layer_boxes(net, inputs)
    ibp = ibp_spec_bounds(net, spec, ibp_bounds(net, inputs))
    crown = spec_bounds(net, spec, inputs, boxes)
    alpha, alpha_boxes = alpha_bounds(net, spec, inputs, boxes, steps=5)
    allowance = spec_error(model_error(net, boxes), spec)
    xs = _samples(x0, eps, norm, 10_000, gen)
    with torch.no_grad():
        ys = module(xs.flatten(0, 1).float()).double().view(10_000, 2, 3)
    seen = torch.einsum("bsk,nbk->nbs", spec, ys).amin(0)
    for bound in (ibp, crown, alpha):
        assert (bound - allowance <= seen).all()
    assert (alpha >= crown).all()
    err = model_error(net, alpha_boxes)
    for b in (boxes, alpha_boxes):  # the output boxes hold every sampled logit
        assert (ys >= b[-1][0] - err).all() and (ys <= b[-1][1] + err).all()


@settings(max_examples=4, deadline=None)
@given(seed=st.integers(0, 10_000), name=st.sampled_from(sorted(NETS)), eps=st.floats(0.005, 0.15),
       norm=st.sampled_from([Norm.LINF, Norm.L2]))
def test_alpha_crown_is_never_below_crown_nor_crown_below_ibp(seed: int, name: str, eps: float, norm: Norm) -> None:
    module = _net(name, seed)
    net = network_from_module(module, SHAPE)
    x0 = torch.rand(2, *SHAPE, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    pred = module(x0.float()).argmax(1)
    e = torch.full((2,), eps * (1 if norm is Norm.LINF else 4), dtype=torch.float64)
    low = {m: margin_bounds(net, x0, pred, e, BoundSettings(method=m, norm=norm, lo=0.0, hi=1.0, alpha_steps=4))
           for m in ("ibp", "crown", "alpha-crown")}
    assert (low["crown"] >= low["ibp"] - 1e-9).all()  # CROWN's allowance rests on tighter boxes
    assert (low["alpha-crown"] >= low["crown"] - 1e-9).all()


@pytest.mark.parametrize("module, op", [
    (nn.Sequential(nn.MaxPool2d(2, ceil_mode=True), nn.Flatten(), nn.Linear(9, 3)), "aten.max_pool2d"),
    (nn.Sequential(nn.MaxPool2d(2, dilation=2), nn.Flatten(), nn.Linear(4, 3)), "aten.max_pool2d"),
    (nn.Sequential(nn.MaxPool2d(2, return_indices=True)), "aten.max_pool2d_with_indices"),
], ids=["ceil-mode", "dilation", "return-indices"])
def test_unsupported_max_pool_variants_are_refused_by_name(module: nn.Module, op: str) -> None:
    with pytest.raises(UnverifiableOpError, match=f"unverifiable: {op}"):
        network_from_module(module.eval(), SHAPE)


class _Product(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(36, 3), nn.Linear(36, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a(x.flatten(1)) * self.b(x.flatten(1))


class _Broadcast(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(36, 1)
        self.b = nn.Linear(36, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a(x.flatten(1)) + self.b(x.flatten(1))


@pytest.mark.parametrize("module, op", [(_Product(), "aten.mul.Tensor"), (_Broadcast(), "aten.add.Tensor")],
                         ids=["product", "broadcast-sum"])
def test_joins_without_a_rule_are_refused_by_name(module: nn.Module, op: str) -> None:
    with pytest.raises(UnverifiableOpError, match=f"unverifiable: {op}"):
        network_from_module(module.eval(), SHAPE)
