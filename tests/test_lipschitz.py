"""Sound Lipschitz bounds: ≥ exact values, tight where promised, refusals where no rule exists."""

from __future__ import annotations

import json
import math

import pytest
import torch
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from certify import operator_norms as on
from certify.cli import main
from certify.errors import BadInputError
from certify.lipschitz import analyse
from certify.threat import Norm
from tests.helpers_lipschitz import LinfDist, loaded, npz_data, orthogonal_mlp, saved, small_cnn


def conv_matrix_dense(spec: on.ConvSpec) -> torch.Tensor:
    x = torch.zeros(spec.in_shape, dtype=torch.float64)
    return torch.autograd.functional.jacobian(spec.apply, x).reshape(-1, x.numel())


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 12), st.integers(1, 12), st.integers(0, 10_000))
def test_gram_bound_is_above_and_close_to_exact_sigma(m: int, n: int, seed: int) -> None:
    w = torch.randn(m, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    exact = float(torch.linalg.matrix_norm(w, ord=2))
    bound = on.gram_bound(w)
    assert exact <= bound <= exact * 1.001 + 1e-12
    assert on.b_bound(w) >= exact * (1 - 1e-12)
    assert on.linf_matrix_norm(w) >= float(torch.linalg.matrix_norm(w, ord=math.inf))


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 3), st.integers(1, 4), st.sampled_from([1, 3]), st.integers(1, 2), st.integers(0, 1),
       st.integers(4, 7), st.integers(0, 10_000))
def test_conv_bounds_are_above_exact_operator_norm(cin: int, cout: int, k: int, stride: int, pad: int, n: int,
                                                   seed: int) -> None:
    w = torch.randn(cout, cin, k, k, generator=torch.Generator().manual_seed(seed))
    spec = on.ConvSpec(w, (stride, stride), (pad, pad), (1, 1), 1, (cin, n, n))
    a = conv_matrix_dense(spec)
    exact = float(torch.linalg.matrix_norm(a, ord=2))
    est = on.conv_power_estimate(spec)
    assert est <= exact * (1 + 1e-9)
    assert on.conv_circulant_bound(spec) >= exact * (1 - 1e-12)
    assert on.conv_l2nnn_bound(spec) >= exact * (1 - 1e-12)
    assert exact <= on.conv_l2_bound(spec, est) <= exact * 1.01
    assert on.conv_linf_bound(spec) >= float(a.abs().sum(1).max()) * (1 - 1e-12)


@settings(max_examples=8, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from(["l2", "linf"]))
def test_global_bound_dominates_observed_ratios(seed: int, norm: str) -> None:
    net = small_cnn(seed)
    rep = analyse(loaded(net, (1, 8, 8)), norm=norm)
    assert rep.verified
    g = torch.Generator().manual_seed(seed)
    x, x2 = torch.rand(64, 1, 8, 8, generator=g), torch.rand(64, 1, 8, 8, generator=g)
    x2 = x + 1e-2 * (x2 - 0.5)
    p = 2 if norm == "l2" else math.inf
    with torch.no_grad():
        dy = (net(x) - net(x2)).norm(p=p, dim=1)
    dx = (x - x2).flatten(1).norm(p=p, dim=1)
    assert float((dy / dx).max()) <= rep.global_bound
    assert max(rep.per_logit_bounds) <= rep.global_bound * (1 + 1e-12)


def test_orthogonal_mlp_per_logit_bounds_are_tight_and_certify_auto_verifies(tmp_path) -> None:
    model = saved(orthogonal_mlp(), (1, 4, 4), tmp_path / "mlp.pt2")
    rep = analyse(model, norm="l2")
    assert rep.verified
    assert all(1.0 - 1e-6 <= b <= 1.001 for b in rep.per_logit_bounds)
    data = npz_data(tmp_path / "d.npz", (1, 4, 4), k=4)
    res = CliRunner().invoke(main, ["certify", str(tmp_path / "mlp.pt2"), "--norm", "l2", "--eps", "0.01",
                                    "--data", data, "--json", "-", "-q"])
    assert res.exit_code == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["lipschitz_verified"] is True and out["certificate"] == "pairwise"


def test_declared_claim_that_holds_is_verified(tmp_path) -> None:
    model = saved(orthogonal_mlp(), (1, 4, 4), tmp_path / "mlp.pt2",
                  lipschitz={"norm": "l2", "kind": "per-logit", "constant": 1.001})
    from certify.certificates import plan_certificate

    plan = plan_certificate(model, norm="l2", certificate="auto", input_dim=16)
    assert plan.lipschitz_verified and plan.certificate == "l2-multi"
    # the tighter verified per-logit bound (≈ 1) replaces the declared 1.001: larger radii, still sound
    bound = max(analyse(model, norm="l2").per_logit_bounds)
    assert plan.lipschitz_constant == bound and 1.0 <= bound < 1.001
    explicit = plan_certificate(model, norm="l2", certificate="auto", lipschitz_constant=1.001, input_dim=16)
    assert explicit.lipschitz_constant == 1.001


def test_ordinary_cnn_tight_layers_and_l2_multi_refused(tmp_path) -> None:
    model = saved(small_cnn(), (1, 8, 8), tmp_path / "cnn.pt2")
    rep = analyse(model, norm="l2")
    convs = [lb for lb in rep.layers if lb.op in ("conv2d", "linear")]
    assert len(convs) == 3
    assert all(lb.estimate <= lb.bound <= 1.01 * lb.estimate for lb in convs)
    data = npz_data(tmp_path / "d.npz", (1, 8, 8))
    args = ["certify", str(tmp_path / "cnn.pt2"), "--norm", "l2", "--eps", "0.1", "--data", data, "-q"]
    res = CliRunner().invoke(main, args + ["--certificate", "l2-multi"])
    assert res.exit_code == 2 and "could not be verified" in res.stderr
    res = CliRunner().invoke(main, args + ["--certificate", "l2-multi", "--assume-lipschitz", "--json", "-"])
    assert res.exit_code == 0 and json.loads(res.stdout)["lipschitz_verified"] is False


def test_linf_dist_net_has_linf_bound_exactly_one(tmp_path) -> None:
    model = saved(LinfDist(16, (8, 8, 3)), (1, 4, 4), tmp_path / "linf.pt2")
    rep = analyse(model, norm="linf")
    assert rep.verified and rep.global_bound == 1.0
    assert rep.norm is Norm.LINF and analyse(model, norm=Norm.LINF) == rep  # the name or the Norm
    with pytest.raises(BadInputError, match="norm must be one of l2, linf; got 'l1'") as info:
        analyse(model, norm="l1")
    assert info.value.param == "norm"
    from certify.certificates import plan_certificate

    plan = plan_certificate(model, norm="linf", certificate="linf-dist", input_dim=16)
    assert plan.lipschitz_verified


def test_unknown_op_is_unverifiable_and_named(tmp_path) -> None:
    class Exp(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.exp(x.flatten(1))[:, :3]

    rep = analyse(loaded(Exp(), (1, 2, 2)), norm="l2")
    assert not rep.verified and rep.unverifiable_ops[0].startswith("exp (")
    assert rep.reason.startswith("unverifiable: exp")
    data = npz_data(tmp_path / "d.npz", (1, 2, 2))
    torch.save({"x": torch.rand(8, 1, 2, 2), "y": torch.randint(0, 3, (8,))}, tmp_path / "d.pt")
    saved(Exp(), (1, 2, 2), tmp_path / "exp.pt2")
    res = CliRunner().invoke(main, ["certify", str(tmp_path / "exp.pt2"), "--norm", "l2", "--eps", "0.1",
                                    "--data", data, "-q"])
    assert res.exit_code == 2 and "unverifiable: exp" in res.stderr


def test_two_sided_relu_and_norm_pooling_are_nonexpansive() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            q, _ = torch.linalg.qr(torch.randn(8, 8, generator=torch.Generator().manual_seed(0)))
            self.w = nn.Parameter(q)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            z = x.flatten(1) @ self.w.T
            h = torch.cat([torch.relu(z), torch.relu(-z)], dim=1)
            pooled = torch.sqrt(h.view(-1, 8, 2).pow(2).sum(-1) + 1e-12)  # disjoint norm pooling
            return torch.cat([pooled - torch.relu(pooled), torch.relu(pooled)], dim=1)

    rep = analyse(loaded(Net(), (1, 8)), norm="l2")
    assert rep.verified and rep.global_bound <= 1.0001


def test_lipschitz_cli_json_keys(tmp_path) -> None:
    saved(small_cnn(), (1, 8, 8), tmp_path / "cnn.pt2")
    data = npz_data(tmp_path / "d.npz", (1, 8, 8))
    res = CliRunner().invoke(main, ["lipschitz", str(tmp_path / "cnn.pt2"), "--data", data, "--json", "-"])
    assert res.exit_code == 0, res.stderr
    out = json.loads(res.stdout)
    for key in ("norm", "verified", "unverifiable_ops", "global_bound", "per_logit_bounds", "layers", "empirical"):
        assert key in out
    emp = out["empirical"]
    for key in ("jacobian_spectral_mean", "jacobian_spectral_max", "grad_loss_l2_max", "grad_loss_l1_max",
                "jacobian_2_inf_max", "jacobian_spectral_max_index"):
        assert key in emp
    assert emp["jacobian_spectral_max"] <= out["global_bound"]
    assert emp["local_search_max"] <= out["global_bound"]
    assert emp["jacobian_2_inf_max"] <= max(out["per_logit_bounds"]) * (1 + 1e-9)


def test_cdist_linf_dist_layers_have_linf_bound_one(tmp_path):
    """ℓ∞-dist neurons written with torch.cdist(x, W, p=inf): exactly 1 in ℓ∞, and a sound L2 bound."""
    import math

    from certify.lipschitz import analyse

    class CdistNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            g = torch.Generator().manual_seed(0)
            self.w1 = torch.nn.Parameter(torch.rand(6, 16, generator=g))
            self.w2 = torch.nn.Parameter(torch.rand(3, 6, generator=g))

        def forward(self, x):
            h = torch.cdist(x.flatten(1), self.w1, p=float("inf"))
            return -torch.cdist(h, self.w2, p=float("inf"))

    model = saved(CdistNet(), (1, 4, 4), tmp_path / "c.pt2")
    linf = analyse(model, norm="linf")
    assert linf.verified and linf.global_bound == 1.0
    l2 = analyse(model, norm="l2")
    assert l2.verified and l2.global_bound == pytest.approx(math.sqrt(6) * math.sqrt(3))
    # the bound holds on random pairs
    x = torch.rand(64, 1, 4, 4)
    xp = (x + 0.05 * torch.randn_like(x)).clamp(0, 1)
    dy = (model.module(x) - model.module(xp)).abs().amax(1)
    dx = (x - xp).flatten(1).abs().amax(1)
    assert bool((dy <= dx * (1 + 1e-5) + 1e-6).all())
