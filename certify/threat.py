"""Parsing ε values at the boundary, without torch: usage errors are answered before heavy imports."""

from __future__ import annotations

import math
from typing import Sequence

from .errors import BadInputError


def parse_number(text: str) -> float:
    """'0.5' → 0.5; '8/255' → 0.0313…"""
    if "/" in text:
        num, den = text.split("/", 1)
        return float(num) / float(den)
    return float(text)


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
