"""PGD's early stop and compaction per device: eager on the CPU, deferred on a GPU.

The deferred (GPU) policy is exercised here on the CPU by swapping the CPU's entry in
:data:`certify.defaults.DEFAULT_EARLY_STOP`.
"""

from __future__ import annotations

import pytest
import torch

from attacks.early_stop import early_stop_for
from attacks.pgd import PGD
from certify.defaults import DEFAULT_EARLY_STOP

from .helpers_attacks import blob_data, fit, lipschitz_mlp


@pytest.fixture(scope="module")
def model_and_points():
    data = blob_data(n=256, shape=(1, 6, 6), classes=4, seed=3)
    model = fit(lipschitz_mlp(36, 32, 4, seed=1, scale=3.0), data, steps=150)
    return model, data.as_float(data.x), data.y


def test_policies_per_device():
    assert early_stop_for(torch.device("cpu")).eager
    cuda = early_stop_for(torch.device("cuda", 0))
    assert not cuda.eager and cuda.every > 1 and 0 < cuda.compact_below < 1
    assert early_stop_for("cuda:1") == cuda


def _success(model, x, y, norm, eps, **kw):
    return PGD(steps=30, **kw)(model, x, y, norm=norm, eps=eps, seed=7).success


@pytest.mark.parametrize("norm,eps", [("l2", 0.5), ("linf", 0.05)])
def test_deferred_without_compaction_keeps_every_hit_of_the_plain_loop(model_and_points, monkeypatch, norm, eps):
    """Same trajectory as no early stop (nothing is dropped), plus every point that was adversarial on the way."""
    model, x, y = model_and_points
    plain = _success(model, x, y, norm, eps, early_stop=False)
    monkeypatch.setitem(DEFAULT_EARLY_STOP, "cpu", (10, 0.0))
    deferred = _success(model, x, y, norm, eps)
    assert bool((deferred | ~plain).all()), "a point the plain loop fooled was lost"
    assert 0 < int(plain.sum()) < len(y)


@pytest.mark.parametrize("norm,eps", [("l2", 0.5), ("linf", 0.05)])
def test_deferred_with_compaction_matches_eager(model_and_points, monkeypatch, norm, eps):
    model, x, y = model_and_points
    eager = _success(model, x, y, norm, eps)
    monkeypatch.setitem(DEFAULT_EARLY_STOP, "cpu", (5, 0.9))
    deferred = _success(model, x, y, norm, eps)
    assert abs(int(eager.sum()) - int(deferred.sum())) <= 2
