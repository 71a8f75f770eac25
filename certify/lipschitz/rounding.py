"""Floating-point error model of the forward pass (``docs/soundness.md``).

Every op's own rounding is bounded by the standard model of floating-point
arithmetic, fl(a ∘ b) = (a ∘ b)(1 + δ) with |δ| ≤ u (Higham, *Accuracy and
Stability of Numerical Algorithms*, 2nd ed., §2.2), u = 2⁻²⁴ for float32:

- a correctly rounded elementwise op (add, mul, div, sqrt): ≤ u·|out|;
- a dot product of length n in any summation order, with or without FMA:
  ≤ γₙ·Σ|wᵢxᵢ|, γₙ = nu/(1 − nu) (Higham, Thm 3.5 and §3.1), so a linear
  layer or convolution errs by ≤ γₙ₊₁·(|W||x| + |b|) per output;
- library functions (exp, tanh, erf and what is built from them): ≤
  :data:`TRANSCENDENTAL_ULPS`·u·(|out| + |in|) per element — far above the
  few-ulp accuracy of glibc, SLEEF and CUDA's libdevice.

Convolutions computed by transform algorithms (Winograd, FFT), which cuDNN may
pick on GPUs, can err more than a direct sum; :data:`CONV_ALGORITHM_FACTOR`
multiplies the convolution bound on every device to cover them (Barabasz et
al., "Error analysis and improving the accuracy of Winograd convolution for
deep neural networks", ACM TOMS 2020, measure ≤ 10² × the direct error for
F(6,3)).  TF32 and reduced-precision autocast are switched off for every
forward pass behind a certificate.

Constants that the graph computes from its parameters (weight normalisation,
L2NNN's W/√b(W)) are recomputed at run time in float32, possibly by other
kernels; each is also evaluated in float64, and its relative recomputation
slack is ``max(DERIVED_FLOOR, DERIVED_FACTOR × ‖c₃₂ − c₆₄‖_F / max|c₆₄|)``: every
factor that uses it is inflated by (1 + slack), and the slack joins the op's
relative rounding.  This margin is measured, not proven; export models with
their weights materialised for a fully proven allowance.
"""

from __future__ import annotations

import math

import torch

#: ulps (relative to |out| + |in|) allowed per library function evaluation.
TRANSCENDENTAL_ULPS = 16.0
#: Multiplier on a convolution's dot-product bound for transform algorithms (Winograd, FFT).
CONV_ALGORITHM_FACTOR = 256.0
#: Smallest relative recomputation slack of a constant computed in the graph.
DERIVED_FLOOR = 1e-6
#: Multiplier on the observed float32-versus-float64 difference of such a constant.
DERIVED_FACTOR = 64.0
#: Slack when the float64 recomputation itself fails.
DERIVED_DEFAULT = 1e-3

#: Ops that only view, copy or rearrange a constant: parameters passed through them stay exact.
EXACT_CONSTANT_OPS = {
    "aten.t.default", "aten.permute.default", "aten.transpose.int", "aten.view.default", "aten.reshape.default",
    "aten._unsafe_view.default", "aten.flatten.using_ints", "aten.unsqueeze.default", "aten.squeeze.dim",
    "aten.squeeze.dims", "aten.squeeze.default", "aten.clone.default", "aten.detach.default", "aten.alias.default",
    "aten.contiguous.default", "aten.expand.default", "aten.slice.Tensor", "aten.select.int",
    "aten.lift_fresh_copy.default", "getitem", "aten.sym_size.int",
}


def unit_roundoff(t: object) -> float:
    """u of a tensor's dtype (half the machine epsilon); float32 for non-tensors."""
    dtype = t.dtype if isinstance(t, torch.Tensor) else torch.float32
    if isinstance(t, (tuple, list)) and t:
        return max(unit_roundoff(x) for x in t)
    if not dtype.is_floating_point:
        return 0.0
    return torch.finfo(dtype).eps / 2.0


def gamma(n: int, u: float) -> float:
    """γₙ = nu/(1 − nu); infinite when nu ≥ 1."""
    nu = n * u
    return nu / (1.0 - nu) if nu < 1.0 else math.inf


def vector_norm(t: torch.Tensor, norm: str) -> float:
    flat = t.detach().reshape(-1).to(torch.float64)
    if flat.numel() == 0:
        return 0.0
    value = float(flat.norm()) if norm == "l2" else float(flat.abs().max())
    return value * (1 + 1e-12)


def derived_slack(value32: object, value64: object) -> float:
    """Relative difference of a constant computed in its own dtype and in float64, times the factor."""
    if isinstance(value32, (tuple, list)):
        pairs = list(zip(value32, value64)) if isinstance(value64, (tuple, list)) else []
        return max([derived_slack(a, b) for a, b in pairs] or [DERIVED_DEFAULT])
    if not isinstance(value32, torch.Tensor) or not value32.is_floating_point():
        return 0.0
    a = value32.detach().to(torch.float64)
    b = torch.as_tensor(value64, device=a.device).detach().to(device=a.device, dtype=torch.float64)
    if a.shape != b.shape or not bool(torch.isfinite(a).all()):
        return DERIVED_DEFAULT
    scale = float(b.abs().max()) if b.numel() else 0.0
    if scale == 0.0:
        return 0.0 if float(a.abs().max() if a.numel() else 0.0) == 0.0 else DERIVED_DEFAULT
    # ‖δ‖_F bounds the change of every operator norm of the constant, and max|c| is below all of them
    return DERIVED_FACTOR * float((a - b).norm()) / scale
