"""Layers that are Lipschitz by construction ([L2NNN] Qian & Wegman, ICLR 2019; [LINF-DIST] ℓ∞-dist nets, ICLR 2021).

L2NNN building blocks [L2NNN] — each is nonexpansive (1-Lipschitz) in L2:

* :class:`L2Linear`, :class:`L2Conv2d`: weights used as ``W / sqrt(b(W))`` with
  ``b(W) = min(r(WᵀW), r(WWᵀ))`` and ``r(M)`` the largest absolute row sum, so
  ``‖W/√b‖₂ ≤ 1``; the convolution input is also divided by
  ``sqrt(ceil(K1/S1)·ceil(K2/S2))`` (the number of windows a pixel can fall in).
  ``L2Linear(normalisation="spectral")`` divides by a guaranteed σ_max bound
  instead (Gram iteration, :func:`gram_sigma_bound`) and can then take Björck
  steps towards an orthogonal matrix (:func:`bjorck`); ‖W‖₂ ≤ 1 still holds,
  with far less signal lost than with √b(W).
* :class:`TwoSidedReLU` / :class:`TwoSided`: ``[f(x), f(x) − x]`` along channels.
* :class:`NormPool2d`: L2 norm over each window, divided by the overlap factor.
* :class:`MultiL2NNNHead`: one weight row per logit with ``‖w_k‖₂ ≤ 1``, so every
  logit is 1-Lipschitz (the "multi-L2NNN" property, certificate ``l2-multi``).
* :class:`SplitReconverge`: ``t·x + (1 − t)·f(x)`` (residual block, [L2NNN] A.3).

ℓ∞-dist Net [LINF-DIST] — 1-Lipschitz ℓ∞ → ℓ∞:

* :class:`LinfDist`: ``u(z) = ‖z − w‖_p + b`` with ``p = ∞`` at evaluation.  No
  batch × out × in tensor ever exists: p = ∞ uses the fused ``torch.cdist``
  kernel; a finite p is computed in chunks of output units, and its training
  gradient recomputes each chunk instead of storing it.
* :class:`MeanShift`: batch-mean subtraction, running mean at inference, no affine.

Every normalisation is computed inside ``forward`` from the raw parameter, so a
``torch.export`` graph contains it and the Lipschitz analyser can fold it.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

#: Added to b(W) and inside square roots; only ever makes a layer *smaller*.
TINY = 1e-12
#: Elements (per example) of one chunk of ``z − w`` in :class:`LinfDist`.
LINF_CHUNK_ELEMENTS = 1 << 16
#: Gram matrices larger than this (per side) are not formed for b(W).
MAX_GRAM_DIM = 1024
#: Gram-iteration steps of :func:`gram_sigma_bound` (over-estimate ≤ rank^(1/2^(t+1))).
GRAM_ITERATIONS = 6
#: Relative shrink of a spectrally normalised weight: covers float32 rounding.
SPECTRAL_SAFETY = 1e-4
#: Weight normalisations of :class:`L2Linear`.
NORMALISATIONS = ("b", "spectral")


# --------------------------------------------------------------------------- L2NNN


def max_row_sum(m: torch.Tensor) -> torch.Tensor:
    """r(M): the largest absolute row sum (the ℓ∞ operator norm)."""
    return m.abs().sum(dim=1).max()


def nonexpansive_bound(w2d: torch.Tensor) -> torch.Tensor:
    """b(W) = min(r(WᵀW), r(WWᵀ)) ≥ ‖W‖₂², so ‖W/√b(W)‖₂ ≤ 1.

    Each of the two terms alone is ≥ ‖W‖₂² (r is an induced norm of a Gram
    matrix), so when one Gram matrix would be larger than
    :data:`MAX_GRAM_DIM` square only the small one is formed: still sound,
    and a 3136 × 3136 product per step is avoided.
    """
    small = w2d @ w2d.t() if w2d.shape[0] <= w2d.shape[1] else w2d.t() @ w2d
    if max(w2d.shape) > MAX_GRAM_DIM:
        return max_row_sum(small)
    big = w2d.t() @ w2d if w2d.shape[0] <= w2d.shape[1] else w2d @ w2d.t()
    return torch.minimum(max_row_sum(small), max_row_sum(big))


def nonexpansive_weight(w: torch.Tensor) -> torch.Tensor:
    """``W / sqrt(b(W))`` with W flattened to (out, rest) for the bound."""
    w2d = w.reshape(w.shape[0], -1)
    return w / torch.sqrt(nonexpansive_bound(w2d) + TINY)


def penalty7(w: torch.Tensor) -> torch.Tensor:
    """[L2NNN] eq. (7): Σ_i max(Σ_j |(WᵀW)_ij| − 1, 0), a warm-up penalty on raw weights."""
    w2d = w.reshape(w.shape[0], -1)
    return F.relu((w2d.t() @ w2d).abs().sum(dim=1) - 1.0).sum()


def overlap_factor(kernel: tuple[int, int], stride: tuple[int, int]) -> int:
    """ceil(K1/S1)·ceil(K2/S2): how many windows one input pixel can fall in."""
    return math.ceil(kernel[0] / stride[0]) * math.ceil(kernel[1] / stride[1])


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def gram_sigma_bound(w2d: torch.Tensor, iterations: int = GRAM_ITERATIONS) -> torch.Tensor:
    """A guaranteed σ_max(W) by Gram iteration (Delattre et al. 2023), differentiable, in torch ops.

    With G₀ = WWᵀ (smaller side) and G_{t+1} = G_t², ``σ_max(W)^(2^(t+1)) = λ_max(G_t) ≤ ‖G_t‖_F``
    in exact arithmetic; each G_t is rescaled by its Frobenius norm (the scale is kept in
    log space) so nothing overflows.  The over-estimate is at most rank^(1/2^(t+1)).
    Min'ed with √b(W), so it is never looser than the [L2NNN] bound.
    """
    g = w2d @ w2d.t() if w2d.shape[0] <= w2d.shape[1] else w2d.t() @ w2d
    log_scale = torch.zeros((), dtype=w2d.dtype, device=w2d.device)
    power = 1.0  # ‖G_t‖_F bounds σ_max^(2·power)
    for _ in range(iterations):
        norm = torch.linalg.vector_norm(g) + TINY
        g = g / norm
        log_scale = 2.0 * (log_scale + torch.log(norm))
        g = g @ g
        power *= 2.0
    log_fro = torch.log(torch.linalg.vector_norm(g) + TINY) + log_scale
    gram = torch.exp(log_fro / (2.0 * power))
    return torch.minimum(gram, torch.sqrt(nonexpansive_bound(w2d) + TINY))


def bjorck(w2d: torch.Tensor, iterations: int) -> torch.Tensor:
    """Björck–Bowie steps ``W ← 1.5 W − 0.5 W WᵀW`` on a W with ‖W‖₂ ≤ 1.

    Each singular value maps through f(σ) = 1.5σ − 0.5σ³, which sends [0, 1] into
    [0, 1] (f is increasing there, f(1) = 1), so the result stays nonexpansive
    while its singular values move towards 1 (an almost orthogonal matrix).
    """
    wide = w2d.shape[0] <= w2d.shape[1]
    for _ in range(iterations):
        if wide:
            w2d = 1.5 * w2d - 0.5 * (w2d @ w2d.t()) @ w2d
        else:
            w2d = 1.5 * w2d - 0.5 * w2d @ (w2d.t() @ w2d)
    return w2d


def spectral_weight(w: torch.Tensor, bjorck_iterations: int = 0,
                    gram_iterations: int = GRAM_ITERATIONS) -> torch.Tensor:
    """``W / σ̄(W)`` with σ̄ a guaranteed σ_max bound (:func:`gram_sigma_bound`), then Björck steps.

    The result is shrunk by :data:`SPECTRAL_SAFETY` so float32 rounding in the
    iterations cannot push ‖W‖₂ above 1.
    """
    w2d = w.reshape(w.shape[0], -1)
    w2d = w2d / (gram_sigma_bound(w2d, gram_iterations) * (1.0 + SPECTRAL_SAFETY))
    w2d = bjorck(w2d, bjorck_iterations)
    return (w2d * (1.0 - SPECTRAL_SAFETY)).reshape(w.shape)


class L2Linear(nn.Linear):
    """Nonexpansive linear layer: y = (W/√b(W)) x + bias.

    ``normalisation="spectral"`` divides by a guaranteed σ_max bound instead
    (:func:`spectral_weight`, much tighter than √b(W)), followed by
    ``bjorck_iterations`` Björck steps towards an orthogonal matrix.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, normalisation: str = "b",
                 bjorck_iterations: int = 0):
        super().__init__(in_features, out_features, bias=bias)
        if normalisation not in NORMALISATIONS:
            raise ValueError(f"L2Linear: normalisation must be one of {NORMALISATIONS}, got {normalisation!r}")
        self.normalisation, self.bjorck_iterations = normalisation, int(bjorck_iterations)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, normalisation={self.normalisation}, bjorck={self.bjorck_iterations}"

    def normalised_weight(self) -> torch.Tensor:
        if self.normalisation == "spectral":
            return spectral_weight(self.weight, self.bjorck_iterations)
        return nonexpansive_weight(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.normalised_weight(), self.bias)


class L2Conv2d(nn.Conv2d):
    """Nonexpansive convolution: input / √overlap, then conv with W/√b(W_mat)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 0, bias: bool = True):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias)
        self.input_scale = 1.0 / math.sqrt(overlap_factor(_pair(kernel_size), _pair(stride)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x * self.input_scale, nonexpansive_weight(self.weight), self.bias,
                        self.stride, self.padding)


class TwoSided(nn.Module):
    """``[f(x), f(x) − x]`` along dim 1; nonexpansive when 0 ≤ f′ ≤ 1 (e.g. ReLU)."""

    def __init__(self, f: Callable[[torch.Tensor], torch.Tensor] | nn.Module | None = None):
        super().__init__()
        self.f = f if f is not None else nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fx = self.f(x)
        return torch.cat([fx, fx - x], dim=1)


class TwoSidedReLU(TwoSided):
    """Two-sided ReLU ``[relu(x), relu(x) − x]``: doubles the channels."""

    def __init__(self) -> None:
        super().__init__(nn.ReLU())


class NormPool2d(nn.Module):
    """L2 norm of each window, divided by √overlap so the map is nonexpansive."""

    def __init__(self, kernel_size: int | tuple[int, int], stride: int | tuple[int, int] | None = None):
        super().__init__()
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride) if stride is not None else self.kernel_size
        k = self.kernel_size[0] * self.kernel_size[1]
        self.scale = float(k) / overlap_factor(self.kernel_size, self.stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sq = F.avg_pool2d(x * x, self.kernel_size, self.stride)
        return torch.sqrt(sq * self.scale + TINY)


class MultiL2NNNHead(nn.Linear):
    """One nonexpansive filter per logit: row k is used as w_k / max(‖w_k‖₂, 1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norms = torch.linalg.vector_norm(self.weight, dim=1, keepdim=True)
        return F.linear(x, self.weight / torch.clamp(norms, min=1.0), self.bias)


class SplitReconverge(nn.Module):
    """Residual block ``t·x + (1 − t)·f(x)``: nonexpansive when f is ([L2NNN] A.3)."""

    def __init__(self, f: nn.Module, t: float = 0.5):
        super().__init__()
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"SplitReconverge: expected 0 ≤ t ≤ 1, got {t}")
        self.f = f
        self.t = float(t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.t * x + (1.0 - self.t) * self.f(x)


# --------------------------------------------------------------------------- ℓ∞-dist


def chunk_size(in_features: int, out_features: int, elements: int = LINF_CHUNK_ELEMENTS) -> int:
    """Output units per chunk so one chunk holds about ``elements`` values per example."""
    return max(1, min(out_features, elements // max(in_features, 1)))


def _lp_dist_chunk(x: torch.Tensor, w: torch.Tensor, p: float) -> torch.Tensor:
    """‖x_b − w_o‖_p for one chunk of units (batch × chunk); stable for large p."""
    d = (x.unsqueeze(1) - w.unsqueeze(0)).abs()
    m = d.amax(dim=-1)
    if math.isinf(p):
        return m
    ms = m.clamp_min(TINY).unsqueeze(-1)
    return m * ((d / ms).pow(p).sum(dim=-1)).pow(1.0 / p)


def lp_dist(x: torch.Tensor, w: torch.Tensor, p: float, chunk: int) -> torch.Tensor:
    """All distances (batch × out), one chunk of output units at a time (no autograd tricks)."""
    parts = [_lp_dist_chunk(x, w[i:i + chunk], p) for i in range(0, w.shape[0], chunk)]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


def lp_dist_naive(x: torch.Tensor, w: torch.Tensor, p: float) -> torch.Tensor:
    """Reference: materialises the whole batch × out × in tensor."""
    d = x.unsqueeze(1) - w.unsqueeze(0)
    return torch.linalg.vector_norm(d, ord=p, dim=-1)


class _LpDistFn(torch.autograd.Function):
    """ℓp distances whose backward recomputes each chunk (memory O(batch·chunk·in))."""

    @staticmethod
    def forward(ctx, x, w, p, chunk):  # type: ignore[no-untyped-def]
        with torch.no_grad():
            out = lp_dist(x, w, p, chunk)
        ctx.save_for_backward(x, w, out)
        ctx.p, ctx.chunk = p, chunk
        return out

    @staticmethod
    def backward(ctx, g):  # type: ignore[no-untyped-def]
        x, w, out = ctx.saved_tensors
        gx = torch.zeros_like(x)
        gw = torch.zeros_like(w)
        for i in range(0, w.shape[0], ctx.chunk):
            sl = slice(i, i + ctx.chunk)
            gd = _dist_grad(x, w[sl], out[:, sl], g[:, sl], ctx.p)
            gx += gd.sum(dim=1)
            gw[sl] -= gd.sum(dim=0)
        return gx, gw, None, None


def _dist_grad(x: torch.Tensor, w: torch.Tensor, out: torch.Tensor, g: torch.Tensor, p: float) -> torch.Tensor:
    """∂‖x − w‖_p / ∂(x − w), times the upstream gradient (batch × chunk × in)."""
    d = x.unsqueeze(1) - w.unsqueeze(0)
    if math.isinf(p):
        idx = d.abs().argmax(dim=-1, keepdim=True)
        gd = torch.zeros_like(d)
        return gd.scatter_(-1, idx, (g.unsqueeze(-1) * d.gather(-1, idx).sign()))
    ratio = d.abs() / out.clamp_min(TINY).unsqueeze(-1)
    return g.unsqueeze(-1) * d.sign() * ratio.pow(p - 1.0)


class LinfDist(nn.Module):
    """ℓ∞-dist neuron layer ``u(z) = ‖z − w‖_p + b`` ([LINF-DIST]); 1-Lipschitz ℓ∞ → ℓ∞.

    ``p`` is the ℓp relaxation used in training (annealed towards ∞); in eval
    mode the layer always uses p = ∞.  Inputs of any shape are flattened.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = False, p: float = 8.0,
                 chunk_elements: int = LINF_CHUNK_ELEMENTS):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.randn(out_features, in_features, device="cpu"))
        self.bias = nn.Parameter(torch.zeros(out_features, device="cpu")) if bias else None
        self.p = float(p)
        self.chunk = chunk_size(in_features, out_features, chunk_elements)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, " \
               f"bias={self.bias is not None}, p={self.p}"

    @property
    def effective_p(self) -> float:
        return self.p if self.training else math.inf

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        out = self.distances(x, self.effective_p)
        return out if self.bias is None else out + self.bias

    def distances(self, x: torch.Tensor, p: float) -> torch.Tensor:
        """Batch × out distances; never a batch × out × in tensor.

        * p = ∞ (always, at evaluation): ``torch.cdist``, a fused kernel on CPU
          and CUDA; an exported graph holds one ``aten.cdist(x, W, inf)`` node;
        * finite p: chunks of output units, with a backward that recomputes
          each chunk (``examples/benchmarks/bench_linf_dist.py`` compares them).
        """
        if math.isinf(p):
            return torch.cdist(x, self.weight, p=p)
        tracing = torch.compiler.is_exporting() or torch.compiler.is_compiling()
        if not tracing and torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad):
            return _LpDistFn.apply(x, self.weight, p, self.chunk)
        return lp_dist(x, self.weight, p, self.chunk)


class MeanShift(nn.Module):
    """Subtract the batch mean (running mean at inference); no scaling, no affine."""

    def __init__(self, num_features: int, momentum: float = 0.1):
        super().__init__()
        self.momentum = momentum
        self.register_buffer("running_mean", torch.zeros(num_features, device="cpu"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            mean = x.mean(dim=0)
            with torch.no_grad():
                self.running_mean.lerp_(mean.detach(), self.momentum)
            return x - mean
        return x - self.running_mean


class Negate(nn.Module):
    """Logits of an ℓ∞-dist Net are minus the last layer's distances."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -x


def set_linf_p(model: nn.Module, p: float) -> None:
    """Set the training-time ℓp relaxation of every :class:`LinfDist` layer."""
    for m in model.modules():
        if isinstance(m, LinfDist):
            m.p = float(p)
