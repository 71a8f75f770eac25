"""Attack base classes (after foolbox 3's ``FixedEpsilonAttack`` / ``MinimizationAttack``).

An attack is a small class: settings are keyword-only ``__init__``
arguments, ε comes at call time.  The base does the rest:

* :class:`FixedEpsilonAttack` — ``run`` returns candidate points; the base
  projects them onto the ε-ball around ``x``, clips them to the input bounds
  and checks success (the prediction differs from the label).

The norm is a :class:`certify.threat.Norm`, parsed once where an attack is called
(``__call__``, :func:`run_batched`); ``run`` gets the Norm and asks it for the
projection (``norm.project``), the ascent step (``norm.ascent``) and distances.
* :class:`MinimizationAttack` — ``run`` returns the closest adversarial it
  found (any size); the base clips to bounds, checks success and measures
  the distance (``inf`` where no adversarial was found).

:func:`run_batched` splits a set of points into batches, seeds each batch
deterministically and halves the batch size on out-of-memory.
Adversarial examples stay float tensors throughout.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from certify.device import certificate_precision
from certify.errors import BadInputError, RuntimeFailure
from certify.threat import Norm

Bounds = tuple[float, float]


@dataclass(frozen=True)
class AttackOutcome:
    """What one attack call found, per example."""

    x_adv: torch.Tensor  #: float tensor, same shape as x, inside the bounds
    success: torch.Tensor  #: bool: misclassified (and inside ε for fixed-ε attacks)
    distance: torch.Tensor  #: float64 ‖x_adv − x‖ in the attack norm; inf where no success


# --------------------------------------------------------------------------- helpers


def _distance(delta: torch.Tensor, norm: Norm) -> torch.Tensor:
    """Per-example ‖delta‖ in ``norm``, in float64 (the distance an outcome reports)."""
    return norm.distance(delta.detach().to(torch.float64))


def clip(x: torch.Tensor, bounds: Bounds) -> torch.Tensor:
    return x.clamp(bounds[0], bounds[1])


def as_eps_tensor(eps: float | torch.Tensor, n: int, device: torch.device) -> torch.Tensor:
    """A scalar or per-example ε → a float64 tensor of length ``n``."""
    t = torch.as_tensor(eps, dtype=torch.float64, device=device)
    if t.dim() == 0:
        t = t.expand(n).clone()
    if t.shape != (n,) or not bool((t > 0).all() and torch.isfinite(t).all()):
        raise BadInputError(f"eps must be positive and finite, one value or one per example; got shape {tuple(t.shape)}",
                            param="eps")
    return t


@torch.no_grad()
def input_gradient(loss: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """∂loss/∂x, and zeros where the output does not reach x through autograd (``detach``, integer
    casts, straight-through estimators): such a model is not attackable by gradients, not an error."""
    if not loss.requires_grad:
        return torch.zeros_like(x)
    grad, = torch.autograd.grad(loss, x, allow_unused=True)
    return torch.zeros_like(x) if grad is None else grad


def predict(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    return model(x).argmax(dim=1)


@torch.no_grad()
def checked_predict(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The prediction that decides success: full float32 (no TF32, no autocast), as behind a certificate,
    so a GPU's reduced-precision defaults can neither invent nor hide an adversarial example."""
    with certificate_precision(x.device):
        return model(x).argmax(dim=1)


# --------------------------------------------------------------------------- base classes


class Attack:
    """Base of all attacks: a name, the norms it supports, and its settings."""

    name: ClassVar[str] = ""
    norms: ClassVar[tuple[Norm, ...]] = tuple(Norm)
    minimization: ClassVar[bool] = False
    #: True when a run's ``steps`` (iteration scaling) set this attack's iterations.
    scales_with_steps: ClassVar[bool] = False
    #: True when the attack takes ``restarts``.
    has_restarts: ClassVar[bool] = False

    def settings(self) -> dict[str, Any]:
        params = inspect.signature(type(self).__init__).parameters
        return {k: getattr(self, k) for k in params if k != "self" and hasattr(self, k)}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.settings().items())
        return f"{type(self).__name__}({args})"

    def check_norm(self, norm: Norm | str) -> Norm:
        """The Norm of ``norm`` (a Norm or its name), if this attack supports it."""
        parsed = Norm.parse(norm)
        if parsed not in self.norms:
            raise BadInputError(f"attack {self.name!r} supports norms {[n.value for n in self.norms]}, "
                                f"got {parsed.value!r}", param="norm")
        return parsed


class FixedEpsilonAttack(Attack):
    """Finds an adversarial inside the ε-ball; subclasses write :meth:`run`."""

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: Norm, eps: torch.Tensor,
            bounds: Bounds, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: Norm | str,
                 eps: float | torch.Tensor, bounds: Bounds = (0.0, 1.0), seed: int = 0) -> AttackOutcome:
        norm = self.check_norm(norm)
        eps_t = as_eps_tensor(eps, x.shape[0], x.device)
        gen = _generator(seed, x.device)
        candidate = self.run(model, x, y, norm=norm, eps=eps_t, bounds=bounds, generator=gen).detach()
        x_adv = clip(x + norm.project(candidate.to(x.dtype) - x, eps_t), bounds)
        success = checked_predict(model, x_adv) != y
        dist = torch.minimum(_distance(x_adv - x, norm), eps_t)  # the ball is the claim; ignore float dust
        return AttackOutcome(x_adv, success, torch.where(success, dist, torch.full_like(dist, float("inf"))))


class MinimizationAttack(Attack):
    """Finds the closest adversarial it can; subclasses write :meth:`run`."""

    minimization = True

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: Norm, bounds: Bounds,
            generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: Norm | str,
                 eps: float | torch.Tensor | None = None, bounds: Bounds = (0.0, 1.0),
                 seed: int = 0) -> AttackOutcome:
        """``success`` means an adversarial of any size; compare ``distance`` with ε."""
        norm = self.check_norm(norm)
        gen = _generator(seed, x.device)
        x_adv = clip(self.run(model, x, y, norm=norm, bounds=bounds, generator=gen).detach().to(x.dtype), bounds)
        success = checked_predict(model, x_adv) != y
        dist = _distance(x_adv - x, norm)
        return AttackOutcome(x_adv, success, torch.where(success, dist, torch.full_like(dist, float("inf"))))


def _generator(seed: int, device: torch.device) -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed) % (2**63))
    return gen


# --------------------------------------------------------------------------- batching


def batch_seed(seed: int, *keys: int) -> int:
    """A deterministic per-batch seed from the run seed and integer keys."""
    h = int(seed) & 0xFFFFFFFF
    for k in keys:
        h = (h * 1_000_003 + int(k) + 0x9E3779B1) % (2**61 - 1)
    return h


def is_oom(err: BaseException) -> bool:
    if isinstance(err, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(err, RuntimeError) and "out of memory" in str(err).lower()


def run_batched(attack: Attack, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: Norm | str,
                eps: float | torch.Tensor | None, bounds: Bounds, seed: int, batch_size: int,
                device: torch.device, key: int = 0,
                on_batch: Callable[[int], None] | None = None, offset: int = 0) -> AttackOutcome:
    """Attack ``x`` (on any device) batch by batch on ``device``; results come back on the CPU.

    Each batch's seed depends on ``seed``, ``key`` and the batch offset only (``offset`` plus its
    start in ``x``: a caller attacking part of a longer list from position ``offset``, at a batch
    boundary, gets the batches and seeds of the whole list).
    On out-of-memory the batch is retried at half the size.
    """
    norm = attack.check_norm(norm)
    n = x.shape[0]
    eps_all = None if eps is None else as_eps_tensor(eps, n, torch.device("cpu"))
    parts: list[AttackOutcome] = []
    lo, bs = 0, max(1, int(batch_size))
    while lo < n:
        hi = min(n, lo + bs)
        try:
            out = _one_batch(attack, model, x[lo:hi], y[lo:hi], norm, eps_all, lo, hi, bounds,
                             batch_seed(seed, key, offset + lo), device)
        except (RuntimeError, torch.cuda.OutOfMemoryError) as err:
            if not is_oom(err):
                raise
            if bs == 1:
                raise RuntimeFailure("out of memory even with batch size 1; use a smaller model or the CPU") from err
            bs = max(1, bs // 2)
            if device.type == "cuda":
                torch.cuda.empty_cache()
            continue
        parts.append(out)
        if on_batch is not None:
            on_batch(hi - lo)
        lo = hi
    return _concat(parts, x)


def _one_batch(attack: Attack, model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: Norm,
               eps_all: torch.Tensor | None, lo: int, hi: int, bounds: Bounds, seed: int,
               device: torch.device) -> AttackOutcome:
    xb, yb = x.to(device), y.to(device)
    eps_b = None if eps_all is None else eps_all[lo:hi].to(device)
    if attack.minimization:
        out = attack(model, xb, yb, norm=norm, bounds=bounds, seed=seed)
    else:
        assert eps_b is not None, "fixed-ε attacks need eps"
        out = attack(model, xb, yb, norm=norm, eps=eps_b, bounds=bounds, seed=seed)
    return AttackOutcome(out.x_adv.cpu(), out.success.cpu(), out.distance.cpu())


def _concat(parts: list[AttackOutcome], x: torch.Tensor) -> AttackOutcome:
    if not parts:
        empty = torch.empty(0, device="cpu")
        return AttackOutcome(x[:0].float(), empty.bool(), empty.double())
    return AttackOutcome(torch.cat([p.x_adv for p in parts]), torch.cat([p.success for p in parts]),
                         torch.cat([p.distance for p in parts]))
