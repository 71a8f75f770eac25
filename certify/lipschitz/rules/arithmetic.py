"""Sums, differences, products and quotients with constants, and norm pooling √(A·x²).

``x + c``, ``c − x``, ``x·c`` and ``x/c`` scale the Lipschitz constant by |α|, max|c| or
max|1/c| (times the copy factor of a broadcast).  Two input-dependent terms add their bounds,
except ``k·relu(±z) ∓ k·z = k·relu(∓z)``, which is as Lipschitz as k·z ([L2NNN] Lemma 4).
``x·x``, ``x²`` and ``x**2`` start a sum of squares; ``sqrt`` of a non-negative combination of
squares (plus a non-negative constant) is a norm pooling with the bound of
:func:`~certify.lipschitz.rules.common.nonneg_linear`.
"""

from __future__ import annotations

import math

import torch

from ...threat import Norm
from ..analyser import Analyser, Tag, Var
from ..fperror import ZERO, Err
from ..registry import VAR, Bound, NoRule, finite, rule
from .common import leading
from .elementwise import scaled_tag


def _const_tensor(a: Analyser, raw: object) -> torch.Tensor:
    value = a.const(raw)
    device = value.device if isinstance(value, torch.Tensor) else "cpu"
    c = torch.as_tensor(value, dtype=torch.float64, device=device)
    if not bool(torch.isfinite(c).all()):
        raise NoRule("a constant operand is not finite")
    return c


def _is_zero_scalar(c: torch.Tensor) -> bool:
    return c.numel() == 1 and float(c) == 0.0


# --------------------------------------------------------------------------- add / sub


def _signs(b: Bound) -> tuple[object, object, float, float]:
    """(x, y, s_x, s_y): the op computes s_x·x + s_y·y."""
    name = b.node.target._overloadpacket.__name__
    alpha = float(b["alpha"])
    if name == "rsub":  # other − α·self
        return b.raw["other"], b.raw["self"], 1.0, -alpha
    return b.raw["self"], b.raw["other"], 1.0, alpha if name == "add" else -alpha


@rule("aten.add.Tensor", "aten.sub.Tensor", "aten.rsub.Tensor", "aten.add.Scalar", "aten.sub.Scalar",
      "aten.rsub.Scalar", args={"self": VAR, "other": VAR, "alpha": finite}, batch=leading)
def add(a: Analyser, b: Bound) -> Var:
    x, y, sx, sy = _signs(b)
    vx, vy = a.var(x), a.var(y)
    if (vx is not None and vx.kind == "sq") or (vy is not None and vy.kind == "sq"):
        return _add_squares(a, b, [(x, sx, vx), (y, sy, vy)])
    terms = [(n, s, v) for n, s, v in ((x, sx, vx), (y, sy, vy)) if v is not None]
    if any(v.kind != "var" for _, _, v in terms):
        raise NoRule("an operand is not a plain tensor of the input")
    k = 1.0 if abs(sy) == 1.0 else 2.0  # α·y rounds once more
    if len(terms) == 1:
        return _add_const(a, b, terms[0], [(n, s) for n, s in ((x, sx), (y, sy)) if a.var(n) is None][0], k)
    lip, err = a.combine([(v, abs(s) * a.expansion(n, b.out)) for n, s, v in terms], "sum")
    own = a.rounded(b, lip, err, k)
    err = err + own
    pattern = _relu_difference(a, b, own, (x, sx, vx), (y, sy, vy))  # type: ignore[arg-type]
    if pattern is not None:
        return pattern
    a.record(b.node, lip / max(max(v.lip for _, _, v in terms), 1e-300))
    return Var(lip, err)


def _add_const(a: Analyser, b: Bound, term: tuple, const: tuple, k: float) -> Var:  # type: ignore[type-arg]
    n, s, v = term
    c = _const_tensor(a, const[0])
    e = a.expansion(n, b.out)
    lip, err = v.lip * abs(s) * e, v.err * (abs(s) * e)
    own = a.rounded(b, lip, err, k)
    err = err + own
    out = Var(lip, err)
    if e == 1.0 and b.out.shape == a.env[n].shape:
        if v.affine is not None:
            w, lh = v.affine
            out.affine = (w * s, lh)
        if _is_zero_scalar(c):
            out.tag = scaled_tag(n, v, s, own)
    return out


def _relu_difference(a: Analyser, b: Bound, own: Err, *terms: tuple[object, float, Var]) -> Var | None:
    """s₁·k·relu(σz) + s₂·c·z with s₂·c·σ = −s₁·k is s₁·k·relu(−σz): Lipschitz |s₁k|·L_z, and the
    identity holds for the computed z too, so the error is |s₁k|·E_z plus the roundings on the way."""
    for (n1, s1, v1), (n2, s2, v2) in (terms, terms[::-1]):
        t = v1.tag
        if t is None or t.kind != "relu":
            continue
        if n2 is t.z:
            c, extra2 = 1.0, ZERO
        elif v2.tag is not None and v2.tag.kind == "scaled" and v2.tag.z is t.z:
            c, extra2 = v2.tag.coef, v2.tag.extra
        else:
            continue
        same = a.env[n1].shape == a.env[n2].shape == b.out.shape == a.env[t.z].shape
        if same and s2 * c * t.sign == -s1 * t.coef:
            z = a.info[t.z]
            extra = Err.lin([(t.extra, abs(s1)), (extra2, abs(s2)), (own, 1.0)])
            tag = Tag("relu", t.z, s1 * t.coef, -t.sign, extra)
            return Var(abs(s1 * t.coef) * z.lip, z.err * abs(s1 * t.coef) + extra, tag=tag)
    return None


def _add_squares(a: Analyser, b: Bound, terms: list[tuple[object, float, Var | None]]) -> Var:
    """A(x²) + c with c ≥ 0, or the sum of two such terms with positive signs."""
    q = qrel = 0.0
    qerr: tuple = ()  # type: ignore[type-arg]
    for n, s, v in terms:
        if v is None:
            c = _const_tensor(a, n)
            if c.numel() and s * float(c.min()) < 0:
                raise NoRule("a negative constant under a square root")
        elif v.kind == "sq" and s > 0:
            if a.env[n].shape != b.out.shape:
                raise NoRule("a broadcast sum of squares")
            q, qrel = q + v.q * s, max(qrel, v.qrel)
            qerr = qerr + tuple((e, m * s) for e, m in v.qerr)
        else:
            raise NoRule("a difference involving a sum of squares")
    return Var(0.0, kind="sq", q=q, qerr=qerr, qrel=qrel + 2 * a.unit(b.out))


# --------------------------------------------------------------------------- mul / div


@rule("aten.mul.Tensor", "aten.mul.Scalar", args={"self": VAR, "other": VAR}, batch=leading)
def mul(a: Analyser, b: Bound) -> Var:
    x, y = b.raw["self"], b.raw["other"]
    vx, vy = a.var(x), a.var(y)
    if vx is not None and vy is not None:
        if x is y and vx.kind == "var":
            return _square(a, b, vx)
        raise NoRule("a product of two tensors of the input is not Lipschitz")
    if vx is None:
        x, y, vx = y, x, vy
    assert vx is not None
    return _scale(a, b, x, vx, _const_tensor(a, y))


@rule("aten.div.Tensor", "aten.div.Scalar", args={"self": VAR, "other": VAR}, batch=leading)
def div(a: Analyser, b: Bound) -> Var:
    vx = a.var(b.raw["self"])
    if vx is None or a.var(b.raw["other"]) is not None:
        raise NoRule("division by a tensor of the input is not Lipschitz")
    c = _const_tensor(a, b.raw["other"])
    if c.numel() and bool((c == 0).any()):
        raise NoRule("division by zero")
    return _scale(a, b, b.raw["self"], vx, 1.0 / c)


@rule("aten.div.Tensor_mode", args={"self": VAR, "other": VAR, "rounding_mode": lambda m: _no_rounding(m)},
      batch=leading)
def div_mode(a: Analyser, b: Bound) -> Var:
    return div(a, b)


def _no_rounding(mode: object) -> None:
    if mode is not None:
        raise NoRule(f"rounding_mode={mode!r} makes the quotient a step function")


def _scale(a: Analyser, b: Bound, x: object, v: Var, c: torch.Tensor) -> Var:
    if v.kind == "sq":
        if c.numel() and float(c.min()) < 0:
            raise NoRule("a negative multiple of a sum of squares")
        if a.env[x].shape != b.out.shape:
            raise NoRule("a broadcast sum of squares")
        m = float(c.abs().max()) if c.numel() else 0.0
        return Var(0.0, kind="sq", q=v.q * m, qerr=tuple((e, w * m) for e, w in v.qerr), qrel=v.qrel + a.unit(b.out))
    if v.kind != "var":
        raise NoRule("an operand is not a plain tensor of the input")
    m = float(c.abs().max()) if c.numel() else 0.0
    factor = m * a.expansion(x, b.out)
    lip, err = v.lip * factor, v.err * factor
    own = a.rounded(b, lip, err)
    out = Var(lip, err + own)
    if factor != 1.0:
        a.record(b.node, factor)
    if b.out.shape == a.env[x].shape:
        if c.numel() == 1 and float(c) != 0.0:
            out.tag = scaled_tag(x, v, float(c), own)
        if v.affine is not None and (c.numel() == 1 or c.numel() == b.out.shape[-1] and _along_last(c, b.out)):
            w, lh = v.affine
            scale = c.reshape(-1, 1).to(w) if c.numel() > 1 else c.to(w)
            out.affine = (w * scale, lh)
    return out


def _along_last(c: torch.Tensor, out: torch.Tensor) -> bool:
    """The constant varies only along the output's last dimension (one scale per logit)."""
    return c.dim() >= 1 and c.shape[-1] == out.shape[-1] and all(s == 1 for s in c.shape[:-1])


def _square(a: Analyser, b: Bound, v: Var) -> Var:
    return Var(0.0, kind="sq", q=v.lip ** 2, qerr=((v.err, 1.0),), qrel=a.unit(b.out))


@rule("aten.square.default", args={"self": VAR}, batch=leading)
def square(a: Analyser, b: Bound) -> Var:
    return _square(a, b, a.only(b))


def _exponent(value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or float(value) not in (0.5, 1.0, 2.0):
        raise NoRule(f"only exponents 1, 2 and 0.5 (of a sum of squares) are supported, got {value!r}")


@rule("aten.pow.Tensor_Scalar", args={"self": VAR, "exponent": _exponent}, batch=leading)
def pow_(a: Analyser, b: Bound) -> Var:
    e = float(b["exponent"])
    v = a.only(b, kinds=("var", "sq"))
    if e == 2.0 and v.kind == "var":
        return _square(a, b, v)
    if e == 1.0 and v.kind == "var":
        return Var(v.lip, v.err)
    if e == 0.5 and v.kind == "sq":
        return _sqrt(a, b, v)
    raise NoRule(f"exponent {e:g} of {'a sum of squares' if v.kind == 'sq' else 'a tensor'}")


@rule("aten.sqrt.default", args={"self": VAR}, batch=leading)
def sqrt(a: Analyser, b: Bound) -> Var:
    v = a.only(b, kinds=("var", "sq"))
    if v.kind != "sq":
        raise NoRule("sqrt is only Lipschitz on a sum of squares (norm pooling)")
    return _sqrt(a, b, v)


def _sqrt(a: Analyser, b: Bound, v: Var) -> Var:
    """√(A x² + c), A ≥ 0, c ≥ 0: Lipschitz √q; error √qerr plus the relative rounding of the
    squares and sums (halved by the root) and the root's own."""
    lip = math.sqrt(v.q)
    a.record(b.node, lip)
    rel = v.qrel / 2.0 + a.unit(b.out)
    err = Err.combine([(e, math.sqrt(m)) for e, m in v.qerr], Norm.L2)
    rounding = Err.rounding(rel / max(1.0 - 2.0 * rel, 0.5), [(a.out_key(b), 1.0, lip, err)])
    return Var(lip, err + rounding)
