"""The threat model: the norms, and ε parsed and validated once (fractions such as 8/255 included).

A :class:`Norm` is a string enum (``Norm.L2 == "l2"``, so JSON and old call sites read the same),
whose members carry what depends on the norm: the per-example distance, projection onto the ball,
the steepest-ascent step, the dual norm, conversions between the norms and the margin factor κ.
This follows foolbox's ``LpDistance``.  Code elsewhere asks the norm object instead of comparing
strings.  :class:`Threat` is a norm with its ε values.  No torch import at module level, so usage
errors are answered before heavy imports; the tensor methods take tensors and use their methods.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any, Sequence

from .errors import BadInputError, short_repr


class Norm(str, enum.Enum):
    """The norms lipcert certifies and attacks in: ``Norm.L2`` ("l2") and ``Norm.LINF`` ("linf")."""

    L2 = "l2"
    LINF = "linf"

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @classmethod
    def parse(cls, value: Any, *, param: str = "norm") -> "Norm":
        """"l2" / "linf" (any case) or a Norm → the Norm; anything else is a BadInputError naming ``param``."""
        if isinstance(value, Norm):
            return value
        if isinstance(value, str) and value.strip().lower() in NORMS:
            return cls(value.strip().lower())
        raise BadInputError(f"{param} must be one of {', '.join(NORMS)}; got {short_repr(value)}", param=param)

    @property
    def p(self) -> float:
        """The p of ℓp: 2 or inf."""
        return 2.0 if self is Norm.L2 else math.inf

    @property
    def dual_p(self) -> float:
        """The p of the dual norm: 2 for ℓ2, 1 for ℓ∞ (‖·‖* with ⟨a, x⟩ ≤ ‖a‖*‖x‖)."""
        return 2.0 if self is Norm.L2 else 1.0

    @property
    def symbol(self) -> str:
        """"ℓ₂" or "ℓ∞", for tables and reports."""
        return "ℓ₂" if self is Norm.L2 else "ℓ∞"

    @property
    def plain_symbol(self) -> str:
        """"ℓ2" or "ℓ∞" (a plain digit): how the summary rows, the Markdown and the PDF axes name the norm."""
        return "ℓ2" if self is Norm.L2 else "ℓ∞"

    @property
    def operator_symbol(self) -> str:
        """"ℓ₂→ℓ₂" or "ℓ∞→ℓ∞": the operator norm that a Lipschitz bound in this norm measures."""
        return f"{self.symbol}→{self.symbol}"

    @property
    def kappa(self) -> float:
        """‖e_i − e_j‖ in the dual norm: a bound L on ‖∇f‖* gives margin/(κL) as a radius (√2, or 2)."""
        return math.sqrt(2.0) if self is Norm.L2 else 2.0

    def ones(self, n: int) -> float:
        """‖(1, …, 1)‖ of n entries: √n in ℓ2, 1 in ℓ∞ (a per-entry bound → a bound on the vector)."""
        return math.sqrt(n) if self is Norm.L2 else 1.0

    def dual_ones(self, n: int) -> float:
        """‖(1, …, 1)‖* of n entries: √n in ℓ2, n in ℓ∞ (the dual of ℓ∞ is ℓ1)."""
        return math.sqrt(n) if self is Norm.L2 else float(n)

    def from_norm(self, other: "Norm | str", n: int) -> float:
        """c with ‖x‖_self ≤ c·‖x‖_other for every x of n entries (1, or √n from ℓ∞ to ℓ2)."""
        return math.sqrt(n) if (self is Norm.L2 and Norm.parse(other) is Norm.LINF) else 1.0

    # ---- tensors (flattened per example: dimension 0 is the batch)
    def distance(self, delta: Any) -> Any:
        """Per-example norm of a batch: shape (B,)."""
        flat = delta.reshape(delta.shape[0], -1)
        return flat.norm(dim=1) if self is Norm.L2 else flat.abs().amax(dim=1)

    def project(self, delta: Any, eps: Any) -> Any:
        """Project each example of ``delta`` onto the ball of its radius: ``eps`` is a (B,) tensor."""
        e = eps.to(delta.dtype).reshape((-1,) + (1,) * (delta.dim() - 1))
        if self is Norm.LINF:
            return delta.clamp(-e, e)
        n = self.distance(delta).reshape(e.shape).clamp_min(1e-12)
        return delta * (e / n).clamp(max=1.0)

    def ascent(self, grad: Any) -> Any:
        """The unit-norm steepest-ascent direction of a gradient: sign(g) in ℓ∞, g/‖g‖₂ in ℓ2."""
        if self is Norm.LINF:
            return grad.sign()
        n = self.distance(grad).clamp_min(1e-12)
        return grad / n.reshape((-1,) + (1,) * (grad.dim() - 1))


#: The norms lipcert certifies and attacks in, by name: ("l2", "linf").
NORMS = tuple(n.value for n in Norm)


def parse_number(text: str) -> float:
    """'0.5' → 0.5; '8/255' → 0.0313…  Raises ValueError or ZeroDivisionError (callers word the error)."""
    if "/" in text:
        num, den = text.split("/", 1)
        return float(num) / float(den)
    return float(text)


def parse_fraction(v: Any) -> float:
    """A number from a file (YAML, JSON): 0.5 → 0.5; '8/255' → 0.0313…; anything else is an error."""
    if isinstance(v, bool):
        raise BadInputError(f"expected a number, got {short_repr(v)}")
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            return parse_number(v)
        except (ValueError, ZeroDivisionError):
            pass
    raise BadInputError(f"expected a number or a fraction like 8/255, got {short_repr(v)}")


def parse_eps_list(values: Sequence[str], *, param: str = "eps") -> tuple[float, ...] | None:
    """``["0.1,8/255", "0"]`` → (0.1, 0.031…, 0.0); None when empty (zero allowed: clean accuracy)."""
    return parse_eps(values, allow_zero=True, param=param) if values else None


def parse_eps(values: Sequence[float | str], *, allow_zero: bool = False, param: str = "eps") -> tuple[float, ...]:
    """Accept ``[0.5, "1,1.5", "8/255"]``; reject non-finite, negative (or zero) and repeated values.

    The one ε parser: the CLI, the library calls and the suite files all come through here.
    Errors name ``param`` (the CLI turns it into its flag).
    """
    out: list[float] = []
    for v in values:
        parts = str(v).split(",") if isinstance(v, str) else [v]
        for part in parts:
            if isinstance(part, str) and not part.strip():
                continue
            out.append(_one_eps(part, allow_zero, param))
            if out[-1] in out[:-1]:
                raise BadInputError(f"{param} {out[-1]} is given twice; list each value once", param=param)
    if not out:
        raise BadInputError(f"give at least one {param} value", param=param)
    return tuple(out)


def _one_eps(part: Any, allow_zero: bool, param: str) -> float:
    try:
        e = parse_number(part.strip()) if isinstance(part, str) else float(part)
    except (ValueError, ZeroDivisionError, TypeError):
        raise BadInputError(f"{param} expects numbers like 0.5, 0.5,1,1.5 or 8/255; got {short_repr(part)}",
                            param=param) from None
    if not (math.isfinite(e) and (e >= 0 if allow_zero else e > 0)):
        bound = "non-negative" if allow_zero else "positive"
        raise BadInputError(f"{param} must be {bound} and finite, got {e}", param=param)
    return e


@dataclass(frozen=True)
class Threat:
    """A threat model: a norm and the ε values to report, parsed and validated once.

    ``Threat.parse("l2", ["0.5,1", "8/255"])`` → ``Threat(Norm.L2, (0.5, 1.0, 0.0313…))``.
    With ``allow_zero`` an ε of 0 (clean accuracy) is allowed; ε is otherwise positive and finite,
    and each value is listed once.
    """

    norm: Norm
    eps: tuple[float, ...]

    @classmethod
    def parse(cls, norm: Any, eps: Sequence[float | str], *, allow_zero: bool = False) -> "Threat":
        return cls(Norm.parse(norm), parse_eps(eps, allow_zero=allow_zero))
