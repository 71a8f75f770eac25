"""Empirical estimates and the exact data Lipschitz constant."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from certify.cli import main
from certify.data import Dataset
from certify.lipschitz.estimates import data_lipschitz, empirical_estimates
from certify.lipschitz import analyse
from tests.helpers_lipschitz import loaded, small_cnn


def brute_force_min_distance(ds: Dataset) -> float:
    x = ds.float_tensor().flatten(1).double()
    d = (x[:, None, :] - x[None, :, :]).pow(2).sum(-1).sqrt()
    d[ds.y[:, None] == ds.y[None, :]] = math.inf
    return float(d.min())


@settings(max_examples=20, deadline=None)
@given(st.integers(2, 60), st.integers(2, 4), st.integers(0, 10_000), st.booleans())
def test_data_lipschitz_equals_brute_force(n: int, k: int, seed: int, uint8: bool) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 1, 3, 3), generator=g, dtype=torch.uint8) if uint8 else torch.rand(n, 1, 3, 3, generator=g)
    y = torch.arange(n) % k
    ds = Dataset(x, y, "t", "train")
    res = data_lipschitz(ds, block=7)
    assert res.min_distance == pytest.approx(brute_force_min_distance(ds), rel=1e-12, abs=1e-15)
    xf = ds.float_tensor().flatten(1).double()
    assert float((xf[res.index_a] - xf[res.index_b]).norm()) == pytest.approx(res.min_distance, rel=1e-12)
    assert int(ds.y[res.index_a]) != int(ds.y[res.index_b])
    assert res.lip_2_inf == pytest.approx(1 / res.min_distance)


def test_empirical_estimates_are_below_the_guaranteed_bounds() -> None:
    net = small_cnn(1).eval()
    x = torch.rand(40, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    ds = Dataset(x, torch.arange(40) % 3, "t", "test")
    est = empirical_estimates(net, ds, local_points=4, local_steps=3, batch_size=16)
    l2 = analyse(loaded(net, (1, 8, 8)), norm="l2")
    linf = analyse(loaded(net, (1, 8, 8)), norm="linf")
    assert est.jacobian_spectral_mean <= est.jacobian_spectral_max.value
    for v in (est.jacobian_spectral_max.value, est.local_search_max.value, est.jacobian_2_inf_max.value):
        assert v <= l2.global_bound
    assert est.jacobian_1_inf_max.value <= linf.global_bound
    assert est.local_search_max.value >= est.jacobian_spectral_max.value * (1 - 1e-3)
    j = torch.autograd.functional.jacobian(net, x[est.jacobian_spectral_max.index:est.jacobian_spectral_max.index + 1])
    exact = float(torch.linalg.matrix_norm(j.reshape(3, -1), ord=2))
    assert est.jacobian_spectral_max.value == pytest.approx(exact, rel=1e-3)


def test_data_lipschitz_cli(tmp_path) -> None:
    torch.save({"x": torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0]]).view(3, 1, 1, 2), "y": torch.tensor([0, 1, 0])},
               tmp_path / "d.pt")
    res = CliRunner().invoke(main, ["data-lipschitz", str(tmp_path / "d.pt"), "--json", "-"])
    assert res.exit_code == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["min_distance"] == pytest.approx(math.sqrt(9 + 9)) and out["closest_pair"] == [1, 2]
    assert out["lip_2_inf"] == pytest.approx(1 / math.sqrt(18))


@pytest.mark.slow
def test_fashion_mnist_train_data_lipschitz_matches_wcat() -> None:
    if not os.path.isdir("/usr/share/datasets/fashion-mnist"):
        pytest.skip("Fashion-MNIST not installed")
    from certify.data import load_dataset

    res = data_lipschitz(load_dataset("fashion-mnist", split="train"))
    assert abs(res.lip_2_inf - 0.626) <= 0.001


def test_old_import_path_is_an_alias() -> None:
    import certify.estimates as old
    import certify.lipschitz.estimates as new

    for name in ("empirical_estimates", "data_lipschitz", "EmpiricalEstimates", "DataLipschitz", "Peak", "local_search"):
        assert getattr(old, name) is getattr(new, name)
