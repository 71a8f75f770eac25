"""The window bound with top directions (:func:`window_schur_bound`): the window bound of
:mod:`.fourier` without its loss of channel alignment.

The window bound replaces every frequency's symbol F(ω') = B(ω')B(ω')ᴴ/(s₁s₂) by λ_max·I, which
forgets that the top channel direction turns with the frequency (up to ~1.5% on 8×8 windows of
random 256-channel layers).  Here each symbol keeps its eigen-directions above a level τ:
F(ω') ⪯ ρ(ω')·I + Z(ω')Z(ω')ᴴ, Z the top eigenvectors (computed in single precision: any Z is sound,
ρ is certified for the Z at hand) scaled by √(λ − τ), and the layer's Gram
matrix on the output window is bounded by a Kronecker term plus a low-rank term, whose largest
eigenvalue a Schur complement of side R (the number of kept directions) certifies.

Proof (exact arithmetic).  As in :func:`.fourier._toeplitz_bound`, V is the layer with its padding
ring free (‖A‖ ≤ ‖V‖) and, for y on the o₁×o₂ output window (complex allowed),
yᴴVVᵀy = Σ_ω ŷ(ω)ᴴF(ω)ŷ(ω)/(M₁M₂) over the reduced M₁×M₂ grid, ŷ(ω) = Σ_q y_q e^{2πi⟨ω,q⟩/M}.
With F(ω) ⪯ ρ(ω)I + Z(ω)Z(ω)ᴴ at every ω:  VVᵀ ⪯ T_ρ⊗I + LLᴴ, T_ρ the scalar Toeplitz matrix of ρ
on the window (:func:`.fourier._window_matrix`) and L's column for direction z at ω the vector
q ↦ z·e^{−2πi⟨ω,q⟩/M}/√(M₁M₂).  For μ with D = μI − T_ρ ≻ 0, the Schur complement gives
μI − T_ρ⊗I − LLᴴ ⪰ 0  ⟺  λ_max(Lᴴ(D⁻¹⊗I)L) ≤ 1, and Lᴴ(D⁻¹⊗I)L has the entries
(φ_ωᴴD⁻¹φ_ω')·(zᴴz'), φ_ω(q) = e^{−2πi⟨ω,q⟩/M}/√(M₁M₂): an R×R matrix.  Then ‖A‖² ≤ ‖V‖² ≤ μ.
The kept directions of ω and −ω are complex conjugates (real weights), so ρ is symmetric and T_ρ
real.  Groups make V block diagonal: the bound is the largest over the groups.

Floating point (every γ_m taken as 8(m + 2)u, complex arithmetic included):
(i) the Fourier blocks err by ≤ √(s₁s₂)·δ in norm (:func:`.fourier._dft_error`), and
F̂ = fl(B̂B̂ᴴ) by ≤ γ_n‖B̂‖_F², so F ⪯ F̂ + e_F·I with e_F = γ_n‖B̂‖_F² + (2‖B̂‖_F + √s·δ)√s·δ;
(ii) Ĝ = fl(F̂ − fl(ZZᴴ)) satisfies F̂ ⪯ ZZᴴ + Ĝ + (γ_r‖Z‖_F² + 1.01u‖Ĝ‖_F)·I, and a completed
Cholesky factorisation of fl(ρ_m I − Ĝ) gives λ_max(Ĝ) ≤ ρ_m + slack (Demmel;
:func:`.fourier._cholesky_certify`); the sum is ρ(ω), rounded up;
(iii) T_ρ is summed with ‖T̂ − T‖₂ ≤ err_T; D′ = fl(μI − T̂) − e₁I with e₁ = err_T + 4u(μ + max|T̂ᵢᵢ|)
satisfies D′ ⪯ μI − T_ρ, a Cholesky factorisation of D′ − δI proves λ_min(D′) ≥ δ_c > 0, and for
the computed symmetric inverse Ẽ the residual gives ‖D′⁻¹ − Ẽ‖₂ ≤ ‖I − D′Ẽ‖/δ_c =: η (the residual's
own rounding ≤ γ_n‖|D′||Ẽ|‖_F added);
(iv) with d_max = ‖φ‖²‖Ẽ‖_F = o₁o₂‖Ẽ‖_F/(M₁M₂): |d̂ − φᴴẼφ′| ≤ ε_d = (81u + γ_{2n})·d_max (twiddles
≤ 40u each), |fl(zᴴz′) − zᴴz′| ≤ γ_c‖z‖‖z′‖ and the product and division by s₁s₂ ≤ 8u, so
‖Ĥ − Lᴴ(Ẽ⊗I)L‖₂ ≤ κ_H‖Z‖_F²/s with κ_H = ε_d(1 + γ_c) + d_max·γ_c + 8u(d_max + ε_d)(1 + γ_c), and
Lᴴ(D′⁻¹⊗I)L ⪯ Lᴴ(Ẽ⊗I)L + η‖L‖²·I with ‖L‖² ≤ o₁o₂‖Z‖_F²/(M₁M₂·s);
(v) a completed Cholesky factorisation of fl(νI − Ĥ) gives λ_max(Ĥ) ≤ ν + slack, and the bound holds
when ν + slack + e_H ≤ 1, e_H the sum of the two terms of (iv).  √μ is inflated by (1 + 4u) and
ROUNDING_SLACK.
"""

from __future__ import annotations

import math

import torch

from .convolution import ConvSpec
from .dense import ROUNDING_SLACK, lanczos_top
from .fourier import (
    _cholesky_certify,
    _dft_error,
    _full_grid,
    _grid,
    _shifted_cholesky,
    _sq_norm,
    _window,
    _window_matrix,
    conv_fourier_blocks,
)

#: The most kept directions R (the Schur complement's side; its Cholesky costs ~4R³/3 flops).
SCHUR_MAX_RANK = 1536
#: Groups and channels per group beyond which the refinement is skipped (the window bound stands).
SCHUR_MAX_GROUPS = 8
SCHUR_MAX_CHANNELS = 1024
#: ... and where the per-frequency blocks and symbols (complex128) would take more than this.
SCHUR_MAX_BYTES = 768 * 2**20
#: Margins of the per-frequency certificates ρ_m above their level, relative to the symbol's largest
#: eigenvalue, tried in turn.
SCHUR_FREQ_MARGINS = (1e-7, 1e-5, 1e-3)
#: Lanczos steps on the majorant T_ρ⊗I + LLᴴ (its top Ritz value θ), then the margins of μ above θ tried.
SCHUR_LANCZOS_STEPS = 80
SCHUR_FINAL_MARGINS = (1e-5, 1e-4, 1e-3, 1e-2)

_U = 2.0 ** -53


def _gamma(m: int) -> float:
    return 8 * (m + 2) * _U


def window_schur_bound(spec: ConvSpec, upper: float) -> float:
    """A guaranteed ‖layer‖₂ from the window bound with top directions (see the module docs), or inf
    when it does not apply or cannot certify below ``upper`` (a known bound, e.g. the window bound)."""
    window = _window(spec)
    o, ig = spec.weight.shape[:2]
    g = spec.groups
    co = o // g
    if window is None or not math.isfinite(upper) or upper <= 0 or co < 2 or co > SCHUR_MAX_CHANNELS \
            or g > SCHUR_MAX_GROUPS:
        return math.inf
    (_, _), (m1, m2) = _grid(spec)
    half = m2 // 2 + 1
    n_in = spec.stride[0] * spec.stride[1] * ig
    if m1 * half * g * co * (3 * co + n_in) * 16 > SCHUR_MAX_BYTES:
        return math.inf
    dev = spec.weight.device
    b = conv_fourier_blocks(spec, torch.arange(m1, device=dev))  # (M₁·half·groups, co, s₁s₂·c_in/groups)
    b = b.view(m1, half, g, co, b.shape[-1])
    bounds = []
    for j in range(g):
        try:
            bounds.append(_group_bound(spec, window, b[:, :, j].reshape(m1 * half, co, -1), upper))
        except RuntimeError:  # a LAPACK routine did not converge: no refined bound
            return math.inf
        if not math.isfinite(bounds[-1]):
            return math.inf
    return max(bounds)


def _group_bound(spec: ConvSpec, window: tuple[int, int, int, int], b: torch.Tensor, upper: float) -> float:
    o1, o2, _, _ = window
    (_, _), (m1, m2) = _grid(spec)
    half = m2 // 2 + 1
    s = spec.stride[0] * spec.stride[1]
    dev = b.device
    co, n_in = b.shape[-2], b.shape[-1]
    fro2 = _sq_norm(b)  # ‖B̂‖_F² per frequency
    f = b @ b.mH
    f = (f + f.mH) / 2  # exactly Hermitian (what Cholesky and eigh read)
    # eigen-directions in single precision (half the time): Z only has to be close to the top directions,
    # since F − ZZᴴ ⪯ ρI is certified below in double precision whatever Z is
    lam, vec = torch.linalg.eigh(f.to(torch.complex64 if f.dtype == torch.complex128 else f.dtype))  # ascending
    lam, vec = lam.to(torch.float64).clamp_min(0), vec.to(f.dtype)
    # multiplicity on the full grid: columns 1 … M₂ − half also stand for their mirror (−ω)
    r2 = torch.arange(half, device=dev).repeat(m1)
    mirrored = (r2 >= 1) & (r2 <= m2 - half)
    mult = 1 + mirrored.long()
    # τ: the level above which at most SCHUR_MAX_RANK directions (counted on the full grid) are kept
    flat, order = lam.flatten().sort(descending=True)
    counts = mult.repeat_interleave(co)[order].cumsum(0)
    k = int((counts <= SCHUR_MAX_RANK).sum())
    tau = float(flat[k]) if k < flat.numel() else 0.0
    keep = lam > tau  # (E, co)
    weight = torch.where(keep, lam - tau, torch.zeros_like(lam)).sqrt()
    z = vec * weight.unsqueeze(-2).to(vec.dtype)  # kept columns scaled, others zero
    r_max = int(keep.sum(-1).max())
    z_top = z[..., co - r_max:]  # eigh sorts ascending: the kept columns are the last ones
    gp = f - z_top @ z_top.mH
    gp = (gp + gp.mH) / 2
    kept = keep.any(dim=-1)
    base = torch.where(kept, torch.full_like(lam[:, -1], tau), lam[:, -1])
    rho_m = torch.full_like(base, math.nan)
    todo = torch.arange(f.shape[0], device=dev)
    for margin in SCHUR_FREQ_MARGINS:
        mu_m = base[todo] + margin * lam[todo, -1] + 1e-300  # the margin relative to the symbol's scale
        ok = _shifted_cholesky(gp[todo], mu_m)[1]
        rho_m[todo[ok]] = mu_m[ok]
        todo = todo[~ok]
        if not todo.numel():
            break
    if todo.numel():
        return math.inf
    # the rounding slack of those factorisations (Demmel), one for all: γ‖R‖_F² ≤ γ·tr(ρI − Ĝ)/(1 − γ)
    gamma_c = _gamma(co)
    diag = torch.real(torch.diagonal(gp, dim1=-2, dim2=-1))
    trace_a = ((rho_m * co - diag.sum(-1)).clamp_min(0) + _U * (rho_m.abs() * co + diag.abs().sum(-1))) * (1 + _U)
    slack = gamma_c / (1 - gamma_c) * trace_a * (1 + 1e-6) + 2 * _U * (rho_m - diag.amin(-1)).abs().clamp_min(
        (diag.amax(-1) - rho_m).abs())
    delta = math.sqrt(s) * _dft_error(spec)
    e_f = (_gamma(n_in) * fro2 + (2 * fro2.sqrt() + delta) * delta) * (1 + 1e-6)
    zf2 = _sq_norm(z)
    rho = (rho_m + slack + 1.01 * _U * _sq_norm(gp).sqrt() + _gamma(max(r_max, 1)) * zf2 + e_f) * (1 + 4 * _U)
    rho_t = rho / s * (1 + 4 * _U)  # the symbol of VVᵀ is BBᴴ/s
    t, err_t = _window_matrix(window, _full_grid(rho_t.view(m1, half), m2))
    # the kept directions on the full grid: (frequency index into the Ω list, column)
    e_idx, c_idx = keep.nonzero(as_tuple=True)
    zc = z[e_idx, :, c_idx]  # (R₀, co)
    w1 = torch.div(e_idx, half, rounding_mode="floor")
    w2 = e_idx % half
    mir = mirrored[e_idx]
    zc = torch.cat([zc, zc[mir].conj()])
    w1 = torch.cat([w1, (-w1[mir]) % m1])
    w2 = torch.cat([w2, (-w2[mir]) % m2])
    if not zc.shape[0]:
        return math.inf  # nothing kept: the window bound is this bound
    freq = w1 * m2 + w2
    omega, col_freq = torch.unique(freq, return_inverse=True)
    # φ_ω(q) = e^{−2πi⟨ω,q⟩/M}/√(M₁M₂), the phase reduced exactly in integers
    q1, q2 = torch.meshgrid(torch.arange(o1, device=dev), torch.arange(o2, device=dev), indexing="ij")
    q1, q2 = q1.flatten(), q2.flatten()
    om1, om2 = torch.div(omega, m2, rounding_mode="floor"), omega % m2
    phase = (torch.outer(q1, om1) * m2 + torch.outer(q2, om2) * m1) % (m1 * m2)
    angle = phase.double() * (-2.0 * math.pi / (m1 * m2))
    phi = torch.polar(torch.full_like(angle, 1 / math.sqrt(m1 * m2)), angle)  # (o₁o₂, |Ω|)
    gz = zc.conj() @ zc.T  # ĝ[i, j] = z_iᴴ z_j
    z_fro2 = float(zc.abs().square().sum()) * (1 + 1e-6)
    n = o1 * o2
    eye = torch.eye(n, dtype=torch.float64, device=dev)
    t_diag = float(torch.diagonal(t).abs().max())

    def h_matrix(mu: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(Ĥ, D′, the computed inverse of D′ that Ĥ was formed with)."""
        e1 = err_t + 4 * _U * (mu + t_diag)
        dp = -t
        dp.diagonal().add_(mu - e1)
        e_inv = torch.cholesky_inverse(torch.linalg.cholesky(dp))
        e_inv = (e_inv + e_inv.T) / 2
        d = phi.mH @ (e_inv.to(phi.dtype) @ phi)
        return d[col_freq][:, col_freq] * gz / s, dp, e_inv

    # λ_max of the majorant T_ρ⊗I + LLᴴ (Lanczos; an estimate: the certificate decides)
    def majorant(y: torch.Tensor) -> torch.Tensor:  # y: (o₁o₂, co) real
        yc = y.to(phi.dtype)
        a = (zc.conj() * (phi.mH @ yc)[col_freq]).sum(-1)  # Lᴴy·√s
        back = torch.zeros((omega.numel(), co), dtype=phi.dtype, device=dev).index_add_(0, col_freq, zc * a.unsqueeze(-1))
        return t @ y + torch.real(phi @ back) / s

    gen = torch.Generator(device=dev).manual_seed(0)
    v0 = torch.randn((n, co), generator=gen, dtype=torch.float64, device=dev)
    theta = lanczos_top(majorant, v0 / v0.norm().clamp_min(1e-300), SCHUR_LANCZOS_STEPS, 1e-14)[0]
    for margin in SCHUR_FINAL_MARGINS:
        mu = theta * (1 + margin)
        if mu > upper * upper:
            break
        if _certify(mu, h_matrix, n, eye, z_fro2, o1 * o2 / (m1 * m2), co, s):
            return math.sqrt(mu) * (1 + 4 * _U) * (1 + ROUNDING_SLACK)
    return math.inf


def _certify(mu: float, h_matrix, n: int, eye: torch.Tensor, z_fro2: float,  # type: ignore[no-untyped-def]
             phi2: float, co: int, s: int) -> bool:
    """Steps (iii)–(v) of the module docs at μ: True when λ_max(VVᵀ) ≤ μ is proven."""
    try:
        h, dp, e_inv = h_matrix(mu)
    except RuntimeError:
        return False
    # λ_min(D′) ≥ δ_c > 0
    lam_min = float(torch.linalg.eigvalsh(dp)[0])
    if not lam_min > 0:
        return False
    delta = lam_min / 2
    ok, slack = _cholesky_certify(-dp.unsqueeze(0), -delta)
    delta_c = delta - slack
    if not (bool(ok.all()) and delta_c > 0):
        return False
    resid = eye - dp @ e_inv
    r_norm = (float(resid.norm()) * (1 + 2 * _U) + _gamma(n) * float((dp.abs() @ e_inv.abs()).norm())) * (1 + 1e-6)
    eta = r_norm / delta_c * (1 + 1e-6)
    d_max = phi2 * float(e_inv.norm()) * (1 + 40 * _U) ** 2 * (1 + 1e-6)
    eps_d = (81 * _U + _gamma(2 * n)) * d_max * 1.01
    g_c = _gamma(co)
    kappa = eps_d * (1 + g_c) + d_max * g_c + 8 * _U * (d_max + eps_d) * (1 + g_c)
    e_h = (kappa + eta * phi2) * z_fro2 / s * (1 + 1e-6)
    nu = 1 - 2 * e_h
    for _ in range(3):  # the factorisation's slack is ~γ_R·R·ν: leave room for it
        if not nu > 0:
            return False
        ok, slack = _cholesky_certify(h.unsqueeze(0), nu)
        if not bool(ok.all()):
            return False
        if nu + slack + e_h <= 1:
            return True
        nu = 1 - e_h - 2 * slack
    return False

