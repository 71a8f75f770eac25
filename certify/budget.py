"""The certificate budget (``--certificate-budget``): how much bound-propagation work ``auto`` may spend.

``30s`` is seconds of wall time spent in bound propagation, ``200`` is bound passes (one IBP/CROWN pass
over a batch counts 1, one α-CROWN pass counts its optimisation steps), ``0`` turns bound propagation
off and ``unlimited`` bounds nothing.  Parsed once, here, without importing torch, so a bad value is a
usage error answered before the heavy imports.  The budget is checked before each step and, inside a
running step, before every backward pass (:mod:`certify.bounds.cancel`), so a run overshoots a time
budget by at most one backward pass.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import BadInputError

#: the share of the remaining time a method's first point (its probe) may use before the method is dropped
PROBE_SHARE = 0.25


@dataclass(frozen=True)
class BudgetSpec:
    """A parsed ``--certificate-budget``: seconds, or bound passes, or unlimited (both None)."""

    text: str
    seconds: float | None = None
    passes: int | None = None

    @property
    def off(self) -> bool:
        """Budget 0: no bound propagation at all."""
        return self.passes == 0 or self.seconds == 0


def budget_or_none(value: object) -> str | None:
    """A budget in its canonical text, or None when absent or ``0`` (the Lipschitz certificate alone: no
    budget recorded in the settings)."""
    if value is None:
        return None
    text = parse_budget(str(value)).text
    return None if text == "0" else text


def parse_budget(text: str) -> BudgetSpec:
    """``30s``, ``1.5s``, ``200`` (bound passes), ``0`` (no bound propagation) or ``unlimited``."""
    s = str(text).strip().lower()
    if s in ("unlimited", "inf", "none"):
        return BudgetSpec("unlimited")
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*s", s)
    if m:
        return BudgetSpec(f"{float(m.group(1)):g}s", seconds=float(m.group(1)))
    if re.fullmatch(r"\d+", s):
        return BudgetSpec(str(int(s)), passes=int(s))
    raise BadInputError(f"certificate budget must be seconds like 30s, a number of bound passes like 200, or "
                        f"unlimited; got {text!r}", param="certificate_budget")


class CertificateBudget:
    """What a run (one process) has spent of its :class:`BudgetSpec`; mutable, one per run and process.

    Under a time budget each method's cost is learnt as it runs: before its first points, one
    certification check on one point is timed (a probe, stopped once it has used :data:`PROBE_SHARE`
    of what remains divided by the checks a point needs: the method is then too costly for this
    budget and skipped), and each batch then takes only as many points as the measured rate fits.
    A bisection the budget stops keeps the radii it had certified.  ``seconds`` and ``bound_passes``
    measure the run, like its timings: under torchrun they are rank 0's, and they depend on how the
    examples were batched.
    """

    def __init__(self, spec: BudgetSpec) -> None:
        self.spec, self.seconds, self.passes, self.hit = spec, 0.0, 0, False
        self._started: float | None = None
        self._rates: dict[str, float] = {}  #: seconds per (point × certification check), per method

    @property
    def remaining(self) -> float:
        return math.inf if self.spec.seconds is None else max(0.0, self.spec.seconds - self.seconds)

    def allows(self, cost: int) -> bool:
        """Whether a step of ``cost`` bound passes may start; a refusal marks the budget as hit."""
        over = ((self.spec.seconds is not None and self.seconds >= self.spec.seconds)
                or (self.spec.passes is not None and self.passes + cost > self.spec.passes))
        self.hit = self.hit or over
        return not over

    def affordable(self, method: str, points: int, checks: int) -> int:
        """How many of ``points`` (each up to ``checks`` certification checks) to take next: all without a
        time budget or a measured rate, else as many as the rate fits in the remaining time."""
        if self.spec.seconds is None:
            return points
        rate = self._rates.get(method, 0.0)
        fit = int(self.remaining // (rate * checks)) if rate > 0 else points
        if fit < points:
            self.hit = True
        return max(0, min(points, fit))

    def start(self) -> None:
        """A step starts: time is measured from here until :meth:`charge`."""
        self._started = time.perf_counter()

    def _elapsed(self) -> float:
        return 0.0 if self._started is None else time.perf_counter() - self._started

    def stop(self, fired: list[bool], cap: float | None = None) -> Callable[[], bool]:
        """The predicate for a running step: the time budget is spent, or the step has run ``cap`` seconds
        (a probe's limit); it appends to ``fired`` when it says so."""
        def spent() -> bool:
            elapsed = self._elapsed()
            over = ((self.spec.seconds is not None and self.seconds + elapsed >= self.spec.seconds)
                    or (cap is not None and elapsed >= cap))
            if over:
                self.hit = True
                fired.append(True)
            return over
        return spent

    def needs_probe(self, method: str) -> bool:
        """Under a time budget, whether ``method``'s cost is still unknown."""
        return self.spec.seconds is not None and method not in self._rates

    def usable(self, method: str) -> bool:
        """Whether ``method`` fits at all (False once a probe or a step found it too costly)."""
        return self._rates.get(method, 0.0) < math.inf

    def charge(self, cost: int) -> float:
        """A step ended: count its passes and the seconds since :meth:`start` (returned)."""
        seconds = self._elapsed()
        self.seconds += seconds
        self._started = None
        self.passes += cost
        return seconds

    def measured(self, method: str, seconds: float, point_checks: int, complete: bool) -> None:
        """Learn ``method``'s rate from a step; a step stopped early makes the method too costly (rate ∞)."""
        rate = seconds / max(1, point_checks) if complete else math.inf
        self._rates[method] = rate if method not in self._rates or not complete else min(rate, self._rates[method])

    def as_dict(self) -> dict[str, Any]:
        return {"budget": self.spec.text, "hit": self.hit, "seconds": self.seconds, "bound_passes": self.passes}
