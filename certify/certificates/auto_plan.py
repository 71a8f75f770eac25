"""The ``auto`` certificate: a point is certified when any sound method that ran certifies it
(``docs/certificates.md``).

An :class:`AutoPlan` runs, per batch, the Lipschitz certificate (when the model has one, as
:func:`~.plan.plan_certificate` plans it) and then bound propagation (when the model exports to a
graph :mod:`certify.bounds` supports): CROWN (which is never below IBP: :func:`certify.bounds.margin_bounds`
keeps the larger of the two), then α-CROWN.  Each point keeps the largest radius, every one of them
sound, and the method that gave it (:data:`RADIUS_METHODS`, code −1 for none).  Bound propagation
keeps a radius only where it is larger, so it can only raise it.

A :class:`CertificateBudget` bounds the bound-propagation work: ``30s`` (seconds of wall time spent in
bound propagation) or ``200`` (bound passes: one IBP/CROWN pass over a batch counts 1, one α-CROWN pass
counts its optimisation steps).  When it runs out, the remaining points keep what the cheaper methods
gave, and the budget says it was hit.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from ..device import certificate_precision
from ..errors import BadInputError
from ..threat import Norm
from .bound_plan import BoundPlan
from .plan import CertificatePlan

#: the names a per-example ``radius_method`` code stands for (code = index; −1: not certified)
RADIUS_METHODS = ("l2-multi", "l2-single", "linf-dist", "pairwise", "ibp", "crown", "alpha-crown")


def method_code(name: str) -> int:
    return RADIUS_METHODS.index(name)


def method_names(codes: Any) -> list[str | None]:
    """Per-example names of ``codes`` (None for −1)."""
    return [RADIUS_METHODS[int(c)] if int(c) >= 0 else None for c in codes]


@dataclass(frozen=True)
class BudgetSpec:
    """A parsed ``--certificate-budget``: seconds, or bound passes, or unlimited (both None)."""

    text: str
    seconds: float | None = None
    passes: int | None = None


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
    """What a run has spent of its :class:`BudgetSpec` (mutable: one per run and process)."""

    def __init__(self, spec: BudgetSpec) -> None:
        self.spec, self.seconds, self.passes, self.hit = spec, 0.0, 0, False

    def allows(self, cost: int) -> bool:
        """Whether a step of ``cost`` bound passes may start; a refusal marks the budget as hit."""
        over = ((self.spec.seconds is not None and self.seconds >= self.spec.seconds)
                or (self.spec.passes is not None and self.passes + cost > self.spec.passes))
        self.hit = self.hit or over
        return not over

    def charge(self, cost: int, seconds: float) -> None:
        self.passes += cost
        self.seconds += seconds

    def as_dict(self) -> dict[str, Any]:
        return {"budget": self.spec.text, "hit": self.hit, "seconds": self.seconds, "bound_passes": self.passes}


@dataclass(frozen=True)
class AutoPlan(CertificatePlan):
    """The Lipschitz plan's fields (when there is one) plus bound propagation; see the module docs."""

    lipschitz: CertificatePlan | None = field(default=None, repr=False, compare=False)
    bounds: BoundPlan | None = field(default=None, repr=False, compare=False)  #: CROWN settings
    bounds_skipped: str | None = None  #: why bound propagation did not run (unverifiable model, budget 0)
    budget: CertificateBudget | None = field(default=None, repr=False, compare=False)

    @property
    def methods(self) -> tuple[str, ...]:
        lip = (self.lipschitz.certificate,) if self.lipschitz is not None else ()
        return lip + (("crown", "alpha-crown") if self.bounds is not None else ())

    def logits(self, module: Any, x: torch.Tensor) -> tuple[torch.Tensor, Any]:
        if self.lipschitz is not None:
            return self.lipschitz.logits(module, x)
        with certificate_precision(x.device):
            return module(x), None

    def radii(self, logits: torch.Tensor, stats: Any, err: Any = None) -> torch.Tensor:
        """The Lipschitz radii alone (for callers that have no inputs, e.g. VNN-LIB proofs)."""
        if self.lipschitz is None:
            return torch.zeros_like(stats.gap, dtype=torch.float64)
        return self.lipschitz.radii(logits, stats, err)

    def example_radii(self, x: torch.Tensor, stats: Any, logits: torch.Tensor | None = None,
                      err: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(radius, method code) per example: the largest sound radius over the methods that ran."""
        b = int(x.shape[0])
        best = torch.zeros(b, dtype=torch.float64, device=stats.gap.device)
        code = torch.full((b,), -1, dtype=torch.int64, device=best.device)
        if self.lipschitz is not None:
            lip = self.lipschitz.radii(logits, stats, err).to(torch.float64)
            lip = torch.nan_to_num(lip, nan=0.0).clamp_min(0.0)
            code = torch.where(lip > 0, method_code(self.lipschitz.certificate), code)
            best = lip
        if self.bounds is None:
            return best, code
        for method in ("crown", "alpha-crown"):
            best, code = self._raise_with(method, x, stats, best, code)
        return best, code

    def _raise_with(self, method: str, x: torch.Tensor, stats: Any, best: torch.Tensor, code: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        from ..bounds import certified_radii

        assert self.bounds is not None and self.budget is not None
        settings = self.bounds.settings
        if method == "alpha-crown":  # refine CROWN's bracket: fewer steps, each costing alpha_steps passes
            settings = replace(settings, method=method, iterations=max(1, settings.iterations - 6))
            cost = (settings.iterations + 1) * settings.alpha_steps
        else:
            cost = settings.iterations + 1
        if not self.budget.allows(cost):
            return best, code
        keep = (stats.margin > 0).nonzero().squeeze(1)  # only correct points can be certified
        if keep.numel() == 0:
            return best, code
        start = time.perf_counter()
        idx = keep.to(x.device)
        pred = stats.prediction.to(x.device)[idx]
        lower = best[keep].to(x.device)
        upper, start_at = None, None  # CROWN bisects from scratch, as --certificate crown does
        if method == "alpha-crown":  # from the best radius so far, as --certificate alpha-crown does from CROWN's
            start_at = lower
            step = self.bounds.settings.eps_max / 2 ** self.bounds.settings.iterations
            upper = torch.clamp(2 * lower + step, max=settings.eps_max)
        r = certified_radii(self.bounds.network, x[idx], pred, settings, lower=start_at, upper=upper).to(best.device)
        self.budget.charge(cost, time.perf_counter() - start)
        better = torch.zeros_like(best, dtype=torch.bool)
        better[keep] = r > best[keep]
        full = best.clone()
        full[keep] = torch.maximum(r, best[keep])
        return full, torch.where(better, method_code(method), code)


def auto_plan(model: Any, *, norm: Norm, lipschitz: CertificatePlan | None, refusal: str | None,
              budget: BudgetSpec, input_shape: tuple[int, ...] | None) -> CertificatePlan:
    """The combined plan; refuses (re-raising the Lipschitz refusal) only when no method applies."""
    from ..bounds import UnverifiableOpError
    from ..errors import LipschitzUnverifiedError
    from .bound_plan import bound_plan
    from .plan import example_shape

    bounds, skipped = None, None
    if budget.passes == 0 or budget.seconds == 0:
        skipped = f"certificate budget {budget.text}"
    else:
        try:
            bounds = bound_plan(model, norm=norm, certificate="crown", lipschitz_constant=None,
                                input_shape=example_shape(model, input_shape))
        except (UnverifiableOpError, BadInputError) as err:
            skipped = f"bound propagation does not apply: {str(err).splitlines()[0]}"
    if bounds is None and lipschitz is None:
        raise LipschitzUnverifiedError(f"{refusal}; {skipped}")
    base = lipschitz if lipschitz is not None else replace(
        bounds, certificate="auto", reason=f"no Lipschitz certificate ({refusal})")
    fields = {f: getattr(base, f) for f in CertificatePlan.__dataclass_fields__}
    if lipschitz is None:
        fields.update(lipschitz_constant=math.inf, reason=f"no Lipschitz certificate ({refusal}); {bounds.reason}")
    elif bounds is not None:
        fields["reason"] = f"{lipschitz.reason}; and {bounds.reason}"
    return AutoPlan(**fields, lipschitz=lipschitz, bounds=bounds, bounds_skipped=skipped,
                    budget=CertificateBudget(budget))
