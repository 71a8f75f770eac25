"""Guaranteed operator norms of linear layers and convolutions ([L2NNN] eq. (2); Gram iteration, Delattre et al., ICML 2023).

Every ``*_bound`` function returns an upper bound that holds in exact
arithmetic and is inflated by a documented rounding allowance; every
``*_estimate`` function returns a power-iteration value (a lower estimate,
never used to decide a certificate).

- Dense matrices (:mod:`.dense`), L2: Gram iteration (Delattre et al., ICML 2023),
  ``σ₁(W)^(2^t) ≤ ‖G_t‖_F`` with ``G_{t+1} = G_tᵀ G_t``, min'ed with
  ``√b(W)`` of [L2NNN] eq. (2) and the Frobenius norm.
- Convolutions, L2 (:func:`conv_l2`, :mod:`.conv_l2`), guaranteed bounds, the smallest wins:

  * the Fourier bound (:func:`conv_fourier_bound`, :mod:`.fourier`): a zero-padded, strided,
    dilated, grouped convolution is a restriction of the strided circular
    convolution on a grid ≥ the padded input, whose norm is
    max over reduced frequencies ω' of σ₁(B(ω'))/√(s₁s₂), B(ω') the kernel's
    Fourier matrices at the s₁s₂ aliases of ω' side by side.  Each σ₁(B)² is
    certified by a Cholesky factorisation of μI − BBᴴ in float64 (μ from
    Lanczos on the top frequencies), batched over frequencies, with a proven
    rounding allowance;
  * [L2NNN]'s kernel bound √(⌈K₁/S₁⌉⌈K₂/S₂⌉)·‖kernel‖ (when it can win);
  * the dense Cholesky certificate of the exact layer (:func:`conv_dense_bound`, :mod:`.conv_exact`;
    small grids where the Fourier bound is more than 0.5% above the estimate, side³/3 flops within
    ``$LIPCERT_CONV_EXACT_FLOPS`` or LIPSCHITZ_CONV_DENSE_MAX_FLOPS): the Gram matrix on the
    smaller side summed exactly from the kernel's tap products, and a float64 Cholesky
    factorisation of μI − G with a proven rounding allowance;
  * otherwise the banded Cholesky certificate (:mod:`.cholesky`; small inputs where zero padding is more
    than 1% below circular padding, SciPy present): the exact conv matrix A is
    built sparsely, M = AᵀA is banded, and a successful banded Cholesky
    factorisation of μI − M proves λ_max(M) ≤ μ.

  Beside each bound, a power-iteration estimate of the layer itself (float32,
  warm-started from the Fourier bound's top singular vector).

- ℓ∞→ℓ∞: the largest absolute row sum, exact for dense matrices; for a
  convolution (:class:`ConvSpec`, :mod:`.convolution`), the largest per-output-channel kernel ℓ1 norm (exact as soon
  as one output sees its whole window).
"""

from . import fourier as _fourier
from .cholesky import conv_cholesky_bound, conv_matrix
from .conv_exact import conv_dense_bound, dense_gram
from .conv_l2 import ConvL2, conv_l2, conv_l2_bound, dense_max_flops
from .convolution import (
    L2NNN_GRAM_ITERATIONS,
    ConvSpec,
    conv_l2nnn_bound,
    conv_linf_bound,
    conv_power_estimate,
    conv_power_estimate_from,
    effective_kernel,
)
from .dense import ROUNDING_SLACK, b_bound, gram_bound, linf_matrix_norm, matrix_power_estimate, power_iteration
from .fourier import (
    FOURIER_CHUNK_BYTES,
    FOURIER_LANCZOS_STEPS,
    FOURIER_MARGIN,
    FOURIER_SCREEN_STEPS,
    FOURIER_TOP,
    FourierBound,
    conv_circulant_bound,
    conv_fourier_blocks,
    conv_fourier_bound,
)

#: Private names of the one-module version that its callers (the tests) use.
_effective_kernel, _grid = effective_kernel, _fourier._grid

__all__ = [
    "FOURIER_CHUNK_BYTES", "FOURIER_LANCZOS_STEPS", "FOURIER_MARGIN", "FOURIER_SCREEN_STEPS", "FOURIER_TOP",
    "L2NNN_GRAM_ITERATIONS", "ROUNDING_SLACK", "ConvL2", "ConvSpec", "FourierBound", "b_bound",
    "conv_circulant_bound", "conv_cholesky_bound", "conv_dense_bound", "conv_fourier_blocks",
    "conv_fourier_bound", "conv_l2", "conv_l2_bound", "conv_l2nnn_bound", "conv_linf_bound", "conv_matrix",
    "conv_power_estimate", "conv_power_estimate_from", "dense_gram", "dense_max_flops", "effective_kernel",
    "gram_bound", "linf_matrix_norm", "matrix_power_estimate", "power_iteration",
]
