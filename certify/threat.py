"""The threat model's values: the norms, and ε parsed at the boundary (fractions such as 8/255
included).  No torch import, so usage errors are answered before heavy imports.  Every other module
takes its norm names and number parsing from here."""

from __future__ import annotations

import math
from typing import Any, Sequence

from .errors import BadInputError, short_repr

#: The norms lipcert certifies and attacks in: L2 and ℓ∞.
NORMS = ("l2", "linf")


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


def parse_eps_list(values: Sequence[str]) -> tuple[float, ...] | None:
    """``["0.1,8/255", "0"]`` → (0.1, 0.031…, 0.0); None when empty (zero allowed: clean accuracy)."""
    if not values:
        return None
    out = []
    for part in ",".join(values).split(","):
        if part.strip():
            try:
                out.append(parse_number(part.strip()))
            except (ValueError, ZeroDivisionError):
                raise BadInputError(f"--eps expects numbers like 0.1 or 8/255; got {part!r}") from None
    return tuple(out)


def parse_eps(values: Sequence[float | str]) -> tuple[float, ...]:
    """Accept ``[0.5, "1,1.5", "8/255"]``; reject non-positive, non-finite and duplicate values."""
    out: list[float] = []
    for v in values:
        parts = str(v).split(",") if isinstance(v, str) else [v]
        for part in parts:
            if isinstance(part, str) and not part.strip():
                continue
            try:
                e = parse_number(part) if isinstance(part, str) else float(part)
            except (ValueError, ZeroDivisionError):
                raise BadInputError(f"--eps expects numbers like 0.5 or 0.5,1,1.5; got {part!r}") from None
            if not (e > 0 and math.isfinite(e)):
                raise BadInputError(f"--eps must be positive and finite, got {e}")
            if e in out:
                raise BadInputError(f"--eps {e} is given twice; list each value once")
            out.append(e)
    if not out:
        raise BadInputError("give at least one --eps value")
    return tuple(out)
