"""The dense Cholesky certificate of a zero-padded convolution's exact L2 norm: above the dense
float64 SVD norm on every shape (stride, padding, dilation, groups), within 0.1% of it, and used
by conv_l2 on small grids where the Fourier (circular) bound is loose."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from certify.errors import BadInputError
from certify.lipschitz import operator_norms as on
from certify.lipschitz.operator_norms import conv_exact
from tests.test_conv_bounds import dense, exact_zero_padded, make_spec


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 4), st.integers(1, 4), st.integers(1, 3), st.integers(1, 3), st.integers(1, 3),
       st.integers(1, 2), st.integers(0, 2), st.integers(1, 2), st.sampled_from([1, 2]), st.integers(1, 7),
       st.integers(1, 7), st.sampled_from([1e-3, 1.0, 1e3]), st.integers(0, 10_000))
def test_dense_bound_is_above_the_svd_norm_and_tight(cin_g: int, cout_g: int, k1: int, k2: int, s1: int, s2: int,
                                                     p: int, d: int, groups: int, n1: int, n2: int, scale: float,
                                                     seed: int) -> None:
    if n1 + 2 * p < d * (k1 - 1) + 1 or n2 + 2 * p < d * (k2 - 1) + 1:
        return  # no output
    spec = make_spec(cin_g * groups, cout_g * groups, (k1, k2), (s1, s2), (p, p), (d, d), groups, (n1, n2), seed)
    spec.weight = spec.weight * scale
    exact = exact_zero_padded(spec)
    res = conv_exact.conv_dense_bound(spec, max_flops=1e12)
    assert res is not None
    bound, estimate = res
    assert bound >= exact
    assert bound <= exact * 1.001 + 1e-6 * float(spec.weight.abs().max())  # the allowance, on a zero map too
    assert estimate <= exact * (1 + 1e-9)


@pytest.mark.parametrize("cin,cout,stride,n", [(3, 5, 1, 5), (6, 2, 2, 6), (2, 7, 2, 5)])
def test_dense_gram_is_the_layers_gram(cin: int, cout: int, stride: int, n: int) -> None:
    spec = make_spec(cin, cout, (3, 3), (stride, stride), (1, 1), (1, 1), 1, (n, n), seed=cin + cout)
    a = dense(spec.apply, spec.in_shape)
    g, input_side, _ = conv_exact.dense_gram(spec)
    assert input_side == (a.shape[1] <= a.shape[0])
    # dense_gram orders rows pixel-major with channels inside; the Jacobian is channel-major
    if input_side:
        c, h, w = spec.in_shape
        perm = torch.arange(c * h * w).view(c, h * w).T.reshape(-1)
        ref = (a.T @ a)[perm][:, perm]
    else:
        o = spec.weight.shape[0]
        q = a.shape[0] // o
        perm = torch.arange(o * q).view(o, q).T.reshape(-1)
        ref = (a @ a.T)[perm][:, perm]
    torch.testing.assert_close(g, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cin,cout,stride,n", [(32, 32, 1, 4), (16, 32, 2, 8), (16, 16, 1, 8), (32, 32, 1, 2)])
def test_small_grid_layers_are_within_one_percent(cin: int, cout: int, stride: int, n: int) -> None:
    """ResNet-shaped layers on small grids (3×3, padding 1, BatchNorm-like scaled channels): the
    bound conv_l2 returns is ≤ 1.01 × the exact norm (the Fourier bound alone can be ~12% above)."""
    g = torch.Generator().manual_seed(n + cin)
    w = torch.randn(cout, cin, 3, 3, generator=g) * (0.5 + torch.rand(cout, 1, 1, 1, generator=g)) + 0.05
    spec = on.ConvSpec(w, (stride, stride), (1, 1), (1, 1), 1, (cin, n, n))
    exact = exact_zero_padded(spec)
    res = on.conv_l2(spec)
    assert exact <= res.bound <= exact * 1.01
    assert res.estimate <= exact * (1 + 1e-9)


def test_the_work_limit_comes_from_the_environment(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    spec = make_spec(8, 8, (3, 3), (1, 1), (1, 1), (1, 1), 1, (3, 3), seed=1)
    spec.weight = spec.weight + 0.3  # a strong DC response: circular padding is far above zero padding
    monkeypatch.setenv("LIPCERT_CONV_EXACT_FLOPS", "0")
    off = on.conv_l2(spec)
    monkeypatch.setenv("LIPCERT_CONV_EXACT_FLOPS", "1e12")
    exact = on.conv_l2(spec)
    assert off.method != "dense-cholesky" and exact.method == "dense-cholesky"
    assert exact_zero_padded(spec) <= exact.bound < off.bound
    assert conv_exact.conv_dense_bound(spec, max_flops=1.0) is None
    for bad in ("-1", "lots", "nan"):
        monkeypatch.setenv("LIPCERT_CONV_EXACT_FLOPS", bad)
        with pytest.raises(BadInputError, match="LIPCERT_CONV_EXACT_FLOPS must be a number"):
            on.conv_l2(spec)
