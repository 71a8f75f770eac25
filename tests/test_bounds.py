"""Bound propagation (certify.bounds): soundness against sampling, an exact MILP, attacks and hand
computations; the order IBP ≤ CROWN ≤ α-CROWN; refusals; and the ibp/crown/alpha-crown certificates."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn

from certify.bounds import (
    BoundSettings,
    InputSet,
    UnverifiableOpError,
    certified_radii,
    network_from_module,
)
from certify.bounds.alpha import alpha_spec_bounds
from certify.bounds.crown import ibp_spec_bounds, layer_boxes, spec_bounds
from certify.bounds.fperror import model_error, spec_error
from certify.bounds.ibp import ibp_bounds
from certify.bounds.radius import margin_bounds, specification
from certify.checkpoints import Normalize
from certify.threat import Norm
from tests.helpers_lipschitz import loaded


pytestmark = pytest.mark.usefixtures("one_thread")


def _randomise_bn(m: nn.Module, gen: torch.Generator) -> nn.Module:
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.copy_(torch.rand(mod.num_features, generator=gen) - 0.5)
            mod.running_var.copy_(torch.rand(mod.num_features, generator=gen) + 0.5)
            mod.weight.data.copy_(torch.randn(mod.num_features, generator=gen))
            mod.bias.data.copy_(torch.randn(mod.num_features, generator=gen) * 0.1)
    return m.eval()


class _Scale(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * 1.5 + 0.25 - 0.125) / 2.0


NETS = {
    "mlp": lambda: nn.Sequential(nn.Flatten(), nn.Linear(36, 12), nn.ReLU(), nn.Linear(12, 10), nn.ReLU(), nn.Linear(10, 3)),
    "normalize-conv": lambda: nn.Sequential(Normalize((0.4,), (0.3,)), nn.Conv2d(1, 3, 3, stride=2, padding=1), nn.ReLU(),
                                            nn.Flatten(), nn.Linear(27, 3)),
    "conv-groups-bn-leaky-avg": lambda: nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.LeakyReLU(0.2),
                                                      nn.Conv2d(4, 4, 3, padding=1, groups=2), nn.ReLU(), nn.AvgPool2d(2),
                                                      nn.Flatten(), nn.Linear(36, 3)),
    "constants-reshape": lambda: nn.Sequential(_Scale(), nn.Flatten(), nn.Linear(36, 8), nn.ReLU(), nn.Unflatten(1, (2, 4)),
                                               nn.Flatten(), nn.Linear(8, 3)),
}
SHAPE = (1, 6, 6)


def _net(name: str, seed: int) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    return _randomise_bn(NETS[name](), gen)


def _samples(x0: torch.Tensor, eps: torch.Tensor, norm: Norm, n: int, gen: torch.Generator) -> torch.Tensor:
    """n points of each set (ℓ∞: a quarter of them corners), clipped to [0, 1]: (n, B, *shape)."""
    d = torch.rand(n, *x0.shape, generator=gen, dtype=torch.float64) * 2 - 1
    if norm is Norm.LINF:
        d[: n // 4] = d[: n // 4].sign()
    else:
        d = d / d.flatten(2).norm(dim=2).view(n, -1, 1, 1, 1) * torch.rand(n, x0.shape[0], 1, 1, 1, generator=gen, dtype=torch.float64)
    return (x0 + d * eps.view(1, -1, 1, 1, 1)).clamp(0, 1)


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
    alpha = alpha_spec_bounds(net, spec, inputs, boxes, steps=10)
    allowance = spec_error(model_error(net, boxes), spec)
    xs = _samples(x0, eps, norm, 10_000, gen)
    with torch.no_grad():
        ys = module(xs.flatten(0, 1).float()).double().view(10_000, 2, 3)
    seen = torch.einsum("bsk,nbk->nbs", spec, ys).amin(0)
    for bound in (ibp, crown, alpha):
        assert (bound - allowance <= seen).all()
    assert (alpha >= crown).all()
    # the output box holds every sampled logit
    assert (ys >= boxes[-1][0] - model_error(net, boxes)).all() and (ys <= boxes[-1][1] + model_error(net, boxes)).all()


def _exact_min_milp(w1: np.ndarray, b1: np.ndarray, w2: np.ndarray, b2: np.ndarray, c: np.ndarray,
                    lo: np.ndarray, hi: np.ndarray) -> float:
    """min c·(W2 relu(W1 x + b1) + b2) over the box [lo, hi], exactly (big-M MILP, HiGHS)."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    n, h = w1.shape[1], w1.shape[0]
    pre = w1 @ ((lo + hi) / 2) + b1
    rad = np.abs(w1) @ ((hi - lo) / 2)
    zl, zu = pre - rad - 1e-6, pre + rad + 1e-6
    # variables: x (n), a (h) = relu, d (h) binary
    nv = n + 2 * h
    obj = np.concatenate([np.zeros(n), c @ w2, np.zeros(h)])
    rows, lb, ub = [], [], []
    for i in range(h):
        r = np.zeros(nv); r[n + i] = 1; r[:n] = -w1[i]  # a ≥ z
        rows.append(r); lb.append(b1[i]); ub.append(np.inf)
        r = np.zeros(nv); r[n + i] = 1; r[:n] = -w1[i]; r[n + h + i] = -zl[i]  # a ≤ z − l(1 − d)
        rows.append(r); lb.append(-np.inf); ub.append(b1[i] - zl[i])
        r = np.zeros(nv); r[n + i] = 1; r[n + h + i] = -zu[i]  # a ≤ u·d
        rows.append(r); lb.append(-np.inf); ub.append(0.0)
    bounds = Bounds(np.concatenate([lo, np.zeros(h), np.zeros(h)]), np.concatenate([hi, np.full(h, np.inf), np.ones(h)]))
    integrality = np.concatenate([np.zeros(n + h), np.ones(h)])
    res = milp(obj, constraints=LinearConstraint(np.array(rows), lb, ub), bounds=bounds, integrality=integrality,
               options={"mip_rel_gap": 0.0})
    # HiGHS may give up on a badly scaled big-M instance; that says nothing about the bound
    assume(res.success)
    return float(res.fun + c @ b2)


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 10_000), eps=st.floats(0.02, 0.3))
def test_crown_never_exceeds_the_exact_minimum_and_certified_points_are_robust(seed: int, eps: float) -> None:
    gen = torch.Generator().manual_seed(seed)
    module = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    net = network_from_module(module, (4,))
    x0 = torch.rand(1, 4, generator=gen, dtype=torch.float64)
    pred = module(x0.float()).argmax(1)
    s = BoundSettings(method="alpha-crown", norm=Norm.LINF, lo=0.0, hi=1.0, alpha_steps=10)
    lower = margin_bounds(net, x0, pred, torch.tensor([eps], dtype=torch.float64), s)
    crown = margin_bounds(net, x0, pred, torch.tensor([eps], dtype=torch.float64), BoundSettings(
        method="crown", norm=Norm.LINF, lo=0.0, hi=1.0))
    assert (lower >= crown).all()
    w1, b1, w2, b2 = (p.detach().double().numpy() for p in module.parameters())
    lo = np.clip(x0[0].numpy() - eps, 0, 1)
    hi = np.clip(x0[0].numpy() + eps, 0, 1)
    spec = specification(pred, 3)[0].numpy()
    for k in range(2):
        exact = _exact_min_milp(w1, b1, w2, b2, spec[k], lo, hi)
        assert lower[0, k].item() <= exact + 1e-7
        if lower[0, k] > 0:
            assert exact > 0


def _pgd_margin(module: nn.Module, x0: torch.Tensor, label: torch.Tensor, eps: torch.Tensor, norm: Norm,
                steps: int = 60) -> torch.Tensor:
    """Smallest label margin PGD finds (float32 model), per example."""
    gen = torch.Generator().manual_seed(0)
    e = eps.view(-1, *([1] * (x0.dim() - 1))).float()
    x0 = x0.float()
    x = (x0 + (torch.rand(x0.shape, generator=gen) * 2 - 1) * e * (0.5 if norm is Norm.L2 else 1)).clamp(0, 1)
    best = torch.full((x0.shape[0],), math.inf)
    for _ in range(steps):
        x = x.detach().requires_grad_(True)
        y = module(x)
        other = y.scatter(1, label.view(-1, 1), -math.inf).amax(1)
        margin = y.gather(1, label.view(-1, 1)).squeeze(1) - other
        best = torch.minimum(best, margin.detach())
        (g,) = torch.autograd.grad(margin.sum(), x)
        with torch.no_grad():
            if norm is Norm.LINF:
                x = torch.minimum(torch.maximum(x - e / 8 * g.sign(), x0 - e), x0 + e).clamp(0, 1)
            else:
                step = g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (x0.dim() - 1)))
                d = x - e / 8 * step - x0
                d = d * (e.flatten() / d.flatten(1).norm(dim=1).clamp_min(e.flatten())).view_as(e)
                x = (x0 + d).clamp(0, 1)
    return best


@pytest.mark.parametrize("method", ["ibp", "crown", "alpha-crown"])
@pytest.mark.parametrize("norm", [Norm.LINF, Norm.L2], ids=str)
def test_attacks_never_break_a_point_at_0_999_of_its_radius(method: str, norm: Norm) -> None:
    module = _net("conv-groups-bn-leaky-avg", 3)
    net = network_from_module(module, SHAPE)
    x0 = torch.rand(16, *SHAPE, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    pred = module(x0.float()).argmax(1)
    eps_max = 1.0 if norm is Norm.LINF else 6.0
    s = BoundSettings(method=method, norm=norm, lo=0.0, hi=1.0, eps_max=eps_max, iterations=10, alpha_steps=5)
    r = certified_radii(net, x0, pred, s)
    assert (r >= 0).all() and (r > 0).any()
    margin = _pgd_margin(module, x0, pred, 0.999 * r, norm)
    assert (margin[r > 0] > 0).all()


def test_order_ibp_crown_alpha_on_radii() -> None:
    module = _net("mlp", 5)
    net = network_from_module(module, SHAPE)
    x0 = torch.rand(12, *SHAPE, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    pred = module(x0.float()).argmax(1)
    radii = {m: certified_radii(net, x0, pred, BoundSettings(method=m, norm=Norm.LINF, lo=0.0, hi=1.0, alpha_steps=10))
             for m in ("ibp", "crown")}
    radii["alpha-crown"] = certified_radii(net, x0, pred, BoundSettings(method="alpha-crown", norm=Norm.LINF, lo=0.0,
                                           hi=1.0, alpha_steps=10), lower=radii["crown"])
    assert (radii["crown"] >= radii["ibp"]).all()  # CROWN's bound is the max with IBP's, on tighter boxes
    assert (radii["alpha-crown"] >= radii["crown"]).all()


@pytest.mark.parametrize("norm", [Norm.LINF, Norm.L2], ids=str)
def test_radii_of_a_linear_model_match_the_hand_computation(norm: Norm) -> None:
    module = nn.Linear(3, 3).eval()
    with torch.no_grad():
        module.weight.copy_(torch.tensor([[1.0, -2.0, 0.5], [0.0, 1.0, 1.0], [-1.0, 0.0, 2.0]]))
        module.bias.copy_(torch.tensor([0.3, 0.0, -0.2]))
    net = network_from_module(module, (3,))
    x0 = torch.tensor([[0.5, 0.45, 0.5]], dtype=torch.float64)
    w, b = module.weight.double(), module.bias.double()
    y = w @ x0[0] + b
    c = int(y.argmax())
    p = 1 if norm is Norm.LINF else 2
    hand = min(float((y[c] - y[j]) / (w[c] - w[j]).norm(p=p)) for j in range(3) if j != c)
    assert hand < 0.45  # the box [0, 1] does not bind
    s = BoundSettings(method="crown", norm=norm, lo=0.0, hi=1.0, eps_max=1.0, iterations=20)
    r = float(certified_radii(net, x0, torch.tensor([c]), s)[0])
    assert hand - 2 * 2 ** -20 - 1e-6 <= r <= hand


@pytest.mark.parametrize("module, op", [
    (nn.Sequential(nn.Flatten(), nn.Linear(36, 4), nn.Tanh(), nn.Linear(4, 3)), "aten.tanh"),
    (nn.Sequential(nn.MaxPool2d(2, ceil_mode=True), nn.Flatten(), nn.Linear(9, 3)), "aten.max_pool2d"),
    (nn.Sequential(nn.Flatten(), nn.Linear(36, 4), nn.LeakyReLU(-0.5), nn.Linear(4, 3)), "aten.leaky_relu"),
], ids=["tanh", "maxpool-ceil-mode", "negative-leaky"])
def test_unsupported_ops_are_refused_by_name(module: nn.Module, op: str) -> None:
    with pytest.raises(UnverifiableOpError, match=f"unverifiable: {op}"):
        network_from_module(module.eval(), SHAPE)


def test_the_model_error_covers_float32_rounding_of_a_large_layer() -> None:
    """A wide layer with large weights: float32 logits differ from float64 ones by less than the allowance."""
    gen = torch.Generator().manual_seed(0)
    module = nn.Sequential(nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 3)).eval()
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 30)
    net = network_from_module(module, (512,))
    x0 = torch.rand(64, 512, generator=gen, dtype=torch.float64)
    boxes = layer_boxes(net, InputSet(x0, torch.zeros(64, dtype=torch.float64), Norm.LINF, 0.0, 1.0))
    err = model_error(net, boxes)
    with torch.no_grad():
        diff = (module(x0.float()).double() - net.forward(x0)).abs()
    assert (diff <= err).all() and (err < 1e-2 * net.forward(x0).abs().amax()).all()


@pytest.mark.parametrize("certificate", ["ibp", "crown", "alpha-crown"])
def test_certify_with_a_bound_certificate(tmp_path, certificate: str) -> None:
    from certify.certificates import certify, plan_certificate
    from certify.data import Dataset
    from certify.render import certify_json

    module = _net("normalize-conv", 7)
    model = loaded(module, SHAPE)
    x = torch.rand(20, *SHAPE, generator=torch.Generator().manual_seed(3))
    data = Dataset(x, module(x).argmax(1), "random", "test")
    report = certify(model, data, norm="linf", eps=[0.005, 0.02], certificate=certificate, batch_size=8)
    assert report.plan.certificate == certificate and report.clean_accuracy == 1.0
    assert report.results[0].certified_count >= report.results[1].certified_count > 0
    doc = json.loads(json.dumps(certify_json(report), allow_nan=False))
    assert doc["certificate"] == certificate and doc["lipschitz_constant"] is None
    with pytest.raises(Exception, match="cannot apply"):
        plan_certificate(model, norm="linf", certificate=certificate, lipschitz_constant=1.0, input_dim=36,
                         input_shape=SHAPE)


@pytest.mark.parametrize("certificate", ["ibp", "crown"])
def test_cli_certify_with_a_bound_certificate(tmp_path, certificate: str) -> None:
    from click.testing import CliRunner

    from certify.cli import main
    from tests.helpers_lipschitz import npz_data, saved

    saved(_net("mlp", 1), SHAPE, tmp_path / "m.pt2")
    data = npz_data(tmp_path / "d.npz", SHAPE, n=12)
    res = CliRunner().invoke(main, ["certify", str(tmp_path / "m.pt2"), "--data", data, "--norm", "linf", "--eps",
                                    "0.01", "--certificate", certificate, "--json", "-", "-q"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["certificate"] == certificate and doc["results"][0]["eps"] == 0.01
    res = CliRunner().invoke(main, ["certify", str(tmp_path / "m.pt2"), "--data", data, "--norm", "linf", "--eps",
                                    "0.01", "--certificate", certificate, "--lipschitz-constant", "2"])
    assert res.exit_code == 2 and "--lipschitz-constant" in res.stderr, res.output


def test_cli_refuses_an_unsupported_op_by_name(tmp_path) -> None:
    from click.testing import CliRunner

    from certify.cli import main
    from tests.helpers_lipschitz import npz_data, saved

    saved(nn.Sequential(nn.Flatten(), nn.Linear(36, 4), nn.Tanh(), nn.Linear(4, 3)), SHAPE, tmp_path / "m.pt2")
    data = npz_data(tmp_path / "d.npz", SHAPE, n=4)
    res = CliRunner().invoke(main, ["certify", str(tmp_path / "m.pt2"), "--data", data, "--norm", "linf", "--eps",
                                    "0.01", "--certificate", "crown"])
    assert res.exit_code != 0 and "unverifiable: aten.tanh" in res.stderr, res.output
