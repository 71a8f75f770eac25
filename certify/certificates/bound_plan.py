"""Certificates from bound propagation (``ibp``, ``crown``, ``alpha-crown``; ``docs/bounds.md``).

A :class:`BoundPlan` is a :class:`~.plan.CertificatePlan` whose radii come, per batch, from
:func:`certify.bounds.certified_radii` on the examples themselves (by bisection, in the user's norm)
rather than from a margin and a Lipschitz constant, so :func:`certify.certify`, its JSON, error curves
and gates work unchanged.  α-CROWN starts its bracket at CROWN's radius, so it never certifies less.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from ..checkpoints import LoadedModel
from ..device import certificate_precision
from ..errors import BadInputError, RuntimeFailure
from ..threat import Norm
from .plan import CertificatePlan


@dataclass(frozen=True)
class BoundPlan(CertificatePlan):
    """Radii by bound propagation; ``lipschitz_constant`` is ∞ (no constant is used)."""

    network: Any = field(default=None, repr=False, compare=False)  #: a :class:`certify.bounds.Network`
    settings: Any = field(default=None, repr=False, compare=False)  #: :class:`certify.bounds.BoundSettings`

    def logits(self, module: Any, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        with certificate_precision(x.device):
            return module(x), None

    def radii(self, logits: torch.Tensor, stats: Any, err: Any = None) -> torch.Tensor:
        raise RuntimeFailure("internal: a bound-propagation plan computes radii from the inputs (example_radii)")

    def example_radii(self, x: torch.Tensor, stats: Any) -> torch.Tensor:
        """Certified radius of each example's prediction, float64, in the user's norm."""
        from ..bounds import certified_radii

        pred = stats.prediction.to(x.device)
        if self.settings.method != "alpha-crown":
            return certified_radii(self.network, x, pred, self.settings)
        crown = certified_radii(self.network, x, pred, replace(self.settings, method="crown"))
        step = self.settings.eps_max / 2 ** self.settings.iterations
        upper = torch.clamp(2 * crown + step, max=self.settings.eps_max)
        fine = replace(self.settings, iterations=max(1, self.settings.iterations - 6))
        return certified_radii(self.network, x, pred, fine, lower=crown, upper=upper)


def bound_plan(model: LoadedModel, *, norm: Norm | str, certificate: str, lipschitz_constant: float | None,
               input_shape: tuple[int, ...]) -> BoundPlan:
    """The plan for ``certificate`` in :data:`BOUND_CERTIFICATES`; refuses models with unsupported ops."""
    from ..bounds import BoundSettings, network_from_module

    norm = Norm.parse(norm)
    if lipschitz_constant is not None:
        raise BadInputError(f"a Lipschitz constant ({lipschitz_constant:g}) cannot apply to the {certificate} "
                            "certificate, which uses no Lipschitz constant", param="lipschitz_constant")
    net = network_from_module(model.module, tuple(input_shape))
    lo, hi = (float(b) for b in model.metadata.bounds)
    span = hi - lo
    eps_max = span if norm is Norm.LINF else span * math.sqrt(math.prod(input_shape))
    settings = BoundSettings(method=certificate, norm=norm, lo=lo, hi=hi, eps_max=eps_max)
    reason = (f"{certificate} bounds on every logit difference over the {norm} ball ∩ [{lo:g}, {hi:g}], in float64 "
              f"with rounding allowances for the bounds and the model's float forward pass; radius by bisection "
              f"on [0, {eps_max:.6g}] to {eps_max / 2 ** settings.iterations:.3g}")
    return BoundPlan(certificate=certificate, certificate_norm=norm, norm=norm, divisor=1.0,
                     lipschitz_constant=math.inf, lipschitz_verified=True, basis="verified", reason=reason,
                     network=net, settings=settings)
