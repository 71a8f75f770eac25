"""The Fourier bound of a convolution's L2 norm (:func:`conv_fourier_bound`).

A zero-padded, strided, dilated, grouped convolution is a restriction of the strided circular
convolution on a grid ≥ the padded input, whose norm is max over reduced frequencies ω' of
σ₁(B(ω'))/√(s₁s₂), B(ω') the kernel's Fourier matrices at the s₁s₂ aliases of ω' side by side.
Each σ₁(B)² is certified by a Cholesky factorisation of μI − BBᴴ in float64 (μ from Lanczos on
the top frequencies), batched over frequencies, with a proven rounding allowance.
"""

from __future__ import annotations

import math

import torch

from .convolution import ConvSpec, effective_kernel
from .dense import ROUNDING_SLACK

#: Bytes of complex128 per-frequency matrices processed at once (bounds memory on large grids).
FOURIER_CHUNK_BYTES = 256 * 2**20
#: Relative margin of the first Cholesky certificate above the per-frequency estimate of λ_max.
FOURIER_MARGIN = 4e-4
#: Power-iteration steps on every per-frequency Gram matrix (a screen for the top frequencies).
FOURIER_SCREEN_STEPS = 8
#: Frequencies near the top that then get FOURIER_LANCZOS_STEPS Lanczos steps.
FOURIER_TOP = 4
FOURIER_LANCZOS_STEPS = 32
#: Output windows up to this many pixels also get the window bound (:func:`_toeplitz_bound`); on larger
#: ones the circular bound is already within a fraction of a percent.
TOEPLITZ_MAX_PIXELS = 256
#: Relative margins of the per-frequency certificates above their power-iteration values, tried in turn.
TOEPLITZ_MARGINS = (1e-3, 1e-2, 5e-2)


class FourierBound:
    """A guaranteed L2 bound of a strided, dilated, grouped convolution from its Fourier blocks.

    ``bound``: the bound; ``estimate``: the largest per-frequency power-iteration value (the
    circulant norm's estimate, ≤ bound); ``mu``: the μ every frequency was certified at (a hint for
    re-checks: a re-check at it gives exactly this bound);
    ``start``: a real input (C×H×W, float64) close to the top singular vector, to warm-start the
    power iteration of the zero-padded operator.
    """

    def __init__(self, bound: float, estimate: float, mu: float, start: torch.Tensor | None,
                 toeplitz: float = math.inf):
        self.bound, self.estimate, self.mu, self.start = bound, estimate, mu, start
        #: the window bound (:func:`_toeplitz_bound`; inf when it does not apply), also ≥ the layer's norm
        self.toeplitz = toeplitz


def _grid(spec: ConvSpec) -> tuple[tuple[int, int], tuple[int, int]]:
    """(N₁, N₂) of the circular grid (≥ the padded input and the dilated kernel, multiples of the
    strides) and the reduced grid (M₁, M₂) = (N₁/s₁, N₂/s₂)."""
    _, h, w = spec.in_shape
    k1, k2 = effective_kernel(spec)
    s1, s2 = spec.stride
    n1 = -(-max(h + 2 * spec.padding[0], k1) // s1) * s1
    n2 = -(-max(w + 2 * spec.padding[1], k2) // s2) * s2
    return (n1, n2), (n1 // s1, n2 // s2)


def _twiddles(n: int, m: int, s: int, taps: torch.Tensor, rows: torch.Tensor,
              device: torch.device) -> torch.Tensor:
    """E[r, j, a] = exp(−2πi·((ω'_r + j·M)·t_a mod N)/N) for reduced frequencies ω'_r, aliases j < s."""
    omega = rows.view(-1, 1, 1) + m * torch.arange(s, device=device).view(1, -1, 1)
    phase = (omega * taps.view(1, 1, -1)) % n  # exact integers
    angle = phase.double() * (-2.0 * math.pi / n)
    return torch.polar(torch.ones_like(angle), angle)


def conv_fourier_blocks(spec: ConvSpec, rows1: torch.Tensor) -> torch.Tensor:
    """B(ω') for the reduced frequencies (ω'₁ ∈ rows1, 0 ≤ ω'₂ ≤ ⌊M₂/2⌋), all groups:
    shape (len(rows1)·(⌊M₂/2⌋+1)·groups, c_out/groups, s₁s₂·c_in/groups), complex128.

    B(ω') = [K̂(ω' + (j₁M₁, j₂M₂))]_{j₁<s₁, j₂<s₂} side by side, K̂(ω) = Σ_t W_t e^{−2πi⟨ω,t⟩/N}."""
    (n1, n2), (m1, m2) = _grid(spec)
    s1, s2 = spec.stride
    dev = spec.weight.device
    o, ig, k1, k2 = spec.weight.shape
    g = spec.groups
    taps1 = torch.arange(k1, device=dev) * spec.dilation[0]
    taps2 = torch.arange(k2, device=dev) * spec.dilation[1]
    e1 = _twiddles(n1, m1, s1, taps1, rows1.to(dev), dev)  # (R1, s1, k1)
    e2 = _twiddles(n2, m2, s2, taps2, torch.arange(m2 // 2 + 1, device=dev), dev)  # (R2, s2, k2)
    w = spec.weight.to(torch.complex128).view(g, o // g, ig, k1, k2)
    # K̂[r1, j1, r2, j2, g, o, i]
    t = torch.einsum("goiab,rjb->rjgoia", w, e2)  # contract the second spatial axis
    khat = torch.einsum("qla,rjgoia->qlrjgoi", e1, t)
    r1, r2 = khat.shape[0], khat.shape[2]
    # B[r1, r2, g, o, (j1, j2, i)]
    b = khat.permute(0, 2, 4, 5, 1, 3, 6).reshape(r1 * r2 * g, o // g, s1 * s2 * ig)
    return b


def _dft_error(spec: ConvSpec) -> float:
    """Bound on ‖B̂(ω') − B(ω')‖₂ from computing the Fourier blocks in float64 (see conv_fourier_bound)."""
    k1, k2 = spec.weight.shape[-2:]
    u = 2.0 ** -53
    c = 128 + 16 * (k1 + k2)
    return c * u * math.sqrt(k1 * k2) * float(spec.weight.norm()) * (1 + 1e-6)


def _chunks(spec: ConvSpec) -> list[torch.Tensor]:
    (_, _), (m1, m2) = _grid(spec)
    o, ig = spec.weight.shape[:2]
    side = min(o // spec.groups, spec.stride[0] * spec.stride[1] * ig)
    per_row = (m2 // 2 + 1) * spec.groups * (side * side + o // spec.groups * spec.stride[0] * spec.stride[1] * ig) * 16
    rows = max(1, FOURIER_CHUNK_BYTES // max(per_row, 1))
    return list(torch.arange(m1, device=spec.weight.device).split(rows))


def _gram(b: torch.Tensor) -> torch.Tensor:
    return b @ b.mH if b.shape[-2] <= b.shape[-1] else b.mH @ b


def _sq_norm(t: torch.Tensor) -> torch.Tensor:
    """Σ|t_ij|² over the last two dimensions (real arithmetic, float64)."""
    r = torch.view_as_real(t) if t.is_complex() else t.unsqueeze(-1)
    return torch.linalg.vector_norm(r, dim=(-3, -2, -1)).square() * (1 + 1e-12)


def _rayleigh(g: torch.Tensor, steps: int, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched power iteration on Hermitian PSD g; returns (Rayleigh quotients, vectors)."""
    for _ in range(steps):
        v = (g @ v.unsqueeze(-1)).squeeze(-1)
        v = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-300)
    lam = torch.real((v.conj() * (g @ v.unsqueeze(-1)).squeeze(-1)).sum(-1))
    return lam, v


def _lanczos(g: torch.Tensor, steps: int, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched Lanczos (full reorthogonalisation) on Hermitian PSD g from v: the top Ritz values
    and vectors.  An estimate only: the Cholesky certificate decides."""
    b, n = v.shape
    m = max(1, min(steps, n))
    q = torch.zeros((b, m, n), dtype=g.dtype, device=g.device)
    alpha = torch.zeros((b, m), dtype=torch.float64, device=g.device)
    beta = torch.zeros((b, m), dtype=torch.float64, device=g.device)
    q[:, 0] = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-300)
    used = m
    for j in range(m):
        w = (g @ q[:, j].unsqueeze(-1)).squeeze(-1)
        alpha[:, j] = torch.real((q[:, j].conj() * w).sum(-1))
        # w ⟂ q_0..q_j (twice, for stability)
        for _ in range(2):
            w = w - torch.einsum("bkn,bk->bn", q[:, :j + 1], torch.einsum("bkn,bn->bk", q[:, :j + 1].conj(), w))
        nrm = w.norm(dim=-1)
        if j + 1 < m:
            beta[:, j] = nrm
            if bool((nrm <= 1e-14 * alpha[:, :j + 1].abs().amax(dim=-1).clamp_min(1e-300)).all()):
                used = j + 1
                break
            q[:, j + 1] = w / nrm.clamp_min(1e-300).unsqueeze(-1).to(w.dtype)
    off = beta[:, :used - 1]
    t = torch.diag_embed(alpha[:, :used]) + torch.diag_embed(off, 1) + torch.diag_embed(off, -1)
    evals, evecs = torch.linalg.eigh(t)
    y = evecs[:, :, -1].to(g.dtype)
    vec = torch.einsum("bkn,bk->bn", q[:, :used], y)
    vec = vec / vec.norm(dim=-1, keepdim=True).clamp_min(1e-300)
    lam = torch.real((vec.conj() * (g @ vec.unsqueeze(-1)).squeeze(-1)).sum(-1))
    return lam, vec


def _shifted_cholesky(g: torch.Tensor, mu: float | torch.Tensor,
                      inplace: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(R, ok): the Cholesky factors of fl(μI − G(ω)) and which completed; ``mu`` is one shift for all,
    or one per matrix.  ``inplace``: form μI − G in g's memory and restore g exactly afterwards (the
    negation is exact and the diagonal is put back from a copy), saving a copy of a large g."""
    shift = mu.to(g.dtype).unsqueeze(-1) if isinstance(mu, torch.Tensor) else mu
    if not inplace:
        a = -g
        a.diagonal(dim1=-2, dim2=-1).add_(shift)
        r, info = torch.linalg.cholesky_ex(a)
        return r, info == 0
    diag = g.diagonal(dim1=-2, dim2=-1).clone()
    g.neg_()
    try:
        g.diagonal(dim1=-2, dim2=-1).add_(shift)
        r, info = torch.linalg.cholesky_ex(g)
    finally:
        g.diagonal(dim1=-2, dim2=-1).copy_(-diag)
        g.neg_()
    return r, info == 0


def _cholesky_certify(g: torch.Tensor, mu: float, inplace: bool = False) -> tuple[torch.Tensor, float]:
    """Which μI − G(ω) factor in floating point, and the rounding slack that certifies
    λ_max(G(ω)) ≤ μ + slack for those (Demmel's backward error of Cholesky); ``inplace``: see
    :func:`_shifted_cholesky`."""
    n = g.shape[-1]
    r, ok = _shifted_cholesky(g, mu, inplace)
    u = 2.0 ** -53
    gamma = 8 * (n + 2) * u / (1 - 8 * (n + 2) * u)  # complex arithmetic: ≥ γ_{n+1} with room to spare
    fro2 = float(_sq_norm(r)[ok].max()) if bool(ok.any()) else 0.0
    diag = float((mu - torch.real(torch.diagonal(g, dim1=-2, dim2=-1))).abs().max()) if g.numel() else 0.0
    slack = gamma * fro2 * (1 + 1e-6) + 2 * u * diag
    return ok, slack


def _trace_slack(n: int, mu: float, trace_min: float, diag_min: float, diag_max: float) -> float:
    """The rounding slack of a completed Cholesky factorisation of fl(μI − Ĝ), from μ and the diagonal of Ĝ
    alone: λ_max(Ĝ) ≤ μ + γ·‖R‖_F² + 2u·max|μ − ĝᵢᵢ| with ‖R‖_F² = tr(RᴴR) ≤ tr(A)/(1 − γ) (the
    trace of Demmel's |Δ| ≤ γ|Rᴴ||R| is γ‖R‖_F²), tr(A) ≤ (1 + u)(nμ − tr Ĝ) and tr Ĝ ≥ (its computed
    sum)·(1 − γ).  ``trace_min``: the smallest computed tr Ĝ over the frequencies; ``diag_min``/``diag_max``:
    the extreme ĝᵢᵢ.  Monotone in μ, so the slack at the final μ covers every certificate made at a
    smaller one, and a re-check at a cached μ gives the same number as the run that found it."""
    u = 2.0 ** -53
    gamma = 8 * (n + 2) * u
    trace_a = (1 + u) * max(0.0, n * mu - trace_min * (1 - gamma))
    return gamma / (1 - gamma) * trace_a * (1 + 1e-6) + 2 * u * max(mu - diag_min, diag_max - mu, 0.0)


def conv_fourier_bound(spec: ConvSpec, hint: float | None = None) -> FourierBound:
    """Guaranteed ‖conv‖₂ of a zero-padded, strided, dilated, grouped 2-D convolution.

    Proof sketch (exact arithmetic).  Pad the C×n₁×n₂ input with its p zeros and then with more
    zeros up to an N₁×N₂ grid, N ≥ n + 2p, N ≥ the dilated kernel, N a multiple of the stride s
    (an isometric embedding).  Every output the layer computes sits at a grid position m·s whose
    window m·s + t (t a tap) stays inside the grid, so the layer is a row-restriction of the
    circular convolution C on that grid followed by subsampling at multiples of s:
    ‖layer‖ ≤ ‖S C‖ (selecting rows and composing with an isometry never increases a norm).
    Writing x in the DFT basis of the N-grid and y = S C x in that of the M = N/s grid, each
    reduced frequency ω' gathers the s₁s₂ aliases ω' + jM:  Ŷ(ω') = (1/(s₁s₂))·B(ω')·X̂_alias(ω'),
    B(ω') = [K̂(ω'+jM)]_j, and by Parseval ‖S C‖² = max_ω' σ₁(B(ω'))² / (s₁s₂) (an equality).
    Groups make C block diagonal: the max also runs over groups.  W is real, so B(−ω') is the
    conjugate of B(ω') and half of the frequencies suffice.  σ₁(B)² = λ_max(G), G = BBᴴ or BᴴB.

    Floating point.  (i) B is computed directly from the taps (twiddles to ≤ 40u each, dot
    products of ≤ k₁k₂ terms), so the computed K̂ errs by ≤ c·u·Σ_t|W_t| entrywise, with
    c = 128 + 16(k₁+k₂); in Frobenius norm by ≤ c·u·√(k₁k₂)·‖W‖_F =: δ, and, B̂ holding s₁s₂
    of them, ‖B̂ − B‖₂ ≤ √(s₁s₂)·δ.  (ii) Ĝ = fl(B̂B̂ᴴ) has |Ĝ − B̂B̂ᴴ| ≤ γ|B̂||B̂|ᴴ, whose
    2-norm is ≤ γ‖B̂‖_F².  (iii) When the Cholesky factorisation of fl(μI − Ĝ) runs to completion,
    RᴴR = μI − Ĝ + Δ with |Δ| ≤ γ_{n+1}|Rᴴ||R| (Demmel 1989; Higham, Thm 10.5), so
    λ_max(Ĝ) ≤ μ + γ‖R‖_F² + u·max|μ − ĝᵢᵢ|.  Together:
    σ₁(B) ≤ √(μ + slack + γ‖B̂‖_F²) + √(s₁s₂)·δ, and the result is inflated by
    ROUNDING_SLACK.  Every γ is taken as 8(n+2)u (n the longest inner dimension), far above
    the complex-arithmetic constants.

    μ starts at (1 + FOURIER_MARGIN) × the largest Ritz value (a few power steps on every
    frequency, then Lanczos on the FOURIER_TOP largest), or at ``hint`` (from the disk cache:
    a hint only ever seeds μ); frequencies whose certificate fails get Lanczos and a larger μ.
    """
    o, ig = spec.weight.shape[:2]
    s = spec.stride[0] * spec.stride[1]
    u = 2.0 ** -53
    dev = spec.weight.device
    gen = torch.Generator(device=dev).manual_seed(0)
    mu = float(hint) if hint is not None and math.isfinite(hint) and hint > 0 else 0.0
    est, best, fro2_max = 0.0, None, 0.0
    (_, _), (_, m2) = _grid(spec)
    per_row = (m2 // 2 + 1) * spec.groups
    trace_min, diag_min, diag_max, side = math.inf, math.inf, -math.inf, 1
    window = _window(spec)
    per_freq: list[torch.Tensor] = []  # per chunk: certified λ bound of each (frequency, group), NaN: not yet
    for rows in _chunks(spec):
        b = conv_fourier_blocks(spec, rows)
        fro2_max = max(fro2_max, float(_sq_norm(b).max()))
        g = _gram(b)
        diag = torch.real(torch.diagonal(g, dim1=-2, dim2=-1))
        side = int(g.shape[-1])
        trace_min = min(trace_min, float(diag.sum(-1).min()))
        diag_min, diag_max = min(diag_min, float(diag.min())), max(diag_max, float(diag.max()))
        v = torch.randn(g.shape[:-1], generator=gen, dtype=torch.float64, device=dev).to(g.dtype)

        def improve(idx: torch.Tensor, steps: int) -> float:
            nonlocal est, best
            lam, v_new = _lanczos(g[idx], steps, v[idx])
            v[idx] = v_new
            i = int(lam.argmax())
            if float(lam[i]) > est:
                k = int(idx[i])
                est, best = float(lam[i]), (int(rows[k // per_row]), (k // spec.groups) % (m2 // 2 + 1),
                                             k % spec.groups, v_new[i], b[k])
            return float(lam.max())

        todo = torch.arange(g.shape[0], device=dev)
        if hint is None or window is not None:
            lam, v[:] = _rayleigh(g, FOURIER_SCREEN_STEPS, v)  # a few power steps everywhere
        if window is not None:  # Lanczos on every frequency: each certificate sits just above its own λ_max
            per_freq.append(_certify_each(g, _lanczos(g, FOURIER_LANCZOS_STEPS, v)[0]))
        if hint is None:
            # then Lanczos on the frequencies near the top
            top = torch.nonzero(lam >= 0.9 * lam.max()).flatten()
            top = top[lam[top].argsort(descending=True)[:FOURIER_TOP]]
            mu = max(mu, improve(top, FOURIER_LANCZOS_STEPS) * (1 + FOURIER_MARGIN))
        for _ in range(60):
            ok = _shifted_cholesky(g if len(todo) == g.shape[0] else g[todo], mu)[1]
            if bool(ok.all()):  # μ only grows: earlier certificates stay valid (slack: _trace_slack)
                break
            todo = todo[~ok]
            mu = max(mu * (1 + FOURIER_MARGIN),
                     improve(todo, FOURIER_LANCZOS_STEPS) * (1 + FOURIER_MARGIN))
        else:  # pragma: no cover - Cholesky never succeeded: ‖G‖_F bounds λ_max
            mu = max(mu, float(_sq_norm(g).max()) ** 0.5 * (1 + 1e-6))
    lam_bound = mu + _trace_slack(side, mu, trace_min, diag_min, diag_max)
    nmax = max(o // spec.groups, s * ig, 1)
    gamma = 8 * (nmax + 2) * u
    lam_bound = (lam_bound + gamma * fro2_max) * (1 + 8 * u)
    sigma = math.sqrt(lam_bound) * (1 + 4 * u) + math.sqrt(s) * _dft_error(spec)  # B̂ holds s aliases
    bound = sigma / math.sqrt(s) * (1 + ROUNDING_SLACK)
    start = _plane_wave(spec, best) if best is not None else None
    toeplitz = math.inf
    if window is not None:
        # every per-frequency certificate made at μ_m ≤ μ: one slack covers them all (see _toeplitz_bound)
        gamma_c = 8 * (side + 2) * u
        slack = gamma_c / (1 - gamma_c) * (1 + u) * side * mu * (1 + 1e-6) + 2 * u * max(mu, diag_max)
        lam_m = torch.cat(per_freq)
        lam_m = torch.where(torch.isnan(lam_m), torch.full_like(lam_m, mu), lam_m.clamp_max(mu))
        sig_m = ((lam_m + slack + gamma * fro2_max) * (1 + 8 * u)).sqrt() * (1 + 4 * u) + math.sqrt(s) * _dft_error(spec)
        toeplitz = _toeplitz_bound(spec, window, sig_m.square() * (1 + 4 * u) / s)
    return FourierBound(bound, math.sqrt(max(est, 0.0) / s), mu, start, toeplitz)


def _certify_each(g: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """A certified bound on λ_max of each G(ω) (before rounding slack) at its own μ_m = its power-iteration
    value × (1 + margin); NaN where no margin certified (the global μ then stands for it)."""
    out = torch.full_like(lam, float("nan"))
    todo = torch.arange(g.shape[0], device=g.device)
    for margin in TOEPLITZ_MARGINS:
        mu_m = lam[todo].clamp_min(0) * (1 + margin) + 1e-300
        ok = _shifted_cholesky(g[todo], mu_m)[1]
        out[todo[ok]] = mu_m[ok]
        todo = todo[~ok]
        if not todo.numel():
            break
    return out


def _window(spec: ConvSpec) -> tuple[int, int, int, int] | None:
    """(output rows, output columns, r₁, r₂) when the window bound applies: a small output window, and a
    reduced grid M ≥ window + r per axis (r = ⌊(K_eff − 1)/s⌋, the reach of the kernel in strides), so
    the window's Toeplitz matrix is a compression of the reduced circulant without wrap-around."""
    _, h, w = spec.in_shape
    k1, k2 = effective_kernel(spec)
    (s1, s2), (p1, p2) = spec.stride, spec.padding
    o1, o2 = (h + 2 * p1 - k1) // s1 + 1, (w + 2 * p2 - k2) // s2 + 1
    (_, _), (m1, m2) = _grid(spec)
    r1, r2 = (k1 - 1) // s1, (k2 - 1) // s2
    if o1 < 1 or o2 < 1 or o1 * o2 > TOEPLITZ_MAX_PIXELS or m1 < o1 + r1 or m2 < o2 + r2:
        return None
    return o1, o2, r1, r2


def _toeplitz_bound(spec: ConvSpec, window: tuple[int, int, int, int], lam: torch.Tensor) -> float:
    """‖layer‖ from the per-frequency bounds ``lam`` (≥ σ₁(B(ω'))²/(s₁s₂), one per reduced frequency of the
    half grid and group, in :func:`conv_fourier_blocks`' order) and the layer's output window.

    Proof (exact arithmetic).  Let V be the convolution of the padded input where the padding ring is
    free (A = V·E, E the isometric embedding that puts zeros there, so ‖A‖ ≤ ‖V‖).  Every output of V
    sees its whole window, so VVᵀ is block Toeplitz on the o₁×o₂ output window, with blocks
    R_d = Σ_t W_t W_{t+s·d}ᵀ that vanish beyond the kernel's reach r; with M ≥ o + r it is the
    compression to the window of the circulant on the reduced M-grid whose symbol at ω' is
    F(ω') = B(ω')B(ω')ᴴ/(s₁s₂) (the same blocks as the circular bound).  F(ω') ⪯ λ(ω')·I with
    λ(ω') ≥ λ_max(F(ω')) (over the groups too: they are block diagonal), so for y on the window with
    per-channel DFTs ŷ_c on the M-grid, yᵀVVᵀy = Σ_ω' ŷ(ω')ᴴF(ω')ŷ(ω')/(M₁M₂) ≤ Σ_c y_cᵀ T y_c,
    T = the o₁o₂ × o₁o₂ scalar Toeplitz matrix T[i, j] = Σ_ω' λ(ω') cos(2π⟨ω', i − j⟩/M)/(M₁M₂).
    Hence ‖A‖² ≤ λ_max(T) ≤ max λ: never above the circular bound, and below it when the window is
    small (the window cannot concentrate on the peak frequency).

    Floating point.  ``lam`` already holds each certificate's rounding and the DFT error; T is summed
    in float64 from cosines with error ≤ 8u each, so each entry errs by ≤ γ·max λ (γ = 8(M₁M₂ + 8)u),
    ‖T̂ − T‖₂ ≤ o₁o₂·γ·max λ; λ_max(T̂) is certified by a Cholesky factorisation of μI − T̂
    (:func:`_cholesky_certify`).
    """
    (_, _), (m1, m2) = _grid(spec)
    half = m2 // 2 + 1
    full = _full_grid(lam.view(m1, half, spec.groups).amax(dim=2), m2)  # the largest over the groups
    t, err = _window_matrix(window, full)
    top = float(full.max())
    u = 2.0 ** -53
    try:
        est = float(torch.linalg.eigvalsh(t)[-1])
    except RuntimeError:  # LAPACK did not converge (values far outside [½, 1)-scaled kernels): no window bound
        return math.inf
    for margin in (1e-9, 1e-6, 1e-3):
        mu = max(est, 0.0) * (1 + margin) + 1e-300
        ok, slack = _cholesky_certify(t.unsqueeze(0), mu)
        if bool(ok.all()):
            lam_bound = (mu + slack + err) * (1 + 8 * u)
            return math.sqrt(min(lam_bound, top)) * (1 + 4 * u) * (1 + ROUNDING_SLACK)
    return math.inf


def _full_grid(half_grid: torch.Tensor, m2: int) -> torch.Tensor:
    """A real-symmetric quantity (value(−ω') = value(ω'), real weights) on the half grid
    (M₁ × (⌊M₂/2⌋+1)) spread over the whole reduced grid M₁ × M₂."""
    m1, half = half_grid.shape
    dev = half_grid.device
    full = torch.empty((m1, m2), dtype=half_grid.dtype, device=dev)
    full[:, :half] = half_grid
    cols = torch.arange(half, m2, device=dev)
    rows = torch.arange(m1, device=dev)
    full[:, half:] = half_grid[(-rows) % m1][:, (-cols) % m2]
    return full


def _window_matrix(window: tuple[int, int, int, int], full: torch.Tensor) -> tuple[torch.Tensor, float]:
    """(T̂, err): the o₁o₂ × o₁o₂ scalar Toeplitz matrix T[i, j] = Σ_ω' λ(ω') cos(2π⟨ω', i − j⟩/M)/(M₁M₂)
    of the values ``full`` (M₁ × M₂, ≥ 0) on the output window, summed in float64, and a bound on
    ‖T̂ − T‖₂ (cosines err by ≤ 8u each: each entry by ≤ γ·max λ, γ = 8(M₁M₂ + 8)u)."""
    o1, o2, _, _ = window
    m1, m2 = full.shape
    dev = full.device

    def angles(o: int, m: int) -> torch.Tensor:  # 2π·d·ω/M for the offsets d of the window and ω < M
        d = torch.arange(-(o - 1), o, device=dev, dtype=torch.float64)
        return 2 * math.pi * torch.outer(d, torch.arange(m, device=dev, dtype=torch.float64)) / m

    a1, a2 = angles(o1, m1), angles(o2, m2)
    # cos(a + b) = cos a cos b − sin a sin b, summed over the grid: coef[d1, d2]
    coef = (a1.cos() @ full @ a2.cos().T - a1.sin() @ full @ a2.sin().T) / (m1 * m2)
    i1, i2 = torch.meshgrid(torch.arange(o1, device=dev), torch.arange(o2, device=dev), indexing="ij")
    i1, i2 = i1.flatten(), i2.flatten()
    t = coef[(i1.view(-1, 1) - i1.view(1, -1)) + o1 - 1, (i2.view(-1, 1) - i2.view(1, -1)) + o2 - 1]
    t = (t + t.T) / 2
    u = 2.0 ** -53
    return t, o1 * o2 * 8 * (m1 * m2 + 8) * u * float(full.max())


def _plane_wave(spec: ConvSpec, best) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """Real input ≈ the circulant's top singular vector at the best frequency (a power-iteration start)."""
    r1, r2, gi, vec, b = best
    if b.shape[-2] <= b.shape[-1]:  # vec is a left singular vector: v = Bᴴu
        vec = b.mH @ vec
    (n1, n2), (m1, m2) = _grid(spec)
    s1, s2 = spec.stride
    c, h, w = spec.in_shape
    ig = c // spec.groups
    dev = spec.weight.device
    v = vec.reshape(s1, s2, ig)
    y = torch.arange(h, device=dev, dtype=torch.float64) + spec.padding[0]
    z = torch.arange(w, device=dev, dtype=torch.float64) + spec.padding[1]
    om1 = (r1 + m1 * torch.arange(s1, device=dev, dtype=torch.float64)) / n1
    om2 = (r2 + m2 * torch.arange(s2, device=dev, dtype=torch.float64)) / n2
    ph1 = torch.polar(torch.ones(s1, h, dtype=torch.float64, device=dev), -2 * math.pi * om1.view(-1, 1) * y)
    ph2 = torch.polar(torch.ones(s2, w, dtype=torch.float64, device=dev), -2 * math.pi * om2.view(-1, 1) * z)
    # the zero-padded layer's top vectors look like the plane wave under a half-sine envelope
    env1 = torch.sin(math.pi * (torch.arange(h, device=dev, dtype=torch.float64) + 1) / (h + 1))
    env2 = torch.sin(math.pi * (torch.arange(w, device=dev, dtype=torch.float64) + 1) / (w + 1))
    wave = torch.einsum("abi,ay,bz->iyz", v, ph1 * env1, ph2 * env2)
    x = torch.zeros((2, c, h, w), dtype=torch.float64, device=dev)
    x[0, gi * ig:(gi + 1) * ig] = wave.real
    x[1, gi * ig:(gi + 1) * ig] = wave.imag
    return x


def conv_circulant_bound(spec: ConvSpec) -> float:
    """Norm of the strided circular convolution on a grid ≥ the padded input (≥ the layer's norm);
    see :func:`conv_fourier_bound`."""
    return conv_fourier_bound(spec).bound
