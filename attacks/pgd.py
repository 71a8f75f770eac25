"""Native batched PGD in L2 and ℓ∞ (Madry et al. 2018).

Where the speed comes from: the forward pass that computes the loss also
tells which points are already misclassified.  Those points are frozen at
their adversarial iterate and dropped from the batch ("compaction"), so the
remaining steps run on ever smaller batches.  Restarts only re-attack the
points that are still robust.  No extra forward pass per step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from certify.defaults import (
    DEFAULT_ATTACK_STEPS,
    DEFAULT_PGD_REL_STEPSIZE,
    DEFAULT_PGD_START_FRACTION,
    DEFAULT_RESTARTS,
)
from certify.errors import BadInputError
from certify.threat import Norm

from .base import Bounds, FixedEpsilonAttack, clip, input_gradient, predict
from .early_stop import early_stop_for

LOSSES = ("ce", "margin", "dlr")


def attack_loss(logits: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
    """Per-example loss to *maximise*: cross-entropy, CW margin or DLR (Croce & Hein 2020)."""
    if loss == "ce":
        return F.cross_entropy(logits, y, reduction="none")
    z_y = logits.gather(1, y.view(-1, 1)).squeeze(1)
    other = logits.scatter(1, y.view(-1, 1), float("-inf")).amax(dim=1)
    if loss == "margin":
        return other - z_y
    top = logits.sort(dim=1, descending=True).values
    scale = top[:, 0] - top[:, min(2, top.shape[1] - 1)] + 1e-12
    return (other - z_y) / scale


def random_start(x: torch.Tensor, eps: torch.Tensor, norm: Norm, gen: torch.Generator) -> torch.Tensor:
    """Uniform in the ℓ∞ ball, or uniform in the L2 ball (direction × radius·u^(1/d))."""
    e = eps.to(x.dtype).view(-1, *([1] * (x.dim() - 1)))
    if Norm.parse(norm) is Norm.LINF:
        return (torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype) * 2 - 1) * e
    d = x[0].numel()
    g = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
    g = g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view_as(e)
    u = torch.rand(x.shape[0], generator=gen, device=x.device, dtype=x.dtype).pow(1.0 / d).view_as(e)
    return g * u * e


class PGD(FixedEpsilonAttack):
    """Projected gradient ascent on ``loss`` with early stop and batch compaction, as suits the device
    (:mod:`attacks.early_stop`: every step on the CPU, now and then on a GPU).

    ``stepsize = abs_stepsize`` if given, else ``rel_stepsize · ε``
    (default per norm in :data:`certify.defaults.DEFAULT_PGD_REL_STEPSIZE`).
    With ``random_start``, the first run starts uniformly in the ball of radius
    ``DEFAULT_PGD_START_FRACTION[norm]``·ε and each restart in the full ε-ball.
    """

    name = "pgd"
    scales_with_steps = True
    has_restarts = True

    def __init__(self, *, steps: int = DEFAULT_ATTACK_STEPS[0], rel_stepsize: float | None = None,
                 abs_stepsize: float | None = None, random_start: bool = True,
                 restarts: int = DEFAULT_RESTARTS, loss: str = "ce", early_stop: bool = True):
        if steps < 1 or restarts < 1:
            raise BadInputError(f"PGD: steps and restarts must be ≥ 1, got steps={steps}, restarts={restarts}")
        if loss not in LOSSES:
            raise BadInputError(f"PGD: expected loss in {LOSSES}, got {loss!r}")
        self.steps, self.rel_stepsize, self.abs_stepsize = int(steps), rel_stepsize, abs_stepsize
        self.random_start, self.restarts, self.loss, self.early_stop = random_start, int(restarts), loss, early_stop

    def stepsize(self, eps: torch.Tensor, norm: Norm) -> torch.Tensor:
        if self.abs_stepsize is not None:
            return torch.full_like(eps, float(self.abs_stepsize))
        rel = self.rel_stepsize if self.rel_stepsize is not None else DEFAULT_PGD_REL_STEPSIZE[norm]
        return eps * rel

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: Norm, eps: torch.Tensor,
            bounds: Bounds, generator: torch.Generator) -> torch.Tensor:
        best = x.clone()
        todo = torch.arange(x.shape[0], device=x.device)
        for r in range(self.restarts):
            start = DEFAULT_PGD_START_FRACTION[norm] if r == 0 else 1.0
            adv, found = self._descend(model, x[todo], y[todo], eps[todo], norm, bounds, generator, start)
            best[todo] = adv
            if r + 1 < self.restarts:
                found = found | (predict(model, adv) != y[todo])  # the last iterate is unchecked
                todo = todo[~found]
                if todo.numel() == 0:
                    break
        return best

    def _descend(self, model: nn.Module, x0: torch.Tensor, y: torch.Tensor, eps: torch.Tensor, norm: Norm,
                 bounds: Bounds, gen: torch.Generator, start: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """One PGD run, random start in the ball of radius ``start``·ε.
        Returns the iterates and which points stopped early as adversarial."""
        out = x0.clone()
        found = torch.zeros(x0.shape[0], dtype=torch.bool, device=x0.device)
        idx = torch.arange(x0.shape[0], device=x0.device)
        xs, ys, es, alpha = x0, y, eps, self.stepsize(eps, norm)
        uniform = (float(eps[0]), float(alpha[0])) if bool((eps == eps[0]).all()) else None
        xa = clip(x0 + random_start(x0, eps * start, norm, gen), bounds) if self.random_start else x0.clone()
        policy = early_stop_for(x0.device) if self.early_stop else None
        eager = policy is not None and policy.eager
        # deferred early stop (GPU): each point's first adversarial iterate, kept without a sync
        done = torch.zeros(x0.shape[0], dtype=torch.bool, device=x0.device) if policy and not eager else None
        first = xa.clone() if done is not None else None
        for step in range(self.steps):
            xa = xa.detach().requires_grad_(True)
            logits = model(xa)
            keep = None
            if eager:
                hit = logits.detach().argmax(dim=1) != ys
                if bool(hit.any()):
                    out[idx[hit]], found[idx[hit]] = xa.detach()[hit], True
                    keep = ~hit
                    if not bool(keep.any()):
                        return out, found
            elif done is not None and first is not None and policy is not None:
                hit = logits.detach().argmax(dim=1) != ys
                first = torch.where((hit & ~done).view(-1, *([1] * (xa.dim() - 1))), xa.detach(), first)
                done = done | hit
                if policy.looks_at(step):
                    running = int((~done).sum())  # the one sync
                    if running == 0:
                        out[idx], found[idx] = first, True
                        return out, found
                    if running < done.numel() and running <= policy.compact_below * done.numel():
                        out[idx[done]], found[idx[done]] = first[done], True
                        keep = ~done
            losses = attack_loss(logits, ys, self.loss)
            grad = input_gradient(losses.sum() if keep is None else losses[keep].sum(), xa)
            xa = xa.detach()
            if keep is not None:
                idx, xs, ys, es, alpha, xa, grad = (t[keep] for t in (idx, xs, ys, es, alpha, xa, grad))
                if done is not None and first is not None:
                    done, first = done[keep], first[keep]
            if uniform is not None:  # one ε for the whole batch: scalar kernels, no broadcasting
                step = norm.ascent(grad).mul_(uniform[1])
                delta = (xa + step - xs)
                delta = delta.clamp_(-uniform[0], uniform[0]) if norm is Norm.LINF else norm.project(delta, es)
            else:
                step = norm.ascent(grad) * alpha.to(xa.dtype).view(-1, *([1] * (xa.dim() - 1)))
                delta = norm.project(xa + step - xs, es)
            xa = (xs + delta).clamp_(bounds[0], bounds[1])
        if done is not None and first is not None:
            out[idx] = torch.where(done.view(-1, *([1] * (xa.dim() - 1))), first, xa.detach())
            found[idx] = done
            return out, found
        out[idx] = xa.detach()
        return out, found


class L2PGD(PGD):
    name = "l2-pgd"
    norms = (Norm.L2,)


class LinfPGD(PGD):
    name = "linf-pgd"
    norms = (Norm.LINF,)


class MarginPGD(PGD):
    """PGD on the CW margin loss (max_{j≠y} z_j − z_y): strong where cross-entropy saturates."""

    name = "pgd-margin"

    def __init__(self, *, steps: int = DEFAULT_ATTACK_STEPS[0], rel_stepsize: float | None = None,
                 abs_stepsize: float | None = None, random_start: bool = True,
                 restarts: int = DEFAULT_RESTARTS, loss: str = "margin", early_stop: bool = True):
        super().__init__(steps=steps, rel_stepsize=rel_stepsize, abs_stepsize=abs_stepsize,
                         random_start=random_start, restarts=restarts, loss=loss, early_stop=early_stop)
