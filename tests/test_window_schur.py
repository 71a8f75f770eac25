"""The window bound with top directions (certify/lipschitz/operator_norms/window_schur.py).

Truth: the exact norms of the layer (A) and of the layer with its padding ring free (V), from dense
float64 matrices.  The bound must lie above ‖V‖ ≥ ‖A‖ always, equal ‖V‖ within its margins when every
direction is kept (which pins the DFT sign, the normalisation, strides, dilation and groups), and stay
sound when the kept set is cut short (ties at the level τ included)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from certify.lipschitz import operator_norms as on
from certify.lipschitz.operator_norms import window_schur


def _matrix(fn, shape: tuple[int, ...]) -> torch.Tensor:  # type: ignore[no-untyped-def]
    n = math.prod(shape)
    return fn(torch.eye(n, dtype=torch.float64).view(n, *shape)).reshape(n, -1)


def exact_a(spec: on.ConvSpec) -> float:
    a = _matrix(lambda x: F.conv2d(x, spec.weight, None, spec.stride, spec.padding, spec.dilation, spec.groups),
                spec.in_shape)
    return float(torch.linalg.matrix_norm(a, 2))


def exact_v(spec: on.ConvSpec) -> float:
    c, h, w = spec.in_shape
    shape = (c, h + 2 * spec.padding[0], w + 2 * spec.padding[1])
    a = _matrix(lambda x: F.conv2d(x, spec.weight, None, spec.stride, 0, spec.dilation, spec.groups), shape)
    return float(torch.linalg.matrix_norm(a, 2))


def spec_of(cin: int, cout: int, k: tuple[int, int], s: tuple[int, int], p: int, d: int, groups: int,
            n: tuple[int, int], seed: int, mean: float = 0.0) -> on.ConvSpec:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(cout, cin // groups, *k, generator=g, dtype=torch.float64)
    w = w + mean * torch.randn(cout, cin // groups, 1, 1, generator=g, dtype=torch.float64)
    return on.ConvSpec(w, s, (p, p), (d, d), groups, (cin, *n))


def _upper(spec: on.ConvSpec) -> float:
    return on.conv_fourier_bound(spec).toeplitz


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 4), st.integers(2, 5), st.integers(1, 3), st.integers(1, 3), st.integers(1, 2),
       st.integers(1, 2), st.integers(0, 2), st.integers(1, 2), st.sampled_from([1, 2]), st.integers(2, 7),
       st.integers(2, 7), st.integers(0, 10_000))
def test_every_direction_kept_gives_the_free_ring_norm(cin_g: int, cout_g: int, k1: int, k2: int, s1: int, s2: int,
                                                      p: int, d: int, groups: int, n1: int, n2: int,
                                                      seed: int) -> None:
    if n1 + 2 * p < d * (k1 - 1) + 1 or n2 + 2 * p < d * (k2 - 1) + 1:
        return  # no output
    spec = spec_of(cin_g * groups, cout_g * groups, (k1, k2), (s1, s2), p, d, groups, (n1, n2), seed)
    upper = _upper(spec)
    if math.isinf(upper):
        return  # the window bound does not apply (grid too small for the window)
    bound = window_schur.window_schur_bound(spec, upper)
    free, layer = exact_v(spec), exact_a(spec)
    assert layer <= free * (1 + 1e-12)
    assert bound >= free * (1 - 1e-12)  # sound
    if math.isfinite(bound):
        assert bound <= free * 1.0001  # and exact up to its margins
    else:  # only when the scalar window bound is already at ‖V‖ (nothing to gain below `upper`)
        assert upper <= free * 1.0001


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 8), st.integers(2, 3), st.sampled_from([(1, 1), (2, 2), (1, 2)]), st.integers(4, 7),
       st.integers(0, 10_000), st.booleans())
def test_a_short_kept_set_stays_sound(rank: int, k: int, stride: tuple[int, int], n: int, seed: int,
                                      tie: bool) -> None:
    """R capped at 1–8 directions: the rest of every symbol is lumped at the level τ.  Sound (above ‖V‖)
    and never above the scalar window bound; with ``tie`` the channels come in identical pairs, so
    eigenvalues repeat and the cap falls between equal ones."""
    spec = spec_of(6, 6, (k, k), stride, 1, 1, 1, (n, n), seed, mean=0.5)
    if tie:
        w = spec.weight.clone()
        w[3:] = w[:3]
        spec = on.ConvSpec(w, spec.stride, spec.padding, spec.dilation, 1, spec.in_shape)
    upper = _upper(spec)
    if math.isinf(upper):
        return
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(window_schur, "SCHUR_MAX_RANK", rank)
        bound = window_schur.window_schur_bound(spec, upper)
    assert bound >= exact_v(spec) * (1 - 1e-12)
    assert math.isinf(bound) or bound <= upper


def test_resnet_like_8x8_layers_get_within_one_percent() -> None:
    """32 channels on an 8×8 window, random and with a strong kernel mean: the scalar window bound is
    0.5–3% above the layer, the refined one within 1% (and the analyser's rule picks it)."""
    for seed, mean in ((0, 0.0), (1, 0.6)):
        spec = spec_of(32, 32, (3, 3), (1, 1), 1, 1, 1, (8, 8), seed, mean)
        upper = _upper(spec)
        bound = window_schur.window_schur_bound(spec, upper)
        layer = exact_a(spec)
        assert layer <= bound <= 1.01 * layer
        assert bound < upper
        res = on.conv_l2(spec)
        assert res.bound >= layer and res.bound <= 1.01 * layer
        assert res.estimate <= layer * (1 + 1e-9) and res.bound <= 1.01 * res.estimate


def test_tiny_windows_take_the_exact_certificate_first() -> None:
    """4×4 windows: the dense certificate (exact up to 1e-4) before any Fourier bound; the estimate is
    the Lanczos value of the layer, ≤ its norm."""
    spec = spec_of(48, 48, (3, 3), (1, 1), 1, 1, 1, (4, 4), 3)
    res = on.conv_l2(spec)
    layer = exact_a(spec)
    assert res.method == "dense-cholesky"
    assert layer <= res.bound <= layer * 1.0002
    assert layer * (1 - 1e-4) <= res.estimate <= layer * (1 + 1e-9)


def test_refinement_is_skipped_where_it_cannot_apply() -> None:
    one = spec_of(3, 1, (3, 3), (1, 1), 1, 1, 1, (6, 6), 0)  # one output channel: the scalar bound is exact
    big = spec_of(2, 2, (3, 3), (1, 1), 1, 1, 1, (20, 20), 0)  # a 400-pixel window: no window bound
    assert math.isinf(window_schur.window_schur_bound(one, _upper(one)))
    assert math.isinf(window_schur.window_schur_bound(big, 10.0))
    assert math.isinf(window_schur.window_schur_bound(spec_of(4, 4, (3, 3), (1, 1), 1, 1, 1, (6, 6), 0), math.inf))
