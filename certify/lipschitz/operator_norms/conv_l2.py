"""A convolution's guaranteed L2 bound: the smallest of

- on output windows of ≤ 16 pixels (ResNets' 4×4 stage), first, the dense Cholesky certificate of
  the exact layer (:mod:`.conv_exact`; side³/3 ≤ ``$LIPCERT_CONV_EXACT_FLOPS`` or
  LIPSCHITZ_CONV_DENSE_MAX_FLOPS, its CUDA value on a GPU), seeded by the layer's Lanczos value:
  every Fourier bound frees the padding ring, which costs 2–3% there;
- the Fourier bound (:mod:`.fourier`, always; on small output windows also its window bound, which
  sees that the window cannot concentrate on the peak frequency);
- [L2NNN]'s kernel bound (when it can win);
- where that is more than 0.5% above the estimate: the window bound with top directions
  (:mod:`.window_schur`, small windows), then the dense certificate (when affordable), else the
  banded one (:mod:`.cholesky`, SciPy present, more than 1% above).

Beside it, an estimate of the layer itself: Lanczos on AᵀA from the Fourier bound's top singular
vector, the value ‖Ax‖/‖x‖ at its Ritz vector (raised by the dense certificate's Ritz vector when it
runs unseeded).
"""
from __future__ import annotations

import math
import os

import torch

from ...defaults import (
    LIPSCHITZ_CONV_DENSE_MAX_FLOPS,
    LIPSCHITZ_CONV_DENSE_MAX_FLOPS_CUDA,
    LIPSCHITZ_CONV_EXACT_MAX_FLOPS,
)
from ...errors import BadInputError
from .cholesky import conv_cholesky_bound
from .conv_exact import conv_dense_bound, dense_side
from .convolution import ConvSpec, conv_l2nnn_bound, conv_power_estimate_from, effective_kernel
from .dense import normalised, scaled_back
from .fourier import _window, conv_fourier_bound
from .window_schur import window_schur_bound


#: The window bound with top directions and the exact certificates run when the bound so far is more
#: than this far above the estimate.
EXACT_TRIGGER = 5e-3
#: Output windows of at most this many pixels go to the dense certificate first (when affordable).
DENSE_FIRST_PIXELS = 16


def dense_max_flops(device: torch.device | str = "cpu") -> float:
    """The dense certificate's work limit: ``$LIPCERT_CONV_EXACT_FLOPS`` (≥ 0; 0 turns it off), else
    LIPSCHITZ_CONV_DENSE_MAX_FLOPS (LIPSCHITZ_CONV_DENSE_MAX_FLOPS_CUDA on a CUDA device)."""
    env = os.environ.get("LIPCERT_CONV_EXACT_FLOPS")
    if env is None or not env.strip():
        return LIPSCHITZ_CONV_DENSE_MAX_FLOPS_CUDA if torch.device(device).type == "cuda" else LIPSCHITZ_CONV_DENSE_MAX_FLOPS
    try:
        value = float(env)
    except ValueError:
        value = -1.0
    if not (value >= 0 and math.isfinite(value)):
        raise BadInputError(f"LIPCERT_CONV_EXACT_FLOPS must be a number ≥ 0 (e.g. 3e10), got {env!r}")
    return value


def conv_l2_bound(spec: ConvSpec, estimate: float) -> float:
    """The smallest guaranteed L2 bound available (see the module docs)."""
    return conv_l2(spec, estimate=estimate).bound


def _cholesky_flops(spec: ConvSpec) -> float:
    """About d·band² for the banded certificate (d inputs; the band spans k_eff − 1 rows of the
    shorter spatial side, times the channels)."""
    c, h, w = spec.in_shape
    k1, k2 = effective_kernel(spec)
    side, ke = (min(h, w), max(k1, k2))
    band = ((ke - 1) * (side + 1) + 1) * c
    return float(c * h * w) * band * band


class ConvL2:
    """A convolution's guaranteed L2 bound, the estimate of the layer's own norm (the power iteration's,
    raised by the dense certificate's Ritz value when it ran), ``hint``: the μ of the Fourier bound, and
    ``power``: the power-iteration value the choice of certificates was made from.  ``conv_l2(spec,
    hint=hint, estimate=power)`` gives the same bound, method and estimate again (a re-check that skips
    the search for μ)."""

    def __init__(self, bound: float, estimate: float, hint: float, method: str, power: float):
        self.bound, self.estimate, self.hint, self.method, self.power = bound, estimate, hint, method, power


def conv_l2(spec: ConvSpec, hint: float | None = None, estimate: float | None = None) -> ConvL2:
    """The Fourier bound (always), [L2NNN]'s kernel bound, and, when the Fourier bound is above the
    estimate (small inputs, where zero padding differs from circular padding) and the problem is
    small, the dense (else the banded) Cholesky certificate; the smallest wins.  ``estimate``: a known
    power-iteration value of the layer (else one is computed, warm-started from the Fourier bound).

    The kernel is first scaled by a power of two (exact) so its largest entry lies in [½, 1): the
    squares and Gram matrices inside can neither underflow to 0 nor overflow, whatever the weights'
    magnitude; the results are scaled back exactly (a bound that would fall below the smallest normal
    number is rounded up to it).  ``hint`` is in the scaled units (it only ever comes from here)."""
    if not spec.weight.numel() or float(spec.weight.abs().max()) == 0.0:  # the zero map
        return ConvL2(0.0, 0.0, 0.0, "zero", 0.0)
    weight, exponent = normalised(spec.weight)
    if not exponent:
        return _conv_l2(spec, hint, estimate)
    spec = ConvSpec(weight, spec.stride, spec.padding, spec.dilation, spec.groups, spec.in_shape)
    res = _conv_l2(spec, hint, None if estimate is None else math.ldexp(estimate, -exponent))
    return ConvL2(scaled_back(res.bound, exponent), scaled_back(res.estimate, exponent), res.hint, res.method,
                  scaled_back(res.power, exponent))


def _conv_l2(spec: ConvSpec, hint: float | None, estimate: float | None) -> ConvL2:
    k1, k2 = effective_kernel(spec)
    if (k1, k2) == (1, 1):
        # each input entry meets the kernel at most once: ‖layer‖ ≤ ‖W‖ (per group), a 1×1 grid
        spec = ConvSpec(spec.weight, (1, 1), (0, 0), (1, 1), spec.groups, (spec.in_shape[0], 1, 1))
    limit = dense_max_flops(spec.weight.device)
    window = _window(spec)
    dense_flops = dense_side(spec) ** 3 / 3
    if window is not None and window[0] * window[1] <= DENSE_FIRST_PIXELS and dense_flops <= limit:
        # a tiny output window: freeing the padding ring (every Fourier bound) costs 2-3%, so the exact
        # certificate, seeded by the layer's Lanczos value, comes first
        if estimate is None:
            estimate = conv_power_estimate_from(spec, None)
        exact = conv_dense_bound(spec, estimate, limit, seeded=True)
        if exact is not None:
            # hint: any positive number (this path does not read it)
            return ConvL2(exact[0], max(estimate, exact[1]), estimate * estimate, "dense-cholesky", estimate)
        dense_flops = math.inf  # tried: not again below
    fb = conv_fourier_bound(spec, hint)
    if estimate is None:
        estimate = conv_power_estimate_from(spec, fb.start)
    power = estimate
    bound, method = (fb.bound, "fourier") if fb.bound <= fb.toeplitz else (fb.toeplitz, "fourier-window")
    if bound > estimate * (1 + EXACT_TRIGGER) and math.isfinite(fb.toeplitz):
        refined = window_schur_bound(spec, bound)
        if refined < bound:
            bound, method = refined, "window-schur"
    k1, k2 = effective_kernel(spec)
    factor = math.ceil(k1 / spec.stride[0]) * math.ceil(k2 / spec.stride[1])
    rows = float(spec.weight.flatten(1).norm(dim=1).max()) if spec.weight.numel() else 0.0
    # [L2NNN] ≥ √factor·(largest row norm of the flattened kernel): skip it when it cannot win
    l2nnn = conv_l2nnn_bound(spec) if math.sqrt(factor) * rows < bound else math.inf
    if l2nnn < bound:
        bound, method = l2nnn, "l2nnn"
    if bound > estimate * (1 + EXACT_TRIGGER) and dense_flops <= limit:
        exact = conv_dense_bound(spec, estimate, limit, seeded=True)
        if exact is not None:
            estimate = max(estimate, exact[1])
            if exact[0] < bound:
                bound, method = exact[0], "dense-cholesky"
    elif bound > estimate * 1.01 and _cholesky_flops(spec) <= LIPSCHITZ_CONV_EXACT_MAX_FLOPS:
        cert = conv_cholesky_bound(spec, estimate)
        if cert is not None and cert < bound:
            bound, method = cert, "cholesky"
    return ConvL2(bound, estimate, fb.mu, method, power)
