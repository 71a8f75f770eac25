"""Native APGD in L2 and ℓ∞ (Croce & Hein 2020, "Reliable evaluation of adversarial robustness").

APGD is PGD without a step size to tune:

* the step size starts at η = 2ε and is halved at checkpoints
  w_j = ⌈p_j·N⌉, p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06),
  where (1) the loss rose in fewer than ρ = 0.75 of the steps since the last
  checkpoint, or (2) the step size was not halved at the last checkpoint and
  the best loss has not improved since; after halving, the iterate restarts
  from the best point found so far;
* each step takes a projected gradient step z, then a momentum step
  x ← P(x + α(z − x) + (1 − α)(x − x_prev)) with α = 0.75 (1 at the first step).

``loss`` is cross-entropy (APGD-CE) or the difference-of-logits ratio
(APGD-DLR); :class:`APGDT` runs the targeted DLR loss against the classes
ranked highest at the clean point (APGD-T).  As in the native PGD, the forward
pass that computes the loss also says which points are already adversarial:
those are frozen and dropped from the batch.  Restarts (and targets) only
re-attack the points still robust.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from certify.defaults import (
    APGD_ALPHA,
    APGD_RHO,
    DEFAULT_APGD_TARGETS,
    DEFAULT_ATTACK_STEPS,
    DEFAULT_RESTARTS,
)
from certify.errors import BadInputError
from certify.threat import Norm

from .base import Bounds, FixedEpsilonAttack, clip, input_gradient, predict
from .pgd import attack_loss, random_start


def checkpoints(steps: int) -> list[int]:
    """Iterations at which the step size may be halved: ⌈p_j·N⌉ for the paper's p_j, within (0, N)."""
    p, out = [0.0, 0.22], []
    while p[-1] < 1.0:
        out.append(math.ceil(round(p[-1] * steps, 6)))
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return sorted({w for w in out if 0 < w < steps})


def targeted_dlr(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """−(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2): targeted DLR loss to *maximise* (needs ≥ 4 classes)."""
    top = logits.sort(dim=1, descending=True).values
    k = top.shape[1]
    scale = top[:, 0] - 0.5 * (top[:, min(2, k - 1)] + top[:, min(3, k - 1)]) + 1e-12
    z_y, z_t = logits.gather(1, y.view(-1, 1)).squeeze(1), logits.gather(1, target.view(-1, 1)).squeeze(1)
    return (z_t - z_y) / scale


def _col(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-example value (or mask) shaped to broadcast over ``like``'s rows."""
    t = t if t.dtype == torch.bool else t.to(like.dtype)
    return t.view(-1, *([1] * (like.dim() - 1)))


@dataclass
class _State:
    """Per-example APGD state of the points still being attacked (rows are compacted together)."""

    idx: torch.Tensor  # position in the batch
    x0: torch.Tensor
    y: torch.Tensor
    target: torch.Tensor | None
    eps: torch.Tensor
    eta: torch.Tensor  # step size
    x: torch.Tensor
    x_prev: torch.Tensor
    grad: torch.Tensor
    loss: torch.Tensor
    best_loss: torch.Tensor
    x_best: torch.Tensor
    grad_best: torch.Tensor
    rises: torch.Tensor  # steps since the last checkpoint where the loss rose
    best_at_check: torch.Tensor
    halved_at_check: torch.Tensor

    @classmethod
    def start(cls, idx: torch.Tensor, x0: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
              eps: torch.Tensor, xa: torch.Tensor, loss: torch.Tensor, grad: torch.Tensor) -> "_State":
        """The state at the random start: step size 2ε, no momentum yet."""
        return cls(idx, x0, y, target, eps, 2.0 * eps, xa, xa, grad, loss, loss.clone(), xa, grad,
                   torch.zeros_like(loss), loss.clone(), torch.zeros_like(loss, dtype=torch.bool))

    def record(self, x_new: torch.Tensor, loss: torch.Tensor, grad: torch.Tensor) -> None:
        """Move to ``x_new``; count a loss rise; keep the best-loss point and its gradient."""
        self.x_prev, self.x = self.x, x_new
        self.rises += (loss > self.loss).to(self.rises.dtype)
        self.loss, self.grad = loss, grad
        better = loss > self.best_loss
        self.best_loss = torch.where(better, loss, self.best_loss)
        self.x_best = torch.where(_col(better, x_new), x_new, self.x_best)
        self.grad_best = torch.where(_col(better, grad), grad, self.grad_best)

    def keep(self, mask: torch.Tensor) -> None:
        for name, value in vars(self).items():
            if value is not None:
                setattr(self, name, value[mask])


class APGD(FixedEpsilonAttack):
    """Untargeted APGD on ``loss`` ("ce" or "dlr"), with early stop and batch compaction."""

    name = "apgd-ce"
    scales_with_steps = True
    has_restarts = True
    default_loss = "ce"

    def __init__(self, *, steps: int = DEFAULT_ATTACK_STEPS[0], restarts: int = DEFAULT_RESTARTS,
                 loss: str | None = None, rho: float = APGD_RHO, alpha: float = APGD_ALPHA,
                 early_stop: bool = True):
        loss = self.default_loss if loss is None else loss
        if steps < 1 or restarts < 1:
            raise BadInputError(f"APGD: steps and restarts must be ≥ 1, got steps={steps}, restarts={restarts}")
        if loss not in ("ce", "dlr"):
            raise BadInputError(f"APGD: expected loss 'ce' or 'dlr', got {loss!r}")
        if not (0 < rho <= 1 and 0 < alpha <= 1):
            raise BadInputError(f"APGD: rho and alpha must be in (0, 1], got rho={rho}, alpha={alpha}")
        self.steps, self.restarts, self.loss = int(steps), int(restarts), loss
        self.rho, self.alpha, self.early_stop = float(rho), float(alpha), early_stop

    # ------------------------------------------------------------------ driver

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: Norm, eps: torch.Tensor,
            bounds: Bounds, generator: torch.Generator) -> torch.Tensor:
        best = x.clone()
        todo = torch.arange(x.shape[0], device=x.device)
        for r, target in enumerate(self._targets(model, x, y)):
            t = None if target is None else target[todo]
            adv = self._descend(model, x[todo], y[todo], t, eps[todo], norm, bounds, generator)
            best[todo] = adv
            found = predict(model, adv) != y[todo]
            todo = todo[~found]
            if todo.numel() == 0:
                break
        return best

    def _targets(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor | None]:
        return [None] * self.restarts

    def _loss(self, logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        return attack_loss(logits, y, self.loss)

    # ------------------------------------------------------------------ one run

    def _evaluate(self, model: nn.Module, xa: torch.Tensor, idx: torch.Tensor, y: torch.Tensor,
                  target: torch.Tensor | None, out: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Loss and gradient at ``xa``; with early stop, adversarial rows are saved to ``out[idx]``.

        Returns (loss, grad, keep); ``keep`` (rows still robust) is None when every row stays.
        """
        xa = xa.detach().requires_grad_(True)
        logits = model(xa)
        keep = None
        if self.early_stop:
            hit = logits.detach().argmax(dim=1) != y
            if bool(hit.any()):
                out[idx[hit]] = xa.detach()[hit]
                keep = ~hit
        losses = self._loss(logits, y, target)
        chosen = losses if keep is None else losses[keep]
        if chosen.numel() == 0:
            return losses.detach(), torch.zeros_like(xa), keep
        grad = input_gradient(chosen.sum(), xa)
        return losses.detach(), grad, keep

    def _descend(self, model: nn.Module, x0: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
                 eps: torch.Tensor, norm: Norm, bounds: Bounds, gen: torch.Generator) -> torch.Tensor:
        """One APGD run; returns, per point, its first adversarial iterate or else its best-loss point."""
        out, idx = x0.clone(), torch.arange(x0.shape[0], device=x0.device)
        xa = clip(x0 + random_start(x0, eps, norm, gen), bounds)
        loss, grad, keep = self._evaluate(model, xa, idx, y, target, out)
        s = _State.start(idx, x0, y, target, eps, xa, loss, grad)
        marks, last_mark = set(checkpoints(self.steps)), 0
        for k in range(self.steps):
            if keep is not None:
                s.keep(keep)
            if s.idx.numel() == 0:
                return out
            with torch.no_grad():
                x_new = self._step(s, norm, bounds, first=(k == 0))
            loss, grad, keep = self._evaluate(model, x_new, s.idx, s.y, s.target, out)
            with torch.no_grad():
                s.record(x_new, loss, grad)
                if k + 1 in marks:
                    self._checkpoint(s, k + 1 - last_mark)
                    last_mark = k + 1
        if keep is not None:
            s.keep(keep)
        out[s.idx] = s.x_best
        return out

    def _step(self, s: _State, norm: Norm, bounds: Bounds, first: bool) -> torch.Tensor:
        """Gradient step z = P(x + η·dir(∇)), then the momentum step (α = 1 at the first step)."""
        z = clip(s.x0 + norm.project(s.x + _col(s.eta, s.x) * norm.ascent(s.grad) - s.x0, s.eps), bounds)
        if first:
            return z
        a = self.alpha
        x_new = s.x + a * (z - s.x) + (1 - a) * (s.x - s.x_prev)
        return clip(s.x0 + norm.project(x_new - s.x0, s.eps), bounds)

    def _checkpoint(self, s: _State, period: int) -> None:
        """Halve η where the loss rose too rarely, or where it was not halved and the best did not improve."""
        few_rises = s.rises < self.rho * period
        stalled = ~s.halved_at_check & (s.best_loss <= s.best_at_check)
        halve = few_rises | stalled
        s.eta = torch.where(halve, s.eta / 2, s.eta)
        s.x = torch.where(_col(halve, s.x), s.x_best, s.x)
        s.x_prev = torch.where(_col(halve, s.x), s.x_best, s.x_prev)  # no momentum across a restart
        s.grad = torch.where(_col(halve, s.grad), s.grad_best, s.grad)
        s.halved_at_check, s.best_at_check = halve, s.best_loss.clone()
        s.rises = torch.zeros_like(s.rises)


class APGDDLR(APGD):
    """APGD on the difference-of-logits ratio: invariant to shifts and rescaling of the logits."""

    name = "apgd-dlr"
    default_loss = "dlr"


class APGDT(APGD):
    """Targeted APGD-DLR (APGD-T): one run per target, the classes ranked 2nd, 3rd, … at the clean point.

    ``restarts`` runs per target; ``targets`` caps the number of target classes.
    """

    name = "apgd-t"
    default_loss = "dlr"

    def __init__(self, *, steps: int = DEFAULT_ATTACK_STEPS[0], restarts: int = DEFAULT_RESTARTS,
                 targets: int = DEFAULT_APGD_TARGETS, rho: float = APGD_RHO, alpha: float = APGD_ALPHA,
                 early_stop: bool = True):
        super().__init__(steps=steps, restarts=restarts, loss="dlr", rho=rho, alpha=alpha, early_stop=early_stop)
        if targets < 1:
            raise BadInputError(f"APGD-T: targets must be ≥ 1, got {targets}")
        self.targets = int(targets)

    def _targets(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor | None]:
        with torch.no_grad():
            logits = model(x)
        ranked = logits.scatter(1, y.view(-1, 1), float("-inf")).argsort(dim=1, descending=True)
        k = min(self.targets, logits.shape[1] - 1)
        return [ranked[:, j] for j in range(k) for _ in range(self.restarts)]

    def _loss(self, logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        assert target is not None
        return targeted_dlr(logits, y, target)
