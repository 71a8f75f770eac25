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

Transform algorithms (Winograd, FFT) can err more than a direct sum, and TF32
or reduced-precision autocast far more: every forward pass behind a
certificate runs under :func:`certify.device.certificate_precision`, which
switches off cuDNN (and its TF32), NNPACK, autocast and TF32 matmuls, so that
convolutions and matmuls are direct (GEMM) sums covered by γₙ.

Constants that the graph computes from its parameters (weight normalisation,
L2NNN's W/√b(W)) are evaluated once, by the analysis, and the certified
forward pass (:mod:`.forward`) reuses exactly those values: the bounds are
computed from the numbers that run.
"""

from __future__ import annotations

import math

import torch

from ..threat import Norm

#: ulps (relative to |out| + |in|) allowed per library function evaluation.
TRANSCENDENTAL_ULPS = 16.0


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


def vector_norm(t: torch.Tensor, norm: Norm) -> float:
    """‖t‖ in ``norm``, computed in float64 and rounded up: the float64 sum of n squares errs by
    ≤ γₙ₊₁ relative (and the root halves it), the maximum is exact."""
    flat = t.detach().reshape(-1).to(torch.float64)
    if flat.numel() == 0:
        return 0.0
    if norm is Norm.LINF:
        return float(flat.abs().max())
    return float(flat.norm()) * (1 + gamma(flat.numel() + 2, 2.0 ** -53)) * (1 + 2.0 ** -52)
