"""Fourier bounds of convolutions (operator norms of convolutions as linear maps): above the exact norm, tight against the circulant,
and a re-check from the Fourier bound's μ (the on-disk cache: tests/test_lipschitz_cache.py)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from certify.lipschitz import analysis
from certify.lipschitz import operator_norms as on
from certify.lipschitz import analyse
from tests.helpers_lipschitz import loaded


def dense(fn, shape: tuple[int, ...]) -> torch.Tensor:  # type: ignore[no-untyped-def]
    x = torch.zeros(shape, dtype=torch.float64)
    return torch.autograd.functional.jacobian(fn, x).reshape(-1, x.numel())


def sigma(a: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(a, ord=2))


def exact_zero_padded(spec: on.ConvSpec) -> float:
    return sigma(dense(spec.apply, spec.in_shape))


def exact_circulant(spec: on.ConvSpec) -> float:
    """The strided circular convolution on the Fourier bound's grid, as a dense matrix."""
    (n1, n2), _ = on._grid(spec)
    k1, k2 = on._effective_kernel(spec)
    c = spec.in_shape[0]

    def fn(x: torch.Tensor) -> torch.Tensor:
        xp = F.pad(x.unsqueeze(0), (0, k2 - 1, 0, k1 - 1), mode="circular") if (k1, k2) != (1, 1) else x.unsqueeze(0)
        return F.conv2d(xp, spec.weight, None, spec.stride, 0, spec.dilation, spec.groups)[0]

    return sigma(dense(fn, (c, n1, n2)))


def make_spec(cin: int, cout: int, k: tuple[int, int], stride: tuple[int, int], pad: tuple[int, int],
              dil: tuple[int, int], groups: int, n: tuple[int, int], seed: int) -> on.ConvSpec:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(cout, cin // groups, *k, generator=g)
    return on.ConvSpec(w, stride, pad, dil, groups, (cin, *n))


CASES = [  # cin, cout, k, stride, pad, dilation, groups, n
    (2, 3, (3, 3), (1, 1), (1, 1), (1, 1), 1, (6, 6)),
    (2, 4, (3, 3), (2, 2), (1, 1), (1, 1), 1, (7, 7)),
    (4, 4, (3, 3), (1, 1), (2, 2), (2, 2), 2, (8, 8)),
    (3, 2, (2, 2), (2, 2), (0, 0), (1, 1), 1, (8, 8)),
    (3, 6, (5, 5), (3, 3), (2, 2), (1, 1), 3, (9, 9)),
    (2, 2, (1, 1), (2, 2), (0, 0), (1, 1), 1, (6, 6)),
    (4, 2, (3, 3), (1, 1), (4, 4), (1, 1), 1, (4, 4)),
    (2, 3, (3, 1), (1, 2), (1, 0), (1, 1), 1, (5, 8)),
    (3, 3, (1, 4), (1, 1), (0, 0), (1, 1), 1, (1, 12)),  # a conv1d as the rule sees it
    (4, 8, (3, 3), (2, 1), (1, 2), (1, 3), 4, (6, 7)),
]


@pytest.mark.parametrize("case", CASES)
def test_fourier_bound_is_above_exact_and_tight_against_the_circulant(case) -> None:  # type: ignore[no-untyped-def]
    spec = make_spec(*case, seed=sum(case[:2]))
    fb = on.conv_fourier_bound(spec)
    exact = exact_zero_padded(spec)
    circ = exact_circulant(spec)
    assert fb.bound >= exact
    assert fb.bound >= circ  # the certified circulant norm …
    assert fb.bound <= circ * 1.001  # … is the circulant norm (an equality in exact arithmetic)
    assert fb.estimate <= circ * (1 + 1e-9)
    res = on.conv_l2(spec)
    assert res.bound >= exact and res.estimate <= exact * (1 + 1e-6)
    assert res.bound <= fb.bound


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 4), st.integers(1, 4), st.integers(1, 3), st.integers(1, 3), st.integers(1, 3),
       st.integers(1, 2), st.integers(0, 2), st.integers(1, 2), st.sampled_from([1, 2]), st.integers(3, 8),
       st.integers(3, 8), st.integers(0, 10_000))
def test_fourier_bound_property(cin_g: int, cout_g: int, k1: int, k2: int, s1: int, s2: int, p: int, d: int,
                                groups: int, n1: int, n2: int, seed: int) -> None:
    cin, cout = cin_g * groups, cout_g * groups
    if n1 + 2 * p < d * (k1 - 1) + 1 or n2 + 2 * p < d * (k2 - 1) + 1:
        return  # no output
    spec = make_spec(cin, cout, (k1, k2), (s1, s2), (p, p), (d, d), groups, (n1, n2), seed)
    fb = on.conv_fourier_bound(spec)
    exact = exact_zero_padded(spec)
    assert fb.bound >= exact and fb.toeplitz >= exact
    assert fb.bound <= exact_circulant(spec) * 1.001
    assert on.conv_l2(spec).bound >= exact


def exact_free_ring(spec: on.ConvSpec) -> float:
    """‖V‖ in float64: the convolution of the padded input with the padding ring free (no padding)."""
    c, h, w = spec.in_shape
    padded = (c, h + 2 * spec.padding[0], w + 2 * spec.padding[1])
    return sigma(dense(lambda x: F.conv2d(x.unsqueeze(0), spec.weight, None, spec.stride, 0, spec.dilation,
                                          spec.groups)[0], padded))


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.integers(1, 2), st.integers(1, 2),
       st.integers(0, 2), st.integers(1, 2), st.integers(3, 8), st.integers(3, 8), st.integers(0, 10_000))
def test_the_window_bound_is_the_free_ring_norm_for_one_output_channel(cin: int, k1: int, k2: int, s1: int, s2: int,
                                                                       p: int, d: int, n1: int, n2: int,
                                                                       seed: int) -> None:
    """With one output channel the per-frequency symbol is a number, so the window bound loses nothing
    but its margins: it equals ‖V‖ (the layer with its padding ring free) to 0.1%, and is above the
    layer.  This pins the Toeplitz matrix's normalisation (strides and dilation included)."""
    if n1 + 2 * p < d * (k1 - 1) + 1 or n2 + 2 * p < d * (k2 - 1) + 1:
        return
    spec = make_spec(cin, 1, (k1, k2), (s1, s2), (p, p), (d, d), 1, (n1, n2), seed)
    fb = on.conv_fourier_bound(spec)
    if math.isinf(fb.toeplitz):
        return  # the reduced grid is too small for the window (the circular bound stands)
    free = exact_free_ring(spec)
    assert free * (1 - 1e-9) <= fb.toeplitz <= free * 1.001
    assert fb.toeplitz >= exact_zero_padded(spec)


def test_the_window_bound_tightens_small_grids_of_resnet_like_layers() -> None:
    """64 channels on 4×4 and 8×8 windows, kernels with a strong mean (as trained ones have): the
    circular bound is 8–30% above the layer, the window bound a few percent at most."""
    g = torch.Generator().manual_seed(0)
    for n in (4, 8):
        w = torch.randn(64, 64, 3, 3, generator=g, dtype=torch.float64) / 24
        w = w + 0.5 * torch.randn(64, 64, 1, 1, generator=g, dtype=torch.float64) / 8
        spec = on.ConvSpec(w, (1, 1), (1, 1), (1, 1), 1, (64, n, n))
        fb, exact = on.conv_fourier_bound(spec), exact_zero_padded(spec)
        assert fb.bound > 1.08 * exact
        assert exact <= fb.toeplitz <= (1.06 if n == 4 else 1.01) * exact
        assert on.conv_l2(spec).method in ("fourier-window", "dense-cholesky")


def test_fourier_bound_survives_a_bad_hint() -> None:
    spec = make_spec(3, 5, (3, 3), (1, 1), (1, 1), (1, 1), 1, (7, 7), seed=3)
    fresh = on.conv_fourier_bound(spec)
    for hint in (1e-6, fresh.mu * 0.99, fresh.mu):
        assert on.conv_fourier_bound(spec, hint=hint).bound >= exact_circulant(spec)


@pytest.mark.parametrize("mode", ["circular", "reflect", "replicate", "zeros"])
def test_padding_modes_through_the_analyser(mode: str) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, padding_mode=mode), nn.Flatten(), nn.Linear(3 * 36, 4))
    rep = analyse(loaded(net, (2, 6, 6)), norm="l2")
    assert rep.verified
    jac = dense(lambda x: net(x.float().unsqueeze(0))[0].double(), (2, 6, 6))
    assert rep.global_bound >= sigma(jac)


def _cnn(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2, padding=1),
                         nn.ReLU(), nn.Flatten(), nn.Linear(4 * 16, 3))


@pytest.mark.parametrize("case", CASES + [(64, 64, (3, 3), (1, 1), (1, 1), (1, 1), 1, (4, 4)),
                                  (32, 64, (3, 3), (2, 2), (1, 1), (1, 1), 1, (8, 8))])
def test_a_recheck_from_the_hint_gives_the_same_bound_bit_for_bit(case) -> None:  # type: ignore[no-untyped-def]
    """A re-check at the first run's μ and power estimate reproduces it exactly: the same bound, method
    and estimate (the bound depends on μ only, not on how μ was found; 4×4 and 8×8 layers take the
    dense certificate, whose choice starts from the estimate)."""
    cin, cout, k, stride, pad, dil, groups, n = case
    spec = make_spec(cin, cout, k, stride, pad, dil, groups, n, seed=11)
    first = on.conv_l2(spec)
    again = on.conv_l2(spec, hint=first.hint, estimate=first.power)
    assert (again.bound, again.method, again.estimate, again.hint) == (first.bound, first.method, first.estimate,
                                                                       first.hint)
    if cin * n[0] * n[1] <= 2048:
        assert first.bound >= exact_zero_padded(spec)


def test_progress_callback_reaches_the_end(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LIPCERT_CACHE_DIR", str(tmp_path))
    seen: list[tuple[int, int]] = []
    analysis._CACHE.clear()
    rep = analyse(loaded(_cnn(2), (1, 8, 8)), norm="l2", progress=lambda d, t: seen.append((d, t)))
    assert rep.verified and seen and seen[-1][0] == seen[-1][1]
    assert all(0 <= d <= t for d, t in seen)


@pytest.mark.parametrize("k", [-1000, -700, -300, 0, 300, 600])
def test_kernels_of_any_magnitude_scale_their_bound_exactly_and_never_reach_zero(k: int) -> None:
    """Squares of 1e-200 underflow to 0 and of 1e160 overflow: the kernel is scaled by a power of two
    first, so W·2ᵏ gets exactly 2ᵏ times W's bound (rounded up to the smallest normal number when
    below it), never 0 and never an error; the zero kernel gets 0."""
    spec = make_spec(4, 4, (3, 3), (1, 1), (1, 1), (1, 1), 1, (5, 5), seed=5)
    base = on.conv_l2(spec)
    scaled = on.conv_l2(on.ConvSpec(torch.ldexp(spec.weight, torch.tensor(k)), (1, 1), (1, 1), (1, 1), 1, (4, 5, 5)))
    want = math.ldexp(base.bound, k)
    assert scaled.bound == max(want, 2.2250738585072014e-308) and scaled.bound > 0
    assert scaled.method == base.method
    zero = on.conv_l2(on.ConvSpec(torch.zeros(4, 4, 3, 3), (1, 1), (1, 1), (1, 1), 1, (4, 5, 5)))
    assert (zero.bound, zero.method) == (0.0, "zero")


@pytest.mark.parametrize("k", [-1000, -700, -300, 0, 300, 600])
def test_dense_gram_bounds_of_any_magnitude_scale_exactly(k: int) -> None:
    m = torch.randn(5, 7, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    base = on.gram_bound(m)
    assert base >= sigma(m)
    assert on.gram_bound(torch.ldexp(m, torch.tensor(k))) == max(math.ldexp(base, k), 2.2250738585072014e-308)
    assert on.gram_bound(torch.zeros(3, 2)) == 0.0
