"""Dense matrices: the exact ℓ∞→ℓ∞ norm, guaranteed L2 bounds (Gram iteration, Delattre et al., ICML
2023, min'ed with [L2NNN] eq. (2) and the Frobenius norm) and power-iteration estimates.

``ROUNDING_SLACK`` is the relative allowance every ``*_bound`` of :mod:`certify.lipschitz.operator_norms`
adds for float64 rounding.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ...defaults import LIPSCHITZ_GRAM_ITERATIONS, LIPSCHITZ_POWER_ITERATIONS

#: Relative allowance for float64 rounding in a computed bound (far above the
#: ~1e-13 the analyses give, far below anything that matters for a radius).
ROUNDING_SLACK = 1e-9


def linf_matrix_norm(m: torch.Tensor) -> float:
    """max_i Σ_j |M_ij| (exact ℓ∞→ℓ∞ operator norm), summed in float64."""
    return float(m.detach().double().abs().sum(dim=-1).max()) * (1 + ROUNDING_SLACK)


def b_bound(m: torch.Tensor) -> float:
    """√b(W), b(W) = min(r(WᵀW), r(WWᵀ)), r = max absolute row sum ([L2NNN] eq. (2))."""
    w = m.detach().double()
    a = w.abs()
    r1 = float((a.T @ (a @ torch.ones(a.shape[1], dtype=a.dtype, device=a.device))).max())
    r2 = float((a @ (a.T @ torch.ones(a.shape[0], dtype=a.dtype, device=a.device))).max())
    return math.sqrt(min(r1, r2)) * (1 + ROUNDING_SLACK)


#: The smallest positive normal float64: an upper bound of any norm that scales below it.
TINY = 2.2250738585072014e-308


def normalised(t: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(t·2^−e, e) with the largest |entry| of the result in [½, 1) (exact: a power of two), so squares and
    Gram matrices of it can neither underflow to 0 nor overflow; (t, 0) for an all-zero or empty t."""
    peak = float(t.abs().max()) if t.numel() else 0.0
    exponent = math.frexp(peak)[1] if peak > 0 else 0
    if exponent:
        t = torch.ldexp(t, torch.tensor(-exponent, device=t.device))
    return t, exponent


def scaled_back(value: float, exponent: int) -> float:
    """value·2^exponent, exact unless it leaves the normal range: rounded up to :data:`TINY` below it
    (an upper bound stays one), inf above."""
    if not value > 0 or value == math.inf or not exponent:
        return value
    try:
        return max(math.ldexp(value, exponent), TINY)
    except OverflowError:
        return math.inf


def gram_bound(m: torch.Tensor, iterations: int = LIPSCHITZ_GRAM_ITERATIONS) -> float:
    """Guaranteed σ_max(M) by Gram iteration (rescaled each step to avoid overflow).  M is first scaled
    by a power of two (:func:`normalised`), so its squares cannot underflow to 0."""
    w, exponent = normalised(m.detach().double())
    if not w.numel() or float(w.abs().max()) == 0.0:
        return 0.0
    return scaled_back(_gram_bound(w, iterations), exponent)


def _gram_bound(m: torch.Tensor, iterations: int) -> float:
    g = m
    if g.shape[0] > g.shape[1]:
        g = g.T
    fro = float(torch.linalg.matrix_norm(g))
    if fro == 0.0:
        return 0.0
    g = g @ g.T  # smaller side, symmetric PSD from here on
    log_scale = 0.0
    power = 2.0
    for _ in range(iterations):
        norm = float(torch.linalg.matrix_norm(g))
        if norm == 0.0:
            return 0.0
        g = g / norm
        log_scale = 2.0 * (log_scale + math.log(norm))
        g = g @ g
        power *= 2.0
    final = float(torch.linalg.matrix_norm(g))
    bound = math.exp((math.log(final) + log_scale) / power) if final > 0 else 0.0
    return min(bound * (1 + ROUNDING_SLACK), fro * (1 + ROUNDING_SLACK), b_bound(m))


def power_iteration(apply, apply_t, shape: tuple[int, ...], iterations: int = LIPSCHITZ_POWER_ITERATIONS,
                    dtype: torch.dtype = torch.float64, seed: int = 0,
                    device: torch.device | str = "cpu") -> float:
    """σ_max estimate of a linear map (``apply``) given its adjoint (``apply_t``), on ``device``."""
    gen = torch.Generator(device=device).manual_seed(seed)
    v = torch.randn(shape, generator=gen, dtype=dtype, device=device)
    v /= v.norm()
    sigma = 0.0
    for _ in range(iterations):
        u = apply(v)
        sigma = float(u.norm())
        if sigma == 0.0:
            return 0.0
        v = apply_t(u)
        v = v / v.norm()
    return sigma


def matrix_power_estimate(m: torch.Tensor, iterations: int = LIPSCHITZ_POWER_ITERATIONS) -> float:
    w = m.detach().double()
    return power_iteration(lambda v: w @ v, lambda u: w.T @ u, (w.shape[1],), iterations, device=w.device)


def lanczos_top(apply: Callable[[torch.Tensor], torch.Tensor], v: torch.Tensor, steps: int,
                tol: float) -> tuple[float, torch.Tensor]:
    """Lanczos with full reorthogonalisation on a symmetric operator ``apply`` from the unit vector
    ``v`` (any shape; its dtype is the working precision), stopping early when the new direction's
    norm is ≤ ``tol`` × the largest |α|: (top Ritz value, its Ritz vector, shaped like ``v``)."""
    shape, dev = v.shape, v.device
    m = max(1, min(steps, v.numel()))
    q = torch.zeros((m, v.numel()), dtype=v.dtype, device=dev)
    alpha: list[float] = []
    beta: list[float] = []
    q[0] = v.flatten()
    for j in range(m):
        w = apply(q[j].view(shape)).flatten()
        alpha.append(float(q[j] @ w))
        for _ in range(2):
            w = w - q[:j + 1].T @ (q[:j + 1] @ w)
        nrm = float(w.norm())
        if j + 1 == m or not nrm > tol * max(abs(a) for a in alpha):
            break
        beta.append(nrm)
        q[j + 1] = w / nrm
    k = len(alpha)
    tri = torch.diag(torch.tensor(alpha, dtype=torch.float64, device=dev))
    if k > 1:
        off = torch.tensor(beta[:k - 1], dtype=torch.float64, device=dev)
        tri += torch.diag(off, 1) + torch.diag(off, -1)
    vals, vecs = torch.linalg.eigh(tri)
    return float(vals[-1]), (vecs[:, -1].to(v.dtype) @ q[:k]).view(shape)
