"""Elementwise activations, clamps, selections and maxima: factor sup|f'| (every parameter checked).

Piecewise-linear ops that only select or clip (relu, clamp, hardtanh, abs, neg, maximum, where)
are exact in floating point; library functions (tanh, sigmoid, gelu, …) round by at most
:data:`~certify.lipschitz.rounding.TRANSCENDENTAL_ULPS` ulps.
"""

from __future__ import annotations

import math

import torch

from ..analyser import Analyser, Tag, Var
from ..fperror import ZERO, Err
from ..registry import CONST, VAR, Bound, NoRule, eq, finite, optional, positive, rule
from .common import leading, tensor_value

# --------------------------------------------------------------------------- parameter-free functions

#: sup |f'| of each function, with a margin above the value a fine grid gives (checked by the tests).
SLOPES: dict[str, float] = {
    "aten.tanh.default": 1.0, "aten.sigmoid.default": 0.25, "aten.sin.default": 1.0, "aten.cos.default": 1.0,
    "aten.atan.default": 1.0, "aten.erf.default": 2.0 / math.sqrt(math.pi), "aten.log_sigmoid.default": 1.0,
    "aten.silu.default": 1.1, "aten.mish.default": 1.09, "aten.hardswish.default": 1.5,
    "aten.hardsigmoid.default": 1.0 / 6.0, "aten.selu.default": 1.0507009873554805 * 1.6732632423543772,
}
#: ops computed with a few correctly rounded steps (relative rounding k·u of |out|)
FEW_STEPS = {"aten.hardswish.default": 4.0, "aten.hardsigmoid.default": 2.0}


def _elementwise_batch(a: Analyser, b: Bound) -> bool:
    return leading(a, b) and b.out.shape == a.env[b.raw["self"]].shape


@rule(*SLOPES, args={"self": VAR}, batch=_elementwise_batch)
def smooth(a: Analyser, b: Bound) -> Var:
    v = a.only(b)
    key = f"aten.{b.node.target._overloadpacket.__name__}.default"
    factor = SLOPES[key]
    a.record(b.node, factor)
    lip, err = v.lip * factor, v.err * factor
    if key in FEW_STEPS:
        return Var(lip, err + a.rounded(b, lip, err, FEW_STEPS[key]))
    return Var(lip, err + a.transcendental(b, v, lip, err))


# --------------------------------------------------------------------------- relu and friends (exact)


@rule("aten.relu.default", args={"self": VAR}, batch=_elementwise_batch)
def relu(a: Analyser, b: Bound) -> Var:
    """relu(c·z) = |c|·relu(±z): the tag lets cat recognise the two-sided ReLU."""
    v = a.only(b)
    src = b.raw["self"]
    out = Var(v.lip, v.err)
    t = v.tag
    if t is not None and t.kind == "scaled" and t.coef != 0:  # relu(cẑ + δ) = |c|·relu(±ẑ) + δ', |δ'| ≤ |δ|
        out.tag = Tag("relu", t.z, abs(t.coef), 1 if t.coef > 0 else -1, t.extra)
    else:
        out.tag = Tag("relu", src, 1.0, 1)
    return out


@rule("aten.neg.default", args={"self": VAR}, batch=_elementwise_batch)
def neg(a: Analyser, b: Bound) -> Var:
    v = a.only(b)
    return Var(v.lip, v.err, tag=scaled_tag(b.raw["self"], v, -1.0),
               affine=None if v.affine is None else (-v.affine[0], v.affine[1]))


def scaled_tag(src: object, v: Var, c: float, rounding: Err = ZERO) -> Tag | None:
    """The tag of c·x (computed with error ``rounding``) given x's tag: c·(k·z) = (ck)·z,
    c·(k·relu(±z)) = (ck)·relu(±z)."""
    t = v.tag
    if t is None:
        return Tag("scaled", src, c, 1, rounding)
    return Tag(t.kind, t.z, t.coef * c, t.sign, t.extra * abs(c) + rounding)


@rule("aten.abs.default", args={"self": VAR}, batch=_elementwise_batch)
def abs_(a: Analyser, b: Bound) -> Var:
    v = a.only(b)
    return Var(v.lip, v.err)


def _bound_value(value: object) -> None:
    if value is None:
        return
    if isinstance(value, torch.Tensor):
        return
    finite(value)


@rule("aten.hardtanh.default", args={"self": VAR, "min_val": finite, "max_val": finite}, batch=_elementwise_batch)
@rule("aten.clamp.default", args={"self": VAR, "min": _bound_value, "max": _bound_value}, batch=_elementwise_batch)
@rule("aten.clamp_min.default", args={"self": VAR, "min": finite}, batch=_elementwise_batch)
@rule("aten.clamp_max.default", args={"self": VAR, "max": finite}, batch=_elementwise_batch)
@rule("aten.relu6.default", args={"self": VAR}, batch=_elementwise_batch)
def clip(a: Analyser, b: Bound) -> Var:
    """Clipping to constant bounds: 1-Lipschitz and exact.  (Bounds with min > max give a constant.)"""
    v = a.only(b)
    return Var(v.lip, v.err)


@rule("aten.clamp.Tensor", args={"self": VAR, "min": CONST, "max": CONST}, batch=_elementwise_batch)
def clip_tensor(a: Analyser, b: Bound) -> Var:
    """Clipping to constant tensors; bounds of another shape would broadcast copies, so refuse them."""
    for name in ("min", "max"):
        t = b[name]
        if t is not None and not bool(torch.isfinite(tensor_value(t).to(torch.float64)).all()):
            raise NoRule(f"argument {name}: bounds must be finite")
        a.const(b.raw[name])
    return clip(a, b)


# --------------------------------------------------------------------------- parametrised activations


@rule("aten.leaky_relu.default", args={"self": VAR, "negative_slope": finite}, batch=_elementwise_batch)
def leaky_relu(a: Analyser, b: Bound) -> Var:
    v = a.only(b)
    factor = max(1.0, abs(float(b["negative_slope"])))
    a.record(b.node, factor)
    lip, err = v.lip * factor, v.err * factor
    return Var(lip, err + a.rounded(b, lip, err))


@rule("aten.prelu.default", "aten._prelu_kernel.default", args={"self": VAR, "weight": CONST},
      batch=_elementwise_batch)
def prelu(a: Analyser, b: Bound) -> Var:
    v = a.only(b)
    w = tensor_value(a.const(b.raw["weight"])).to(torch.float64)
    if not bool(torch.isfinite(w).all()):
        raise NoRule("argument weight: slopes must be finite")
    factor = max(1.0, float(w.abs().max()) if w.numel() else 1.0)
    a.record(b.node, factor)
    lip, err = v.lip * factor, v.err * factor
    return Var(lip, err + a.rounded(b, lip, err))


def _nonnegative_scale(value: object) -> None:
    finite(value)
    if float(value) < 0:  # type: ignore[arg-type]
        raise NoRule(f"must be ≥ 0 (exp(s·x) is unbounded for x → −∞ otherwise), got {value!r}")


@rule("aten.elu.default", args={"self": VAR, "alpha": finite, "scale": finite, "input_scale": _nonnegative_scale},
      batch=_elementwise_batch)
def elu(a: Analyser, b: Bound) -> Var:
    """scale·x for x > 0, scale·α·(exp(s·x) − 1) below: slopes |scale| and |scale·α·s|·exp(s·x) ≤ |scale·α·s|."""
    v = a.only(b)
    scale, alpha, s = abs(float(b["scale"])), abs(float(b["alpha"])), float(b["input_scale"])
    factor = scale * max(1.0, alpha * s)
    a.record(b.node, factor)
    lip, err = v.lip * factor, v.err * factor
    return Var(lip, err + a.transcendental(b, v, lip, err))


@rule("aten.celu.default", args={"self": VAR, "alpha": positive}, batch=_elementwise_batch)
def celu(a: Analyser, b: Bound) -> Var:
    """max(0, x) + min(0, α(exp(x/α) − 1)) with α > 0: slope ≤ 1."""
    v = a.only(b)
    return Var(v.lip, v.err + a.transcendental(b, v, v.lip, v.err))


@rule("aten.softplus.default", args={"self": VAR, "beta": positive, "threshold": finite}, batch=_elementwise_batch)
def softplus(a: Analyser, b: Bound) -> Var:
    """log(1 + exp(βx))/β below the threshold t (βx ≤ t), x above: slope ≤ 1, plus a jump of
    log(1 + exp(−t))/β at the switch (2·10⁻⁹ for the default t = 20), counted as error."""
    v = a.only(b)
    beta, t = float(b["beta"]), float(b["threshold"])
    jump = math.log1p(math.exp(-t)) / beta if t > -700 else -t / beta
    n = b.out[0].numel() if b.out.dim() else 1
    jump_norm = jump * a.norm.ones(n)
    return Var(v.lip, v.err + Err.constant(jump_norm) + a.transcendental(b, v, v.lip, v.err))


@rule("aten.gelu.default", args={"self": VAR, "approximate": eq("none", "tanh")}, batch=_elementwise_batch)
def gelu(a: Analyser, b: Bound) -> Var:
    """sup|gelu'| = 1.12891 (exact erf form), 1.12900 (tanh form): 1.13."""
    v = a.only(b)
    a.record(b.node, 1.13)
    lip, err = v.lip * 1.13, v.err * 1.13
    return Var(lip, err + a.transcendental(b, v, lip, err))


# --------------------------------------------------------------------------- maxima and selections


def _pair_batch(a: Analyser, b: Bound) -> bool:
    return leading(a, b)


@rule("aten.maximum.default", "aten.minimum.default", "aten.fmax.default", "aten.fmin.default",
      "aten.max.other", "aten.min.other", args={"self": VAR, "other": VAR}, batch=_pair_batch)
def maximum(a: Analyser, b: Bound) -> Var:
    """|max(x, y) − max(x', y')| ≤ max(|Δx|, |Δy|) per entry: √(L_x² + L_y²) in L2, max in ℓ∞,
    each with the copy factor of its broadcast to the output's shape."""
    return _select(a, b, ("self", "other"))


@rule("aten.where.self", args={"condition": CONST, "self": VAR, "other": VAR}, batch=_pair_batch)
def where(a: Analyser, b: Bound) -> Var:
    """A constant condition picks an entry of one input or the other."""
    cond = a.env[b.raw["condition"]] if isinstance(b.raw["condition"], torch.fx.Node) else b.raw["condition"]
    if isinstance(cond, torch.Tensor) and cond.dtype != torch.bool:
        raise NoRule("argument condition: expected a boolean tensor")
    a.const(b.raw["condition"])
    return _select(a, b, ("self", "other"))


def _select(a: Analyser, b: Bound, names: tuple[str, ...]) -> Var:
    terms = []
    for name in names:
        raw = b.raw[name]
        v = a.var(raw)
        if v is None:
            a.const(raw)
            continue
        if v.kind != "var":
            raise NoRule(f"argument {name} is not a plain tensor of the input")
        terms.append((v, a.expansion(raw, b.out)))
    lip, err = a.combine(terms, a.norm)
    return Var(lip, err)


__all__ = ["SLOPES", "scaled_tag", "optional"]
