"""Input sets: an ℓ∞ box or an L2 ball around each example, intersected with the model's input bounds.

``close`` turns a linear lower bound Λ·x + c into a number: its minimum over the set.  Over an ℓ∞ box
∩ [lo, hi] it is exact (the set is the box [max(lo, x₀−ε), min(hi, x₀+ε)]).  Over an L2 ball ∩ [lo, hi]
it is the larger of the minimum over the ball (Λ·x₀ − ε‖Λ‖₂ + c) and over the box that contains the
set; both are sound.  Box ends are rounded outwards.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..threat import Norm
from .layers import UNIT64, gamma


def _down(t: torch.Tensor) -> torch.Tensor:
    return torch.nextafter(t, torch.full_like(t, -torch.inf))


def _up(t: torch.Tensor) -> torch.Tensor:
    return torch.nextafter(t, torch.full_like(t, torch.inf))


@dataclass(frozen=True, eq=False)
class InputSet:
    """Per example: the ball of radius ``eps[i]`` (in ``norm``) around ``x0[i]``, inside [lo, hi]."""

    x0: torch.Tensor  #: (B, *shape), float64
    eps: torch.Tensor  #: (B,), float64, ≥ 0
    norm: Norm
    lo: float = -torch.inf
    hi: float = torch.inf

    def box(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A box that contains the set, rounded outwards."""
        e = self.eps.view(-1, *([1] * (self.x0.dim() - 1)))
        low = _down(self.x0 - e).clamp_min(self.lo)
        high = _up(self.x0 + e).clamp_max(self.hi)
        return torch.minimum(low, self.x0), torch.maximum(high, self.x0)

    def magnitude(self) -> torch.Tensor:
        low, high = self.box()
        return torch.maximum(low.abs(), high.abs())

    def close(self, lam: torch.Tensor, const: torch.Tensor) -> torch.Tensor:
        """min over the set of Λ·x + c, for Λ of shape (B, S, *shape) and c of shape (B, S); the
        float64 rounding of this last step is subtracted."""
        low, high = self.box()
        flat = lam.flatten(2)
        lo_f, hi_f = low.flatten(1).unsqueeze(2), high.flatten(1).unsqueeze(2)
        best = (flat.clamp_min(0) @ lo_f + flat.clamp_max(0) @ hi_f).squeeze(2)
        if self.norm is Norm.L2:
            ball = (flat @ self.x0.flatten(1).unsqueeze(2)).squeeze(2) - self.eps.view(-1, 1) * flat.norm(dim=2)
            best = torch.maximum(best, ball)
        mag = (flat.abs() @ self.magnitude().flatten(1).unsqueeze(2)).squeeze(2)
        if self.norm is Norm.L2:
            mag = mag + self.eps.view(-1, 1) * flat.abs().sum(2)
        slack = 2 * gamma(flat.shape[2] + 4, UNIT64) * (2 * mag + const.abs())
        return best + const - slack
