"""The dense Cholesky certificate of a zero-padded convolution's exact L2 norm (:func:`conv_dense_bound`).

On small inputs (ResNet's 4×4 and 8×8 stages) the Fourier bound sees circular padding, up to
~12% above the zero-padded layer.  Here the layer's Gram matrix on its smaller side (AᵀA on
the input pixels or AAᵀ on the output pixels) is formed exactly from the kernel's tap
products, block by block, and a dense float64 Cholesky factorisation of μI − G proves
λ_max(G) ≤ μ (plus a rounding allowance), μ a Lanczos value × (1 + a small margin).
Its work is about side³/3 flops (side = the smaller dimension), so it only runs below
``LIPSCHITZ_CONV_DENSE_MAX_FLOPS``.
"""

from __future__ import annotations

import math

import torch

from ...defaults import LIPSCHITZ_CONV_DENSE_MAX_FLOPS
from .convolution import ConvSpec
from .dense import ROUNDING_SLACK
from .fourier import _cholesky_certify, _lanczos

#: Relative margins of μ above the Lanczos value, tried in turn (a failed factorisation only costs time).
DENSE_MARGINS = (2e-4, 2e-3, 1e-2, 5e-2)
#: Lanczos steps on the dense Gram matrix (its top Ritz value seeds μ).
DENSE_LANCZOS_STEPS = 48


def _out_size(n: int, k: int, s: int, p: int, d: int) -> int:
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def _positions(spec: ConvSpec) -> tuple[torch.Tensor, int, int]:
    """pos[q, t]: the input pixel that output pixel q reads through tap t (−1 in the zero padding);
    and the numbers of output and input pixels."""
    _, h, w = spec.in_shape
    k1, k2 = spec.weight.shape[-2:]
    (s1, s2), (p1, p2), (d1, d2) = spec.stride, spec.padding, spec.dilation
    ho, wo = _out_size(h, k1, s1, p1, d1), _out_size(w, k2, s2, p2, d2)
    dev = spec.weight.device
    y = (torch.arange(ho, device=dev).view(-1, 1, 1, 1) * s1 + torch.arange(k1, device=dev).view(1, 1, -1, 1) * d1
         - p1)
    x = (torch.arange(wo, device=dev).view(1, -1, 1, 1) * s2 + torch.arange(k2, device=dev).view(1, 1, 1, -1) * d2
         - p2)
    ok = (y >= 0) & (y < h) & (x >= 0) & (x < w)
    pos = torch.where(ok, y * w + x, torch.full_like(y * w + x, -1)).reshape(ho * wo, k1 * k2)
    return pos, ho * wo, h * w


def _full_weight(spec: ConvSpec) -> torch.Tensor:
    """The kernel as (taps, c_out, c_in), zero across groups."""
    o, ig, k1, k2 = spec.weight.shape
    g = spec.groups
    full = torch.zeros((o, ig * g, k1, k2), dtype=torch.float64, device=spec.weight.device)
    for j in range(g):
        full[j * (o // g):(j + 1) * (o // g), j * ig:(j + 1) * ig] = spec.weight[j * (o // g):(j + 1) * (o // g)]
    return full.flatten(2).permute(2, 0, 1)


def _sides(spec: ConvSpec) -> tuple[int, int]:
    pos, n_out, n_in = _positions(spec)
    return spec.weight.shape[0] * n_out, spec.in_shape[0] * n_in


def dense_side(spec: ConvSpec) -> int:
    """The smaller of the layer's input and output dimensions (the Gram matrix's size)."""
    return min(_sides(spec))


def dense_gram(spec: ConvSpec) -> tuple[torch.Tensor, bool, int]:
    """G = AᵀA (input side, when not larger) or AAᵀ, formed in float64 from the tap products
    P[t, t'] = W_tᵀW_t' (or W_tW_t'ᵀ): G[r, r'] = Σ P[t, t'] over the pixels that connect r through
    tap t and r' through t'.  Returns (G, input_side, inner length of the products)."""
    pos, n_out, n_in = _positions(spec)
    wt = _full_weight(spec)  # (T, o, c)
    taps, o, c = wt.shape
    input_side = c * n_in <= o * n_out
    if input_side:  # sum over output pixels q: rows pos[q, t], columns pos[q, t']
        index, n, blk, inner = pos, n_in, c, o
    else:  # sum over input pixels p: rows q with pos[q, t] = p, columns q' with pos[q', t'] = p
        index = torch.full((n_in, taps), -1, dtype=torch.long, device=wt.device)
        q = torch.arange(n_out, device=wt.device).view(-1, 1).expand(-1, taps)
        t = torch.arange(taps, device=wt.device).view(1, -1).expand(n_out, -1)
        ok = pos >= 0
        index[pos[ok], t[ok]] = q[ok]  # for a fixed tap, q ↦ pos[q, t] is injective
        n, blk, inner = n_out, o, c
    # P[t, t'] = W_tᵀW_t' (input side) or W_tW_t'ᵀ, each pair t ≤ t' multiplied once: P[t', t] = P[t, t']ᵀ
    first, second = torch.triu_indices(taps, taps, device=wt.device)
    half = wt[first].mT @ wt[second] if input_side else wt[first] @ wt[second].mT
    prod = torch.empty((taps, taps, blk, blk), dtype=wt.dtype, device=wt.device)
    prod[first, second] = half
    prod[second, first] = half.mT
    del half
    g = torch.zeros((n * n, blk, blk), dtype=torch.float64, device=wt.device)
    for a in range(taps):
        for b in range(taps):
            both = (index[:, a] >= 0) & (index[:, b] >= 0)
            if bool(both.any()):
                flat = index[both, a] * n + index[both, b]  # distinct for a fixed (a, b)
                g.index_add_(0, flat, prod[a, b].expand(int(flat.numel()), blk, blk))
    g = g.view(n, n, blk, blk).permute(0, 2, 1, 3).reshape(n * blk, n * blk)
    return g, input_side, inner


def conv_dense_bound(spec: ConvSpec, estimate: float = 0.0,
                     max_flops: float = LIPSCHITZ_CONV_DENSE_MAX_FLOPS, seeded: bool = False) -> tuple[float, float] | None:
    """(bound, estimate) for ‖layer‖₂ from a dense Cholesky certificate; None when too large or
    every margin failed.  μ is a Lanczos value on the Gram matrix × (1 + a margin), and ``estimate``
    is raised to ‖Ax‖/‖x‖ (float64) at its top Ritz vector; with ``seeded``, ``estimate`` (an accurate
    Lanczos value of the layer, :func:`.convolution.conv_power_estimate_from`) seeds μ instead and
    the dense Lanczos is skipped (it reads the whole matrix each step).

    Proof (exact arithmetic).  A is the layer's matrix (zero padding, stride, dilation, groups as
    a block-diagonal kernel).  G = AᵀA has the pixel blocks G[p, p'] = Σ_q W_{t(q,p)}ᵀ W_{t(q,p')}
    over the outputs q that read p through tap t(q, p) and p' through t(q, p') (AAᵀ likewise with
    the roles swapped), which is what :func:`dense_gram` sums; σ₁(A)² = λ_max(G).  If
    μI − G = RᵀR (Cholesky exists) then μI − G ⪰ 0 and λ_max(G) ≤ μ.

    Floating point.  (i) Each entry of Ĝ sums ≤ T (taps) products P̂[t, t'] of inner length L,
    so |Ĝ − G| ≤ γ_{L+T}·(|A|ᵀ|A|) entrywise (Higham, §3.5), and
    ‖Ĝ − G‖₂ ≤ γ_{L+T}·‖|A|‖₂² ≤ γ_{L+T}·‖A‖_F² ≤ γ_{L+T}·Q·‖W‖_F² (Q output pixels: each
    output pixel uses each weight at most once).  (ii) When the Cholesky factorisation of
    fl(μI − Ĝ) completes, λ_max(Ĝ) ≤ μ + γ_{d+1}‖R‖_F² + u·max|μ − ĝᵢᵢ| (Demmel 1989; Higham,
    Thm 10.5; :func:`.fourier._cholesky_certify`).  Every γ_m is taken as 8(m+2)u.  The square
    root is inflated by (1 + 4u) and the result by ROUNDING_SLACK.
    """
    side = dense_side(spec)
    if side == 0 or side ** 3 / 3 > max_flops:
        return None
    g, input_side, inner = dense_gram(spec)
    u = 2.0 ** -53
    taps = spec.weight.shape[-2] * spec.weight.shape[-1]
    n_out = _positions(spec)[1]
    gram_err = 8 * (inner + taps + 2) * u * n_out * float(spec.weight.norm()) ** 2 * (1 + 1e-6)
    seeds = ["estimate", "lanczos"] if seeded and estimate > 0 else ["lanczos"]
    for seed in seeds:  # a seed that is too low only costs the failed factorisations
        if seed == "estimate":
            lam0 = estimate * estimate
        else:
            gen = torch.Generator(device=g.device).manual_seed(0)
            v = torch.randn((1, side), generator=gen, dtype=torch.float64, device=g.device)
            lam, vec = _lanczos(g.unsqueeze(0), DENSE_LANCZOS_STEPS, v)
            lam0 = max(float(lam[0]), 0.0)
            estimate = max(estimate, _ratio(spec, vec[0], input_side))
        for margin in DENSE_MARGINS:
            mu = lam0 * (1 + margin) + 1e-300
            ok, slack = _cholesky_certify(g.unsqueeze(0), mu, inplace=True)
            if bool(ok.all()):
                lam_bound = (mu + slack + gram_err) * (1 + 8 * u)
                return math.sqrt(lam_bound) * (1 + 4 * u) * (1 + ROUNDING_SLACK), estimate
    return None


def _ratio(spec: ConvSpec, vec: torch.Tensor, input_side: bool) -> float:
    """‖Ax‖/‖x‖ in float64 at the Ritz vector (x = v on the input side, x = Aᵀv on the output side)."""
    c, h, w = spec.in_shape
    if input_side:
        x = vec.view(h * w, c).T.reshape(c, h, w)
    else:
        o = spec.weight.shape[0]
        y0 = spec.apply(torch.zeros(spec.in_shape, dtype=torch.float64, device=spec.weight.device))
        x = spec.apply_t(vec.view(-1, o).T.reshape(o, *y0.shape[1:]))
    nx = float(x.norm())
    return float(spec.apply(x).norm()) / nx if nx > 0 else 0.0
