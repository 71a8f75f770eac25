"""Lipschitz-by-construction layers: random pairs never beat the declared bound (float64)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from certify.zoo.layers import (
    L2Conv2d,
    L2Linear,
    LinfDist,
    MeanShift,
    MultiL2NNNHead,
    NormPool2d,
    SplitReconverge,
    TwoSided,
    TwoSidedReLU,
    _LpDistFn,
    bjorck,
    chunk_size,
    gram_sigma_bound,
    lp_dist,
    lp_dist_naive,
    nonexpansive_bound,
    nonexpansive_weight,
    overlap_factor,
    penalty7,
    spectral_weight,
)

REL = 1e-9  # float64 rounding allowance, relative
ABS = 1e-12
seeds = st.integers(0, 2**31 - 1)


def _l2(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1)


def _linf(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).abs().amax(dim=1)


def _scramble(module: nn.Module, gen: torch.Generator, scale: float = 3.0) -> nn.Module:
    """Large random weights, so the normalisation has work to do; float64, eval mode."""
    module = module.double().eval()
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * scale)
    return module


def _pairs(gen: torch.Generator, shape: tuple[int, ...], n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    x1 = torch.randn((n, *shape), generator=gen, dtype=torch.float64)
    scale = 10.0 ** torch.empty(n, *([1] * len(shape)), dtype=torch.float64).uniform_(-4, 1, generator=gen)
    x2 = x1 + scale * torch.randn((n, *shape), generator=gen, dtype=torch.float64)
    return x1, x2


def assert_nonexpansive(f: nn.Module, x1: torch.Tensor, x2: torch.Tensor, norm=_l2) -> None:  # type: ignore[no-untyped-def]
    with torch.no_grad():
        out = norm(f(x1) - f(x2))
    bound = norm(x1 - x2)
    assert torch.all(out <= bound * (1 + REL) + ABS), float((out / bound).max())


# --------------------------------------------------------------------------- L2NNN layers


@settings(max_examples=30, deadline=None)
@given(seeds, st.integers(1, 40), st.integers(1, 40))
def test_nonexpansive_weight_has_spectral_norm_at_most_one(seed: int, rows: int, cols: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=gen, dtype=torch.float64) * 5
    assert torch.linalg.matrix_norm(nonexpansive_weight(w), ord=2) <= 1 + REL
    assert nonexpansive_bound(w) >= torch.linalg.matrix_norm(w, ord=2) ** 2 * (1 - REL)


def test_nonexpansive_bound_hand_computed() -> None:
    w = torch.tensor([[1.0, 2.0], [0.0, 1.0]], dtype=torch.float64)
    # WᵀW = [[1,2],[2,5]] → r = 7; WWᵀ = [[5,2],[2,1]] → r = 7
    assert float(nonexpansive_bound(w)) == 7.0
    w = torch.tensor([[3.0, 4.0]], dtype=torch.float64)  # WWᵀ = [25], WᵀW = [[9,12],[12,16]] → 28
    assert float(nonexpansive_bound(w)) == 25.0


def test_wide_layer_bound_uses_only_small_gram_and_stays_sound() -> None:
    w = torch.randn(8, 2000, dtype=torch.float64)
    assert float(nonexpansive_bound(w)) == float((w @ w.t()).abs().sum(1).max())
    assert torch.linalg.matrix_norm(nonexpansive_weight(w), ord=2) <= 1 + REL


def test_penalty7_is_zero_for_orthonormal_rows_and_positive_otherwise() -> None:
    assert float(penalty7(torch.eye(4))) == 0.0
    assert float(penalty7(2 * torch.eye(2))) == pytest.approx(2 * 3.0)


@settings(max_examples=25, deadline=None)
@given(seeds, st.integers(1, 12), st.integers(1, 12))
def test_l2linear_is_nonexpansive(seed: int, fin: int, fout: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    layer = _scramble(L2Linear(fin, fout), gen)
    assert_nonexpansive(layer, *_pairs(gen, (fin,)))


# ----------------------------------------------------- spectral normalisation (Gram bound + Björck)


@settings(max_examples=30, deadline=None)
@given(seeds, st.integers(1, 40), st.integers(1, 40), st.sampled_from([0.01, 1.0, 50.0]))
def test_gram_sigma_bound_is_a_sound_and_tight_sigma_max_bound(seed: int, rows: int, cols: int,
                                                               scale: float) -> None:
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=gen, dtype=torch.float64) * scale
    sigma = torch.linalg.matrix_norm(w, ord=2)
    bound = gram_sigma_bound(w)
    assert bound >= sigma * (1 - REL)
    assert bound <= sigma * min(rows, cols) ** (1 / 2 ** 7) * (1 + REL)  # rank^(1/2^(t+1)), t = 6
    assert bound <= torch.sqrt(nonexpansive_bound(w)) * (1 + REL)  # never looser than √b(W)


@settings(max_examples=30, deadline=None)
@given(seeds, st.integers(1, 40), st.integers(1, 40), st.integers(0, 12))
def test_spectral_weight_has_spectral_norm_at_most_one(seed: int, rows: int, cols: int, steps: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=gen, dtype=torch.float64) * 5
    assert torch.linalg.matrix_norm(spectral_weight(w, steps), ord=2) <= 1.0


def test_bjorck_moves_singular_values_towards_one_and_never_above() -> None:
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(20, 50, generator=gen, dtype=torch.float64)
    w = w / torch.linalg.matrix_norm(w, ord=2)
    before = torch.linalg.svdvals(w)
    after = torch.linalg.svdvals(bjorck(w, 15))
    assert torch.all(after <= 1 + REL) and torch.all(after >= before - REL)
    assert float(after.min()) > 0.99  # almost orthonormal rows
    b_weight = torch.linalg.svdvals(nonexpansive_weight(w))
    assert float(after.sum()) > float(b_weight.sum())  # much more signal kept than W/√b(W)


@settings(max_examples=25, deadline=None)
@given(seeds, st.integers(1, 12), st.integers(1, 12), st.integers(0, 8))
def test_spectral_l2linear_is_nonexpansive(seed: int, fin: int, fout: int, steps: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    layer = _scramble(L2Linear(fin, fout, normalisation="spectral", bjorck_iterations=steps), gen)
    assert_nonexpansive(layer, *_pairs(gen, (fin,)))
    # the worst direction: the top right singular vector of the effective weight
    with torch.no_grad():
        _, _, vh = torch.linalg.svd(layer.normalised_weight())
        x1 = torch.randn(4, fin, generator=gen, dtype=torch.float64)
        assert_nonexpansive(layer, x1, x1 + 0.3 * vh[:1])


def test_l2linear_rejects_unknown_normalisation() -> None:
    with pytest.raises(ValueError, match="normalisation"):
        L2Linear(3, 2, normalisation="frobenius")


@settings(max_examples=25, deadline=None)
@given(seeds, st.integers(1, 3), st.integers(1, 4), st.sampled_from([1, 2, 3, 5]), st.integers(1, 3),
       st.integers(0, 2))
def test_l2conv_is_nonexpansive(seed: int, cin: int, cout: int, k: int, s: int, pad: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    layer = _scramble(L2Conv2d(cin, cout, k, stride=s, padding=pad), gen)
    assert_nonexpansive(layer, *_pairs(gen, (cin, 7, 7)))


@pytest.mark.parametrize("k,s,pad", [(3, 1, 1), (3, 2, 1), (2, 2, 0), (4, 1, 2), (5, 3, 2)])
def test_l2conv_operator_norm_at_most_one(k: int, s: int, pad: int) -> None:
    """Exact operator norm of the (linear) conv: largest singular value of its Jacobian."""
    gen = torch.Generator().manual_seed(k * 10 + s)
    layer = _scramble(L2Conv2d(2, 3, k, stride=s, padding=pad, bias=False), gen, scale=1.0)
    jac = torch.autograd.functional.jacobian(layer, torch.zeros(1, 2, 8, 8, dtype=torch.float64))
    jac = jac.reshape(-1, 2 * 8 * 8)
    assert torch.linalg.matrix_norm(jac, ord=2) <= 1 + REL
    assert overlap_factor((k, k), (s, s)) == math.ceil(k / s) ** 2


@settings(max_examples=25, deadline=None)
@given(seeds, st.sampled_from(["relu", "tanh_shift", "hardsigmoid"]))
def test_two_sided_is_nonexpansive(seed: int, kind: str) -> None:
    gen = torch.Generator().manual_seed(seed)
    f = {"relu": TwoSidedReLU(),
         "tanh_shift": TwoSided(lambda t: 0.5 * (torch.tanh(t) + t)),  # 0 < f′ ≤ 1
         "hardsigmoid": TwoSided(nn.Hardsigmoid())}[kind]
    assert_nonexpansive(f, *_pairs(gen, (3, 4, 4)))


def test_two_sided_relu_values() -> None:
    out = TwoSidedReLU()(torch.tensor([[-2.0, 3.0]]))
    assert out.tolist() == [[0.0, 3.0, 2.0, 0.0]]


@settings(max_examples=25, deadline=None)
@given(seeds, st.integers(1, 4), st.integers(1, 3))
def test_norm_pool_is_nonexpansive(seed: int, k: int, s: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    assert_nonexpansive(NormPool2d(k, s), *_pairs(gen, (2, 9, 9)))


def test_norm_pool_values() -> None:
    x = torch.tensor([[[[3.0, 4.0], [0.0, 0.0]]]])
    assert float(NormPool2d(2)(x)) == pytest.approx(5.0)


@settings(max_examples=25, deadline=None)
@given(seeds, st.integers(1, 20), st.integers(2, 10))
def test_multi_l2nnn_head_every_logit_is_1_lipschitz(seed: int, fin: int, k: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    head = _scramble(MultiL2NNNHead(fin, k), gen)
    x1, x2 = _pairs(gen, (fin,))
    with torch.no_grad():
        diff = (head(x1) - head(x2)).abs()
    assert torch.all(diff <= _l2(x1 - x2).unsqueeze(1) * (1 + REL) + ABS)


@settings(max_examples=20, deadline=None)
@given(seeds, st.floats(0.0, 1.0))
def test_split_reconverge_is_nonexpansive(seed: int, t: float) -> None:
    gen = torch.Generator().manual_seed(seed)
    block = _scramble(SplitReconverge(nn.Sequential(L2Linear(6, 6), nn.ReLU()), t=t), gen)
    assert_nonexpansive(block, *_pairs(gen, (6,)))


# --------------------------------------------------------------------------- ℓ∞-dist layers


@settings(max_examples=25, deadline=None)
@given(seeds, st.integers(1, 30), st.integers(1, 20))
def test_linf_dist_layer_is_1_lipschitz_in_linf(seed: int, fin: int, fout: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    layer = _scramble(LinfDist(fin, fout, bias=True), gen)
    assert_nonexpansive(layer, *_pairs(gen, (fin,)), norm=_linf)


def test_linf_dist_uses_p_inf_at_eval_and_p_in_training() -> None:
    layer = LinfDist(5, 3, p=4.0).double()
    x = torch.randn(2, 5, dtype=torch.float64)
    layer.eval()
    assert torch.allclose(layer(x), lp_dist_naive(x, layer.weight, math.inf))
    layer.train()
    assert torch.allclose(layer(x), lp_dist_naive(x, layer.weight, 4.0))


@settings(max_examples=30, deadline=None)
@given(seeds, st.integers(1, 40), st.integers(1, 30), st.integers(1, 30),
       st.sampled_from([1.0, 2.0, 8.0, 37.5, 100.0, math.inf]))
def test_chunked_linf_dist_equals_naive(seed: int, fin: int, fout: int, chunk: int, p: float) -> None:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(5, fin, generator=gen, dtype=torch.float64)
    w = torch.randn(fout, fin, generator=gen, dtype=torch.float64) * 3
    assert torch.allclose(lp_dist(x, w, p, chunk), lp_dist_naive(x, w, p), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("p", [2.0, 8.0, 100.0, math.inf])
def test_chunked_backward_matches_autograd_of_naive(p: float) -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(4, 9, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(7, 9, generator=gen, dtype=torch.float64, requires_grad=True)
    g = torch.randn(4, 7, generator=gen, dtype=torch.float64)
    got = torch.autograd.grad(_LpDistFn.apply(x, w, p, 3), (x, w), g)
    want = torch.autograd.grad(lp_dist_naive(x, w, p), (x, w), g)
    for a, b in zip(got, want):
        assert torch.allclose(a, b, rtol=1e-8, atol=1e-10)


def test_large_p_is_finite_in_float32() -> None:
    x = torch.rand(3, 50) * 20
    w = torch.randn(4, 50) * 20
    out = lp_dist(x, w, 100.0, 2)
    assert torch.isfinite(out).all()
    assert torch.allclose(out, lp_dist_naive(x.double(), w.double(), 100.0).float(), rtol=1e-4)


def test_chunk_size_bounds_elements() -> None:
    assert chunk_size(4096, 4096, 1 << 16) == 16
    assert chunk_size(10, 3, 1 << 16) == 3
    assert chunk_size(1 << 20, 5, 1 << 16) == 1


def test_mean_shift_running_mean_and_translation() -> None:
    ms = MeanShift(3, momentum=0.5)
    x = torch.tensor([[1.0, 2.0, 3.0], [3.0, 4.0, 5.0]])
    assert torch.allclose(ms(x), x - x.mean(0))
    assert torch.allclose(ms.running_mean, 0.5 * x.mean(0))
    ms.eval()
    assert torch.allclose(ms(x), x - 0.5 * x.mean(0))  # a translation: 1-Lipschitz in any norm
    assert not list(ms.parameters())


@pytest.mark.parametrize("layer,shape", [
    (L2Linear(6, 4), (6,)), (L2Linear(6, 4, normalisation="spectral", bjorck_iterations=3), (6,)),
    (L2Conv2d(1, 2, 3, stride=2, padding=1), (1, 8, 8)),
    (MultiL2NNNHead(6, 3), (6,)), (LinfDist(6, 4, bias=True), (6,)),
    (NormPool2d(2), (2, 4, 4)), (TwoSidedReLU(), (2, 3)), (MeanShift(6), (6,)),
], ids=repr)
def test_layers_export_with_normalisation_in_graph(layer: nn.Module, shape: tuple[int, ...]) -> None:
    layer.eval()
    x = torch.rand(3, *shape)
    ep = torch.export.export(layer, (x,), dynamic_shapes=({0: torch.export.Dim("b", min=1)},))
    assert torch.equal(ep.module()(x), layer(x))
    if isinstance(layer, (L2Linear, L2Conv2d)):
        targets = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
        assert any("sqrt" in t or "exp" in t for t in targets), targets  # normalisation computed in the graph
