"""Guaranteed operator norms of linear layers and convolutions (SCIENCE §2).

Every ``*_bound`` function returns an upper bound that holds in exact
arithmetic and is inflated by a documented rounding allowance; every
``*_estimate`` function returns a power-iteration value (a lower estimate,
never used to decide a certificate).

- Dense matrices, L2: Gram iteration (Delattre et al., ICML 2023),
  ``σ₁(W)^(2^t) ≤ ‖G_t‖_F`` with ``G_{t+1} = G_tᵀ G_t``, min'ed with
  ``√b(W)`` of [L2NNN] eq. (2) and the Frobenius norm.
- Convolutions, L2, two guaranteed bounds, the smaller wins:

  * the circulant bound: a zero-padded, strided convolution on an n×n input
    is a restriction of the circular convolution on an (n+2p)×(n+2p) grid,
    whose norm is the largest σ of the kernel's Fourier matrices over that
    grid's frequencies (computed by SVD, plus a rounding allowance);
  * the Cholesky certificate (small inputs, SciPy present): the exact conv
    matrix A is built sparsely, M = AᵀA is banded, and a successful banded
    Cholesky factorisation of μI − M proves λ_max(M) ≤ μ.  μ starts just
    above the power-iteration value, so the bound is within a fraction of
    a percent of the true norm.

- ℓ∞→ℓ∞: the largest absolute row sum, exact for dense matrices; for a
  convolution, the largest per-output-channel kernel ℓ1 norm (exact as soon
  as one output sees its whole window).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..defaults import (
    LIPSCHITZ_CONV_EXACT_MAX_BAND_ENTRIES,
    LIPSCHITZ_GRAM_ITERATIONS,
    LIPSCHITZ_POWER_ITERATIONS,
)

#: Relative allowance for float64 rounding in a computed bound (far above the
#: ~1e-13 the analyses give, far below anything that matters for a radius).
ROUNDING_SLACK = 1e-9


# --------------------------------------------------------------------------- dense matrices


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


def gram_bound(m: torch.Tensor, iterations: int = LIPSCHITZ_GRAM_ITERATIONS) -> float:
    """Guaranteed σ_max(M) by Gram iteration (rescaled each step to avoid overflow)."""
    g = m.detach().double()
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


# --------------------------------------------------------------------------- convolutions


class ConvSpec:
    """A 2-D convolution ``x ↦ conv2d(x, weight, stride, padding, dilation, groups)`` on C×H×W inputs."""

    def __init__(self, weight: torch.Tensor, stride, padding, dilation, groups: int,
                 in_shape: tuple[int, int, int]):  # type: ignore[no-untyped-def]
        self.weight = weight.detach().double()
        self.stride = tuple(stride)
        self.padding = tuple(padding)
        self.dilation = tuple(dilation)
        self.groups = int(groups)
        self.in_shape = tuple(int(s) for s in in_shape)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x.unsqueeze(0), self.weight, None, self.stride, self.padding, self.dilation,
                        self.groups).squeeze(0)

    def apply_t(self, y: torch.Tensor) -> torch.Tensor:
        x = torch.zeros(self.in_shape, dtype=torch.float64, device=self.weight.device, requires_grad=True)
        with torch.enable_grad():
            out = self.apply(x)
            (g,) = torch.autograd.grad(out, x, y)
        return g


def conv_linf_bound(spec: ConvSpec) -> float:
    return float(spec.weight.abs().flatten(1).sum(1).max()) * (1 + ROUNDING_SLACK)


def conv_l2nnn_bound(spec: ConvSpec) -> float:
    """[L2NNN]: √(⌈K₁/S₁⌉⌈K₂/S₂⌉)·‖kernel‖ with ‖·‖ the guaranteed σ of the flattened kernel."""
    k1, k2 = _effective_kernel(spec)
    factor = math.ceil(k1 / spec.stride[0]) * math.ceil(k2 / spec.stride[1])
    per_group = spec.weight.shape[0] // spec.groups
    norms = [gram_bound(spec.weight[g * per_group:(g + 1) * per_group].flatten(1)) for g in range(spec.groups)]
    return math.sqrt(factor) * max(norms)


def _effective_kernel(spec: ConvSpec) -> tuple[int, int]:
    k1, k2 = spec.weight.shape[-2:]
    return (spec.dilation[0] * (k1 - 1) + 1, spec.dilation[1] * (k2 - 1) + 1)


def conv_circulant_bound(spec: ConvSpec) -> float:
    """Norm of the circular convolution on the padded grid (≥ the zero-padded, strided conv)."""
    _, h, w = spec.in_shape
    n1, n2 = h + 2 * spec.padding[0], w + 2 * spec.padding[1]
    k1, k2 = _effective_kernel(spec)
    n1, n2 = max(n1, k1), max(n2, k2)
    kernel = _dilated(spec.weight, spec.dilation)
    per_group = kernel.shape[0] // spec.groups
    best = 0.0
    for g in range(spec.groups):
        kg = kernel[g * per_group:(g + 1) * per_group]
        freq = torch.fft.fft2(kg, s=(n1, n2))  # cout × cin × n1 × n2
        mats = freq.permute(2, 3, 0, 1).reshape(-1, kg.shape[0], kg.shape[1])
        sig = torch.linalg.matrix_norm(mats, ord=2)
        fro = torch.linalg.matrix_norm(mats)
        best = max(best, float((sig + 1e-12 * fro).max()))
    return best * (1 + 1e-7)


def _dilated(weight: torch.Tensor, dilation: tuple[int, ...]) -> torch.Tensor:
    if dilation == (1, 1):
        return weight
    o, i, k1, k2 = weight.shape
    out = weight.new_zeros(o, i, dilation[0] * (k1 - 1) + 1, dilation[1] * (k2 - 1) + 1)
    out[:, :, :: dilation[0], :: dilation[1]] = weight
    return out


def conv_power_estimate(spec: ConvSpec, iterations: int = LIPSCHITZ_POWER_ITERATIONS) -> float:
    return power_iteration(spec.apply, spec.apply_t, spec.in_shape, iterations, device=spec.weight.device)


def conv_l2_bound(spec: ConvSpec, estimate: float) -> float:
    """The smallest guaranteed L2 bound available (see the module docs)."""
    bound = min(conv_circulant_bound(spec), conv_l2nnn_bound(spec))
    cert = conv_cholesky_bound(spec, estimate)
    return min(bound, cert) if cert is not None else bound


# --------------------------------------------------------------------------- Cholesky certificate


def conv_matrix(spec: ConvSpec):  # type: ignore[no-untyped-def]
    """The convolution as a SciPy sparse matrix, with input columns ordered to keep AᵀA banded."""
    import scipy.sparse as sp

    c, h, w = spec.in_shape
    transpose = w > h  # put the shorter spatial side innermost
    weight = spec.weight.cpu()  # SciPy works on the CPU
    idx = torch.arange(c * h * w, dtype=torch.float64, device="cpu").view(1, c, h, w) + 1.0
    cols = F.unfold(idx, weight.shape[-2:], spec.dilation, spec.padding, spec.stride)[0]  # (c*k*k, L)
    n_loc = cols.shape[1]
    groups, cout = spec.groups, weight.shape[0]
    per_in = c // groups
    cols = cols.view(groups, per_in * weight.shape[-2] * weight.shape[-1], n_loc)
    kern = weight.flatten(1).view(groups, cout // groups, -1)  # g × out_g × q
    rows_o = (torch.arange(cout, device="cpu").view(groups, cout // groups, 1, 1) * n_loc
              + torch.arange(n_loc, device="cpu").view(1, 1, 1, -1))
    col_idx = cols.unsqueeze(1).expand(groups, cout // groups, -1, -1)
    vals = kern.unsqueeze(-1).expand_as(col_idx)
    rows = rows_o.expand_as(col_idx)
    keep = col_idx > 0
    col = col_idx[keep].long() - 1
    ci, rem = col // (h * w), col % (h * w)
    hi, wi = rem // w, rem % w
    order = (wi * h + hi) * c + ci if transpose else (hi * w + wi) * c + ci
    a = sp.coo_matrix((vals[keep].numpy(), (rows[keep].numpy(), order.numpy())),
                      shape=(cout * n_loc, c * h * w)).tocsr()
    a.sum_duplicates()
    return a


def conv_cholesky_bound(spec: ConvSpec, estimate: float,
                        max_band_entries: int = LIPSCHITZ_CONV_EXACT_MAX_BAND_ENTRIES) -> float | None:
    """Prove σ_max ≤ √μ with a banded Cholesky factorisation of μI − AᵀA; None when not applicable."""
    try:
        import numpy as np
        import scipy.linalg
    except ImportError:
        return None
    d = int(math.prod(spec.in_shape))
    if estimate <= 0 or d * 8 > max_band_entries:
        return None
    a = conv_matrix(spec)
    m = (a.T @ a).tocoo()
    upper = m.row <= m.col
    band = int((m.col[upper] - m.row[upper]).max()) if upper.any() else 0
    if (band + 1) * d > max_band_entries:
        return None
    ab = np.zeros((band + 1, d))
    ab[band + m.row[upper] - m.col[upper], m.col[upper]] = -m.data[upper]
    diag = ab[band].copy()
    abs_a = abs(a)
    crude = float(abs_a.sum(axis=0).max()) * float(abs_a.sum(axis=1).max())  # ‖A‖₁‖A‖∞ ≥ σ²
    u = np.finfo(np.float64).eps
    for rel in (1.002, 1.01, 1.05):
        mu = (estimate * rel) ** 2
        ab[band] = diag + mu
        try:
            scipy.linalg.cholesky_banded(ab, lower=False, check_finite=False)
        except np.linalg.LinAlgError:
            continue
        # Cholesky backward error (Demmel): |ΔB| ≤ γ_{band+2}|Rᵀ||R|, plus the rounding of M itself.
        slack = ((band + 2) * u * (band + 1) * (mu + float(-diag.min())) + 1e-10 * crude)
        return math.sqrt(mu + slack) * (1 + ROUNDING_SLACK)
    return None
