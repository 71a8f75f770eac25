"""Native APGD (Croce & Hein 2020): schedule, bounds, strength against PGD, certificates, determinism."""

from __future__ import annotations

import pytest
import torch

from attacks import run_batched
from attacks.apgd import APGD, APGDDLR, APGDT, checkpoints, targeted_dlr
from attacks.pgd import PGD
from certify.data import load_dataset
from certify.margins import logit_stats
from certify.threat import Norm
from .helpers_attacks import fit, lipschitz_mlp

CPU = torch.device("cpu")
APGDS = [APGD, APGDDLR, APGDT]


@pytest.fixture(scope="module")
def demo():
    return load_dataset("demo", limit=300)


@pytest.fixture(scope="module")
def trained(demo):
    """An undefended MLP, 300 Adam steps on the embedded demo images."""
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    return fit(net, demo, steps=300)


def test_checkpoints_follow_the_paper():
    # p_j = 0, 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99 (p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06))
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoints(1) == []
    assert all(0 < w < 37 for w in checkpoints(37))


def test_targeted_dlr_by_hand():
    logits = torch.tensor([[4.0, 3.0, 1.0, 0.0, -2.0]])
    # y = 0, t = 1: −(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2) = −(4 − 3) / (4 − (1 + 0)/2) = −1/3.5
    value = targeted_dlr(logits, torch.tensor([0]), torch.tensor([1]))
    assert float(value) == pytest.approx(-1 / 3.5)


@pytest.mark.parametrize("cls", APGDS, ids=lambda c: c.name)
@pytest.mark.parametrize("norm,eps", [("l2", 1.0), ("linf", 0.05)])
def test_outputs_in_bounds_in_ball_and_float(trained, demo, cls, norm, eps):
    x, y = demo.float_tensor()[:60], demo.y[:60]
    out = run_batched(cls(steps=10), trained, x, y, norm=norm, eps=eps, bounds=(0.0, 1.0), seed=0,
                      batch_size=25, device=CPU)
    assert out.x_adv.dtype == torch.float32 and out.x_adv.shape == x.shape
    assert float(out.x_adv.min()) >= 0.0 and float(out.x_adv.max()) <= 1.0
    assert bool((Norm.parse(norm).distance((out.x_adv - x).double()) <= eps * (1 + 1e-5)).all())
    assert bool(out.success.any())
    with torch.no_grad():
        assert torch.equal(out.success, trained(out.x_adv).argmax(1) != y)


@pytest.mark.parametrize("norm,eps", [("l2", 1.0), ("linf", 0.04)])
def test_apgd_at_least_as_strong_as_pgd_with_equal_budget(trained, demo, norm, eps):
    x, y = demo.float_tensor(), demo.y
    kw = dict(norm=norm, eps=eps, bounds=(0.0, 1.0), seed=0, batch_size=300, device=CPU)
    pgd = run_batched(PGD(steps=25), trained, x, y, **kw)
    apgd = run_batched(APGD(steps=25), trained, x, y, **kw)
    assert 0 < int(pgd.success.sum()) < len(y)  # a budget where strength can differ
    assert int(apgd.success.sum()) >= int(pgd.success.sum())


@pytest.mark.parametrize("cls", APGDS, ids=lambda c: c.name)
def test_never_succeeds_inside_certified_radius(cls):
    """1-Lipschitz MLP (orthonormal rows): radius = margin/√2 ; attack at 0.999·radius never succeeds."""
    net = lipschitz_mlp(16, 32, 4, seed=3, scale=1.0)
    x = torch.rand(64, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        stats = logit_stats(net(x), net(x).argmax(1))
    radius = (stats.gap.double() - 1e-4) / 2 ** 0.5  # minus a float-rounding allowance
    y = stats.prediction
    keep = radius > 1e-3
    out = run_batched(cls(steps=50, restarts=2), net, x[keep], y[keep], norm="l2", eps=0.999 * radius[keep],
                      bounds=(0.0, 1.0), seed=0, batch_size=64, device=CPU)
    assert not bool(out.success.any())


@pytest.mark.parametrize("cls", APGDS, ids=lambda c: c.name)
def test_same_seed_same_result(trained, demo, cls):
    x, y = demo.float_tensor()[:80], demo.y[:80]
    kw = dict(norm="l2", eps=0.4, bounds=(0.0, 1.0), batch_size=40, device=CPU)
    a = run_batched(cls(steps=15), trained, x, y, seed=5, **kw)
    b = run_batched(cls(steps=15), trained, x, y, seed=5, **kw)
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.success, b.success)


def test_no_early_stop_is_never_stronger(trained, demo):
    """Early stop keeps the first adversarial iterate, so switching it off cannot find more."""
    x, y = demo.float_tensor()[:150], demo.y[:150]
    kw = dict(norm="linf", eps=0.02, bounds=(0.0, 1.0), seed=1, batch_size=150, device=CPU)
    on = run_batched(APGD(steps=20), trained, x, y, **kw)
    off = run_batched(APGD(steps=20, early_stop=False), trained, x, y, **kw)
    assert int(on.success.sum()) >= int(off.success.sum())
