"""The ``auto`` certificate: a point is certified when any sound method that ran certifies it
(``docs/certificates.md``).

An :class:`AutoPlan` runs, per batch, the Lipschitz certificate (when the model has one, as
:func:`~.plan.plan_certificate` plans it) and then bound propagation (when the model exports to a
graph :mod:`certify.bounds` supports): CROWN (which is never below IBP: :func:`certify.bounds.margin_bounds`
keeps the larger of the two), then α-CROWN.  Each point keeps the largest radius, every one of them
sound, and the method that gave it (:data:`RADIUS_METHODS`, code −1 for none).  Bound propagation
keeps a radius only where it is larger, so it can only raise it.

A :class:`~certify.budget.CertificateBudget` bounds the bound-propagation work (:mod:`certify.budget`).
When it runs out, a running bisection stops at its last certified radius, the remaining points keep
what the cheaper methods gave, and the budget says it was hit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from ..budget import PROBE_SHARE, BudgetSpec, CertificateBudget
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
            if method == "alpha-crown" and not self.budget.usable("crown"):  # α-CROWN costs more than CROWN
                break
            best, code = self._raise_with(method, x, stats, best, code)
        return best, code

    def _raise_with(self, method: str, x: torch.Tensor, stats: Any, best: torch.Tensor, code: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Raise ``best`` with ``method`` on the correct points the budget affords (see :mod:`certify.budget`)."""
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
        checks = settings.iterations + 1  # certification checks per point, at most
        if keep.numel() and not self._probe(method, settings, x, stats, best, keep[:1], checks):
            return best, code  # too costly for what remains of the budget
        done = 0
        while done < keep.numel():
            take = self.budget.affordable(method, int(keep.numel()) - done, checks)
            if take == 0:
                break
            part = keep[done:done + take]
            r, complete = self._radii(method, settings, x, stats, best, part, cost)
            better = torch.zeros_like(best, dtype=torch.bool)
            better[part] = r > best[part]
            best = best.clone()
            best[part] = torch.maximum(r, best[part])
            code = torch.where(better, method_code(method), code)
            done += int(part.numel())
            if not complete:
                break
        return best, code

    def _probe(self, method: str, settings: Any, x: torch.Tensor, stats: Any, best: torch.Tensor,
               part: torch.Tensor, checks: int) -> bool:
        """Under a time budget, time one certification check of ``method`` on one point (at the radius its
        bisection would try first) unless its rate is known; False when the method is too costly: the
        check did not end within :data:`~certify.budget.PROBE_SHARE` of the remaining time per check."""
        from ..bounds import certified
        from ..bounds.cancel import BoundsStopped, stop_when

        assert self.bounds is not None and self.budget is not None
        if not self.budget.needs_probe(method):
            return self.budget.usable(method)
        idx = part.to(x.device)
        lower = best[part].to(x.device)
        eps = (torch.full_like(lower, settings.eps_max / 2) if method == "crown"
               else (lower + self._alpha_upper(lower, settings)) / 2)
        fired: list[bool] = []
        self.budget.start()
        try:
            with stop_when(self.budget.stop(fired, cap=PROBE_SHARE * self.budget.remaining / checks)):
                certified(self.bounds.network, x[idx], stats.prediction.to(x.device)[idx], eps, settings)
        except BoundsStopped:
            pass
        seconds = self.budget.charge(0)
        self.budget.measured(method, seconds, 1, complete=not fired)
        return not fired

    def _alpha_upper(self, lower: torch.Tensor, settings: Any) -> torch.Tensor:
        """The top of α-CROWN's bracket above the best radius so far (one CROWN bisection step and a doubling)."""
        assert self.bounds is not None
        step = self.bounds.settings.eps_max / 2 ** self.bounds.settings.iterations
        return torch.clamp(2 * lower + step, max=settings.eps_max)

    def _radii(self, method: str, settings: Any, x: torch.Tensor, stats: Any, best: torch.Tensor,
               part: torch.Tensor, cost: int) -> tuple[torch.Tensor, bool]:
        """Radii of the points ``part`` (sound even when the budget stops the bisection early; ``cost`` bound
        passes) and whether the bisection completed."""
        from ..bounds import certified_radii

        assert self.bounds is not None and self.budget is not None
        idx = part.to(x.device)
        pred = stats.prediction.to(x.device)[idx]
        lower = best[part].to(x.device)
        upper, start_at = None, None  # CROWN bisects from scratch, as --certificate crown does
        if method == "alpha-crown":  # from the best radius so far, as --certificate alpha-crown does from CROWN's
            start_at, upper = lower, self._alpha_upper(lower, settings)
        stopped: list[bool] = []
        self.budget.start()
        r = certified_radii(self.bounds.network, x[idx], pred, settings, lower=start_at, upper=upper,
                            stop=self.budget.stop(stopped))
        seconds = self.budget.charge(cost)
        self.budget.measured(method, seconds, int(part.numel()) * (settings.iterations + 1), complete=not stopped)
        return r.to(best.device), not stopped


def auto_plan(model: Any, *, norm: Norm, lipschitz: CertificatePlan | None, refusal: str | None,
              budget: BudgetSpec, input_shape: tuple[int, ...] | None) -> CertificatePlan:
    """The combined plan; refuses (re-raising the Lipschitz refusal) only when no method applies."""
    from ..bounds import UnverifiableOpError
    from ..errors import LipschitzUnverifiedError
    from .bound_plan import bound_plan
    from .plan import example_shape

    bounds, skipped = None, None
    if budget.off:
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
