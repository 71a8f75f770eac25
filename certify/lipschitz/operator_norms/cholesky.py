"""The banded Cholesky certificate of a convolution's L2 norm: the exact conv matrix A is built
sparsely (SciPy), M = AᵀA is banded, and a successful banded Cholesky factorisation of μI − M
proves λ_max(M) ≤ μ.  Used on small inputs, where zero padding is more than 1% below circular
padding (so the Fourier bound is loose).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ...defaults import LIPSCHITZ_CONV_EXACT_MAX_BAND_ENTRIES
from .convolution import ConvSpec
from .dense import ROUNDING_SLACK


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
