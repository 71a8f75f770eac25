"""Certification at ε and per-example certified radii by bisection.

For predicted class c the specifications are y_c − y_j, j ≠ c.  A point is certified at ε when every
lower bound, less the model's own floating-point allowance (:mod:`.fperror`), is > 0.  The radius is
found by bisection on [0, eps_max] to ``eps_max / 2**iterations`` and reported as the lower end of the
final bracket, which was itself certified (or 0): the certificate never rests on monotonicity.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..errors import BadInputError
from ..threat import Norm
from .alpha import DEFAULT_STEPS, alpha_bounds
from .cancel import BoundsStopped, checkpoint, stop_when
from .crown import ibp_spec_bounds, layer_boxes, spec_bounds
from .fperror import model_error, spec_error
from .ibp import ibp_bounds
from .inputs import InputSet
from .layers import Network

METHODS = ("ibp", "crown", "alpha-crown")
DEFAULT_ITERATIONS = 14


@dataclass(frozen=True)
class BoundSettings:
    method: str = "crown"
    norm: Norm = Norm.LINF
    lo: float = float("-inf")  #: the model's input bounds
    hi: float = float("inf")
    eps_max: float = 1.0  #: the bisection's upper end
    iterations: int = DEFAULT_ITERATIONS
    alpha_steps: int = DEFAULT_STEPS
    #: α-CROWN also optimises the intermediate (pre-activation) bounds, not only the specification's
    alpha_intermediate: bool = True

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise BadInputError(f"method must be one of {METHODS}, got {self.method!r}", param="method")
        if not self.eps_max > 0:
            raise BadInputError(f"eps_max must be positive, got {self.eps_max}", param="eps_max")


def specification(pred: torch.Tensor, num_classes: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """(B, K−1, K): rows e_c − e_j for j ≠ c."""
    b = pred.shape[0]
    eye = torch.eye(num_classes, dtype=dtype, device=pred.device)
    rows = eye[pred].unsqueeze(1) - eye.unsqueeze(0)  # (B, K, K)
    keep = ~torch.nn.functional.one_hot(pred, num_classes).bool()
    return rows[keep].view(b, num_classes - 1, num_classes)


def margin_bounds(net: Network, x0: torch.Tensor, pred: torch.Tensor, eps: torch.Tensor,
                  settings: BoundSettings) -> torch.Tensor:
    """Sound lower bounds of ŷ_c − ŷ_j over the set, for the model as it runs in floating point: (B, K−1)."""
    checkpoint()
    inputs = InputSet(x0.to(torch.float64), eps.to(torch.float64), settings.norm, settings.lo, settings.hi)
    spec = specification(pred, net.num_classes)
    if settings.method == "ibp":
        boxes = ibp_bounds(net, inputs)
        bound = ibp_spec_bounds(net, spec, boxes)
    else:
        boxes = layer_boxes(net, inputs)
        if settings.method == "crown":
            bound = spec_bounds(net, spec, inputs, boxes)
        else:
            bound, boxes = alpha_bounds(net, spec, inputs, boxes, steps=settings.alpha_steps,
                                        intermediate=settings.alpha_intermediate)
        bound = torch.maximum(bound, ibp_spec_bounds(net, spec, boxes))  # both sound: never below IBP
    return bound - spec_error(model_error(net, boxes), spec)


def certified(net: Network, x0: torch.Tensor, pred: torch.Tensor, eps: torch.Tensor,
              settings: BoundSettings) -> torch.Tensor:
    """Per example: every specification's sound lower bound is > 0 at radius ``eps``."""
    return (margin_bounds(net, x0, pred, eps, settings) > 0).all(dim=1)


def certified_radii(net: Network, x0: torch.Tensor, pred: torch.Tensor, settings: BoundSettings,
                    lower: torch.Tensor | None = None, upper: torch.Tensor | None = None,
                    stop: Callable[[], bool] | None = None) -> torch.Tensor:
    """Per-example certified radius (float64, ≥ 0) by bisection; see the module docs.

    ``lower`` (radii already certified, e.g. by a cheaper method) and ``upper`` narrow the bracket.
    ``stop`` (e.g. a spent time budget) is asked before every backward pass (:mod:`.cancel`); when it
    says yes the bisection ends at the lower ends, each of which was certified, so the radii stay sound
    (only coarser; 0 where the first check did not complete).
    """
    b = x0.shape[0]
    lo = torch.zeros(b, dtype=torch.float64, device=x0.device) if lower is None else lower.clone()
    hi = torch.full_like(lo, settings.eps_max) if upper is None else torch.maximum(upper, lo)
    with stop_when(stop):
        try:
            if lower is None:
                ok0 = certified(net, x0, pred, lo, settings)
                hi = torch.where(ok0, hi, lo)  # not even the point itself: radius 0
            for _ in range(settings.iterations):
                active = hi > lo
                if not bool(active.any()):
                    break
                idx = active.nonzero().squeeze(1)
                mid = (lo[idx] + hi[idx]) / 2
                ok = certified(net, x0[idx], pred[idx], mid, settings)
                lo[idx] = torch.where(ok, mid, lo[idx])
                hi[idx] = torch.where(ok, hi[idx], mid)
        except BoundsStopped:  # lo holds only radii whose check completed
            pass
    return lo
