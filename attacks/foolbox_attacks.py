"""Attacks backed by foolbox 3 (wrap, don't re-implement).

Each wrapper builds the foolbox attack from its own keyword-only settings
and lets the lipcert base do projection, clipping and the success check.
foolbox draws random starts from torch's global generator, so each call runs
inside :func:`torch.random.fork_rng` seeded from the batch seed: the same
seed gives the same result and the caller's RNG state is left alone.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from certify.defaults import (
    DEFAULT_ATTACK_STEPS,
    DEFAULT_CW_BINARY_SEARCH_STEPS,
    DEFAULT_MIN_NORM_STEPS,
    DEFAULT_PGD_REL_STEPSIZE,
    DEFAULT_RESTARTS,
)
from certify.threat import Norm

from .base import Bounds, FixedEpsilonAttack, MinimizationAttack, predict


def _fb() -> Any:
    import foolbox

    return foolbox


class _EvalView(nn.Module):
    """Wraps a module without touching its mode.

    torch.export modules report ``training=True`` although they were traced in eval mode, and
    foolbox warns about it unconditionally; lipcert checks training mode itself
    (flag ``model-in-training-mode``), so foolbox sees this wrapper, which says eval.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.training = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def _fmodel(model: nn.Module, bounds: Bounds, device: torch.device) -> Any:
    return _fb().PyTorchModel(_EvalView(model), bounds=tuple(bounds), device=device)


def _seeded_call(fn: Any, seed_gen: torch.Generator, device: torch.device) -> Any:
    """Run a foolbox call with torch's RNG forked and seeded from ``seed_gen``."""
    seed = int(torch.randint(0, 2**62, (1,), generator=seed_gen, device=seed_gen.device).item())
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return fn()


class _FoolboxFixed(FixedEpsilonAttack):
    """A foolbox fixed-ε attack; one call per distinct ε in the batch."""

    def make(self, norm: Norm) -> Any:
        raise NotImplementedError

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: Norm, eps: torch.Tensor,
            bounds: Bounds, generator: torch.Generator) -> torch.Tensor:
        out = x.clone()
        fmodel, attack = _fmodel(model, bounds, x.device), self.make(norm)
        for e in torch.unique(eps).tolist():
            sel = eps == e
            out[sel] = self._restarts(fmodel, attack, model, x[sel], y[sel], float(e), generator)
        return out

    def _restarts(self, fmodel: Any, attack: Any, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                  eps: float, gen: torch.Generator) -> torch.Tensor:
        best, todo = x.clone(), torch.arange(x.shape[0], device=x.device)
        for _ in range(getattr(self, "restarts", 1)):
            _, clipped, _ = _seeded_call(lambda: attack(fmodel, x[todo], y[todo], epsilons=eps), gen, x.device)
            best[todo] = clipped
            todo = todo[predict(model, clipped) == y[todo]]
            if todo.numel() == 0:
                break
        return best


class FGSM(_FoolboxFixed):
    """Fast gradient sign method (ℓ∞) / fast gradient method (L2): one step of size ε."""

    name = "fgsm"

    def __init__(self, *, random_start: bool = False):
        self.random_start = random_start

    def make(self, norm: Norm) -> Any:
        fb = _fb().attacks
        cls = fb.LinfFastGradientAttack if norm is Norm.LINF else fb.L2FastGradientAttack
        return cls(random_start=self.random_start)


class FoolboxPGD(_FoolboxFixed):
    """foolbox's L2PGD / LinfPGD (no early stop), with restarts."""

    name = "fb-pgd"
    scales_with_steps = True
    has_restarts = True

    def __init__(self, *, steps: int = DEFAULT_ATTACK_STEPS[0], rel_stepsize: float | None = None,
                 abs_stepsize: float | None = None, random_start: bool = True, restarts: int = DEFAULT_RESTARTS):
        self.steps, self.rel_stepsize, self.abs_stepsize = int(steps), rel_stepsize, abs_stepsize
        self.random_start, self.restarts = random_start, int(restarts)

    def make(self, norm: Norm) -> Any:
        fb = _fb().attacks
        cls = fb.LinfPGD if norm is Norm.LINF else fb.L2PGD
        rel = self.rel_stepsize if self.rel_stepsize is not None else DEFAULT_PGD_REL_STEPSIZE[norm]
        return cls(steps=self.steps, rel_stepsize=rel, abs_stepsize=self.abs_stepsize,
                   random_start=self.random_start)


class _FoolboxMin(MinimizationAttack):
    def make(self, norm: Norm) -> Any:
        raise NotImplementedError

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: Norm, bounds: Bounds,
            generator: torch.Generator) -> torch.Tensor:
        fmodel, attack = _fmodel(model, bounds, x.device), self.make(norm)
        raw, _, _ = _seeded_call(lambda: attack(fmodel, x, y, epsilons=None), generator, x.device)
        return raw


class FMN(_FoolboxMin):
    """Fast Minimum-Norm attack (Pintor et al. 2021), L2 or ℓ∞."""

    name = "fmn"

    def __init__(self, *, steps: int = DEFAULT_MIN_NORM_STEPS["fmn"]):
        self.steps = int(steps)

    def make(self, norm: Norm) -> Any:
        fb = _fb().attacks
        return (fb.LInfFMNAttack if norm is Norm.LINF else fb.L2FMNAttack)(steps=self.steps)


class DeepFool(_FoolboxMin):
    """DeepFool (Moosavi-Dezfooli et al. 2016), L2 or ℓ∞."""

    name = "deepfool"

    def __init__(self, *, steps: int = DEFAULT_MIN_NORM_STEPS["deepfool"], candidates: int | None = 10,
                 overshoot: float = 0.02):
        self.steps, self.candidates, self.overshoot = int(steps), candidates, overshoot

    def make(self, norm: Norm, num_classes: int | None = None) -> Any:
        fb = _fb().attacks
        cls = fb.LinfDeepFoolAttack if norm is Norm.LINF else fb.L2DeepFoolAttack
        cand = self.candidates if self.candidates is None or num_classes is None else min(self.candidates, num_classes)
        return cls(steps=self.steps, candidates=cand, overshoot=self.overshoot)

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: Norm, bounds: Bounds,
            generator: torch.Generator) -> torch.Tensor:
        with torch.no_grad():
            k = int(model(x[:1]).shape[1])  # foolbox needs candidates ≤ classes
        attack, fmodel = self.make(norm, k), _fmodel(model, bounds, x.device)
        return _seeded_call(lambda: attack(fmodel, x, y, epsilons=None), generator, x.device)[0]


class CarliniWagner(_FoolboxMin):
    """Carlini & Wagner L2 (2017) with a binary search over its trade-off constant."""

    name = "cw"
    norms = (Norm.L2,)

    def __init__(self, *, steps: int = DEFAULT_MIN_NORM_STEPS["cw"],
                 binary_search_steps: int = DEFAULT_CW_BINARY_SEARCH_STEPS, stepsize: float = 0.01,
                 confidence: float = 0.0, initial_const: float = 0.001):
        self.steps, self.binary_search_steps, self.stepsize = int(steps), int(binary_search_steps), stepsize
        self.confidence, self.initial_const = confidence, initial_const

    def make(self, norm: Norm) -> Any:
        return _fb().attacks.L2CarliniWagnerAttack(
            binary_search_steps=self.binary_search_steps, steps=self.steps, stepsize=self.stepsize,
            confidence=self.confidence, initial_const=self.initial_const)


class DDN(_FoolboxMin):
    """Decoupled Direction and Norm (Rony et al. 2019), L2."""

    name = "ddn"
    norms = (Norm.L2,)

    def __init__(self, *, steps: int = DEFAULT_MIN_NORM_STEPS["ddn"], init_epsilon: float = 1.0,
                 gamma: float = 0.05):
        self.steps, self.init_epsilon, self.gamma = int(steps), init_epsilon, gamma

    def make(self, norm: Norm) -> Any:
        return _fb().attacks.DDNAttack(steps=self.steps, init_epsilon=self.init_epsilon, gamma=self.gamma)


class HopSkipJump(_FoolboxMin):
    """HopSkipJump (Chen et al. 2020): decision-based, black-box; uses no gradients."""

    name = "hsj"

    def __init__(self, *, steps: int = DEFAULT_MIN_NORM_STEPS["hsj"], initial_gradient_eval_steps: int = 50,
                 max_gradient_eval_steps: int = 500):
        self.steps = int(steps)
        self.initial_gradient_eval_steps, self.max_gradient_eval_steps = initial_gradient_eval_steps, max_gradient_eval_steps

    def make(self, norm: Norm) -> Any:
        return _fb().attacks.HopSkipJumpAttack(
            steps=self.steps, initial_gradient_eval_steps=self.initial_gradient_eval_steps,
            max_gradient_eval_steps=self.max_gradient_eval_steps, constraint=norm.value)

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: Norm, bounds: Bounds,
            generator: torch.Generator) -> torch.Tensor:
        # HopSkipJump needs a starting adversarial; its default init search may fail on some points,
        # which foolbox reports by raising.  Then we return x (no adversarial found).
        try:
            return super().run(model, x, y, norm=norm, bounds=bounds, generator=generator)
        except ValueError:
            return x.clone()
