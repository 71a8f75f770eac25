"""Reductions along non-batch dimensions: sums and means (non-negative linear maps), maxima,
log-sum-exp, vector norms and ℓp distances to constant rows (ℓ∞-dist neurons)."""

from __future__ import annotations

import math

import torch

from ...threat import Norm
from ..analyser import Analyser, Var
from ..fperror import Err
from ..registry import CONST, NO_EFFECT, VAR, Bound, NoRule, rule
from ..rounding import gamma
from .common import apply_with, leading, nonneg_linear, not_dim


def _dtype(value: object) -> None:
    if value is not None and value not in (torch.float32, torch.float64):
        raise NoRule(f"accumulating in {value} is not supported")


def _reduced(a: Analyser, b: Bound) -> int:
    """How many entries one output of the reduction combines."""
    x = a.env[b.raw["self"]]
    return max(1, x.numel() // max(b.out.numel(), 1))


@rule("aten.sum.dim_IntList", args={"self": VAR, "dim": CONST, "keepdim": CONST, "dtype": _dtype},
      batch=not_dim("dim"))
@rule("aten.mean.dim", args={"self": VAR, "dim": CONST, "keepdim": CONST, "dtype": _dtype}, batch=not_dim("dim"))
@rule("aten.sum.default", "aten.mean.default", args={"self": VAR, "dtype": _dtype}, batch=lambda a, b: False)
def sum_mean(a: Analyser, b: Bound) -> Var:
    return nonneg_linear(a, b, apply_with(b, drop=("dtype",)), _reduced(a, b) + 1)


@rule("aten.amax.default", "aten.amin.default", args={"self": VAR, "dim": CONST, "keepdim": CONST},
      batch=not_dim("dim"))
def amax(a: Analyser, b: Bound) -> Var:
    """max over disjoint groups: 1-Lipschitz in ℓ∞ and in L2 (Σ_g max_j Δ² ≤ ‖Δ‖²); exact."""
    v = a.only(b)
    return Var(v.lip, v.err)


@rule("aten.max.dim", "aten.min.dim", args={"self": VAR, "dim": CONST, "keepdim": CONST}, batch=not_dim("dim"))
def max_dim(a: Analyser, b: Bound) -> Var:
    v = a.only(b)
    return Var(v.lip, v.err, kind="tuple", items=(Var(v.lip, v.err), None))


@rule("aten.max.default", "aten.min.default", args={"self": VAR}, batch=lambda a, b: False)
def max_all(a: Analyser, b: Bound) -> Var:  # pragma: no cover - always refused by its batch check
    raise NoRule("a maximum over the whole batch")


@rule("aten.logsumexp.default", args={"self": VAR, "dim": CONST, "keepdim": CONST}, batch=not_dim("dim"))
def logsumexp(a: Analyser, b: Bound) -> Var:
    """The gradient is a softmax (‖·‖₁ = 1): 1-Lipschitz per group in ℓ∞ and in L2."""
    v = a.only(b)
    n = _reduced(a, b)
    ulps = n + 4 + 16 + 1  # γ_{n+4} (the sum) + 16 ulps (exp, log) + the final addition, with room
    return Var(v.lip, v.err + a.transcendental(b, v, v.lip, v.err, ulps=ulps * 1.01))


def _order(value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise NoRule(f"expected a numeric order, got {value!r}")
    if not (float(value) >= 1):  # p < 1 is not a norm: not Lipschitz at 0
        raise NoRule(f"order {value!r} < 1 is not a norm (not Lipschitz near 0)")


def _norm_factor(a: Analyser, p: float, m: float) -> float:
    """‖·‖_p over m entries, as a map from the analysis norm."""
    if a.norm is Norm.LINF:
        return 1.0 if math.isinf(p) else m ** (1.0 / p)
    return 1.0 if p >= 2 else m ** (1.0 / p - 0.5)


@rule("aten.linalg_vector_norm.default", args={"self": VAR, "ord": _order, "dim": CONST, "keepdim": CONST,
                                               "dtype": _dtype}, batch=not_dim("dim"))
def vector_norm(a: Analyser, b: Bound) -> Var:
    return _p_norm(a, b, float(b["ord"]))


@rule("aten.norm.ScalarOpt_dim", args={"self": VAR, "p": lambda p: None if p is None else _order(p), "dim": CONST,
                                       "keepdim": CONST}, batch=not_dim("dim"))
def norm(a: Analyser, b: Bound) -> Var:
    return _p_norm(a, b, 2.0 if b["p"] is None else float(b["p"]))


def _p_norm(a: Analyser, b: Bound, p: float) -> Var:
    v = a.only(b)
    m = _reduced(a, b)
    factor = _norm_factor(a, p, m)
    a.record(b.node, factor)
    lip, err = v.lip * factor, v.err * factor
    return Var(lip, err + a.rounded(b, lip, err, m + 4))


def _cdist_order(value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or float(value) not in (1.0, 2.0, math.inf):
        raise NoRule(f"only p = 1, 2 or inf are supported, got {value!r}")


def _cdist_batch(a: Analyser, b: Bound) -> bool:
    x1, x2 = a.env[b.raw["x1"]], a.const(b.raw["x2"])
    return leading(a, b) and x1.dim() in (2, 3) and isinstance(x2, torch.Tensor) and x2.dim() == 2


@rule("aten.cdist.default", "aten._cdist_forward.default", args={"x1": VAR, "x2": CONST, "p": _cdist_order,
                                                                 "compute_mode": NO_EFFECT}, batch=_cdist_batch)
def cdist(a: Analyser, b: Bound) -> Var:
    """ℓp distances to constant rows w_j: |‖x−w‖_p − ‖x'−w‖_p| ≤ ‖x−x'‖_p ([LINF-DIST] Fact 3.2).

    ℓ∞ analysis: ‖·‖_p ≤ d^{1/p}‖·‖_∞ per output (exactly 1 at p = ∞).  L2: each of the m outputs
    moves by ≤ c‖Δ‖₂ with c = d^{1/p−1/2} for p < 2 (else 1), so √m·c.  Rounding: p = ∞ only
    subtracts (u·(|x|+|w|) per entry); p = 1 sums d terms; p = 2 may use the matrix-product
    formula ‖x‖² + ‖w‖² − 2x·w, whose error under the root is √γ·(‖x‖ + ‖w‖).
    """
    v = a.only(b, "x1")
    w = a.const(b.raw["x2"])
    if not bool(torch.isfinite(w).all()):
        raise NoRule("argument x2 has NaN or Inf entries")
    p = float(b["p"])
    x = a.env[b.raw["x1"]]
    d, m = x.shape[-1], b.out.shape[-1]
    if a.norm is Norm.LINF:
        factor = 1.0 if math.isinf(p) else d ** (1.0 / p)
    else:
        factor = math.sqrt(m) * (d ** (1.0 / p - 0.5) if p < 2 else 1.0)
    a.record(b.node, factor)
    lip, err = v.lip * factor, v.err * factor
    u = a.unit(b.out)
    w_inf = float(w.detach().abs().max()) if w.numel() else 0.0
    w_2 = float(w.detach().double().norm(dim=1).max()) if w.numel() else 0.0
    spread = a.norm.ones(b.out[0].numel())  # per-output bound → norm over outputs
    if math.isinf(p):  # |x_i − w_i| rounds once; max and abs are exact: per output ≤ 2u(‖x‖∞ + max|w|)
        rho, weight, const = 2 * u, 1.0, w_inf
    elif p == 1.0:  # a sum of d rounded terms
        rho, weight, const = gamma(d + 1, u), a.norm.dual_ones(d), d * w_inf  # ‖x‖₁ ≤ ‖1‖*·‖x‖
    else:  # ‖x‖² + ‖w‖² − 2x·w under the root: √γ·(‖x‖₂ + ‖w‖₂), twice for safety
        rho, weight, const = 2 * math.sqrt(gamma(d + 3, u)), Norm.L2.from_norm(a.norm, d), w_2  # ‖x‖₂ ≤ c‖x‖
    err = err + Err.rounding(rho * spread, [a.mag(b.raw["x1"], v, weight)], const)
    return Var(lip, err)
