"""Training the shipped families: configs, one epoch, evaluation, resumable state.

Used by ``examples/train.py``.  The library never prints: :func:`train` reports
through ``progress(done, total)`` (steps in the current epoch) and
``on_epoch(EpochResult)`` callbacks.  The small PGD here (:func:`pgd`) is only
for adversarial *training* and the demo; lipcert's evaluation attacks live in
the ``attacks`` package.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..data import Dataset, ProgressFn
from ..errors import BadInputError
from ..threat import Norm
from .layers import set_linf_p
from .losses import L2NNNLoss, hinge_loss
from .models import get_family


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs; YAML keys are these field names."""

    family: str  #: l2nnn, linf_dist, baseline or baseline_adv
    arch: str  #: a builder of the family (see certify.zoo.models.FAMILIES)
    arch_kwargs: Mapping[str, Any] = field(default_factory=dict)
    dataset: str = "fashion-mnist"
    data_root: str | None = None
    eval_dataset: str | None = None  #: default: ``dataset``'s test split
    eval_data_root: str | None = None
    train_limit: int | None = None
    eval_limit: int | None = 2000  #: test examples used for the per-epoch accuracy
    epochs: int = 5
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    seed: int = 0
    threads: int | None = None
    # L2NNN loss
    gamma: float = 1.0
    omega: float = 1.0
    z: float = 1.0
    u_init: float = 5.0
    v_init: float = 1.0
    # adversarial training (l2nnn: distorted inputs in L_a; baseline_adv: Madry PGD)
    adv_norm: str = "linf"
    adv_eps: float = 0.0
    adv_steps: int = 7
    adv_step_size: float | None = None
    # ℓ∞-dist
    hinge_margin: float = 0.4
    p_start: float = 8.0
    p_end: float = 100.0
    p_final: float | None = None  #: p in the final phase (default p_end; may be .inf)
    p_warm_frac: float = 0.15  #: fraction of epochs at p_start
    p_final_frac: float = 0.2  #: fraction of epochs at p_end, learning rate / 5
    # output
    output: str = "model.pt2"
    description: str | None = None

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], where: str = "config") -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise BadInputError(f"{where}: unknown keys {unknown}; valid keys are {sorted(known)}")
        missing = [k for k in ("family", "arch") if k not in raw]
        if missing:
            raise BadInputError(f"{where}: missing keys {missing}")
        kw = dict(raw)
        if "betas" in kw:
            kw["betas"] = tuple(kw["betas"])
        cfg = cls(**kw)
        get_family(cfg.family).build(cfg.arch, **dict(cfg.arch_kwargs))  # validates early
        Norm.parse(cfg.adv_norm, param="adv_norm")
        return cfg


@dataclass(frozen=True)
class EpochResult:
    epoch: int
    epochs: int
    loss: float
    train_accuracy: float
    eval_accuracy: float
    lr: float
    p: float | None
    seconds: float


# --------------------------------------------------------------------------- PGD (training only)


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: Norm | str, eps: float, steps: int,
        step_size: float | None = None, bounds: tuple[float, float] = (0.0, 1.0),
        random_start: bool = True) -> torch.Tensor:
    """Tiny PGD maximising cross-entropy in an ℓ∞ or L2 ball (Madry et al.)."""
    norm = Norm.parse(norm)
    step = step_size if step_size is not None else 2.5 * eps / max(steps, 1)
    delta = _random_start(x, norm, eps) if random_start else torch.zeros_like(x)
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = F.cross_entropy(model((x + delta).clamp(*bounds)), y)
        (g,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            delta = _project(delta + step * norm.ascent(g), norm, eps)
            delta = (x + delta).clamp(*bounds) - x
    return (x + delta).clamp(*bounds).detach()


def _project(delta: torch.Tensor, norm: Norm, eps: float) -> torch.Tensor:
    """Onto the ball of radius ``eps`` (a float: :meth:`Norm.project` takes one radius per example)."""
    if norm is Norm.LINF:
        return delta.clamp(-eps, eps)
    n = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
    factor = torch.clamp(eps / n, max=1.0)
    return delta * factor.view(-1, *([1] * (delta.dim() - 1)))


def _random_start(x: torch.Tensor, norm: Norm, eps: float) -> torch.Tensor:
    if norm is Norm.LINF:
        return torch.empty_like(x).uniform_(-eps, eps)
    d = torch.randn_like(x)
    return _project(d / d.flatten(1).norm(dim=1).view(-1, *([1] * (x.dim() - 1))) * eps * torch.rand(
        x.shape[0], *([1] * (x.dim() - 1)), device=x.device), norm, eps)


# --------------------------------------------------------------------------- one run


@dataclass
class TrainState:
    """Model, loss module and optimiser: what a resume file holds."""

    config: TrainConfig
    model: nn.Module
    loss_module: nn.Module | None
    optimizer: torch.optim.Optimizer
    epoch: int = 0  #: epochs completed

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "epoch": self.epoch,
                "loss_module": self.loss_module.state_dict() if self.loss_module is not None else {}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.loss_module is not None:
            self.loss_module.load_state_dict(state["loss_module"])
        self.epoch = int(state["epoch"])


def build_state(cfg: TrainConfig, device: torch.device | str = "cpu") -> TrainState:
    torch.manual_seed(cfg.seed)
    model = get_family(cfg.family).build(cfg.arch, **dict(cfg.arch_kwargs)).to(device)
    loss_module = None
    if cfg.family == "l2nnn":
        loss_module = L2NNNLoss(gamma=cfg.gamma, omega=cfg.omega, z=cfg.z, u_init=cfg.u_init,
                                v_init=cfg.v_init).to(device)
    params = list(model.parameters()) + (list(loss_module.parameters()) if loss_module is not None else [])
    opt = torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    return TrainState(cfg, model, loss_module, opt)


def save_resume(state: TrainState, path: str | Path) -> None:
    from ..io import atomic_path

    with atomic_path(path) as tmp:
        torch.save(state.state_dict(), tmp)


def load_resume(state: TrainState, path: str | Path) -> None:
    state.load_state_dict(torch.load(str(path), map_location="cpu", weights_only=True))


def schedule(cfg: TrainConfig, epoch: int, frac: float) -> tuple[float, float | None]:
    """(learning rate, ℓp exponent) at ``epoch + frac`` (frac ∈ [0, 1) within the epoch)."""
    t = (epoch + frac) / max(cfg.epochs, 1)
    if cfg.family != "linf_dist":
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * t)), None
    if t < cfg.p_warm_frac:
        return cfg.lr, cfg.p_start
    if t >= 1.0 - cfg.p_final_frac:
        return cfg.lr / 5.0, cfg.p_final if cfg.p_final is not None else cfg.p_end
    if cfg.p_end == cfg.p_start:
        return cfg.lr, cfg.p_start
    s = (t - cfg.p_warm_frac) / max(1.0 - cfg.p_final_frac - cfg.p_warm_frac, 1e-9)
    return cfg.lr, cfg.p_start * (cfg.p_end / cfg.p_start) ** s


def batch_loss(state: TrainState, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, clean logits) for one batch of the configured family."""
    cfg, model = state.config, state.model
    if cfg.family == "baseline_adv" or (cfg.family == "l2nnn" and cfg.adv_eps > 0):
        x_adv = _adversarial(model, x, y, cfg)
    if cfg.family == "baseline_adv":
        logits = model(x_adv)
        return F.cross_entropy(logits, y), logits
    logits = model(x)
    if cfg.family == "l2nnn":
        assert isinstance(state.loss_module, L2NNNLoss)
        distorted = model(x_adv) if cfg.adv_eps > 0 else None
        return state.loss_module(logits, y, distorted), logits
    if cfg.family == "linf_dist":
        return hinge_loss(logits, y, cfg.hinge_margin), logits
    return F.cross_entropy(logits, y), logits


def _adversarial(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    model.eval()
    try:
        return pgd(model, x, y, norm=cfg.adv_norm, eps=cfg.adv_eps, steps=cfg.adv_steps,
                   step_size=cfg.adv_step_size)
    finally:
        model.train()


def train_epoch(state: TrainState, data: Dataset, device: torch.device | str = "cpu",
                progress: ProgressFn | None = None, max_steps: int | None = None) -> tuple[float, float]:
    """One pass over shuffled ``data``; returns (mean loss, train accuracy)."""
    cfg = state.config
    state.model.train()
    data = data.in_memory()  # shuffled batches visit every row: read the file once, not once per batch
    n = len(data)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed + state.epoch), device="cpu")
    steps = math.ceil(n / cfg.batch_size) if max_steps is None else min(max_steps, math.ceil(n / cfg.batch_size))
    total_loss, correct, seen = 0.0, 0, 0
    for step in range(steps):
        lr, p = schedule(cfg, state.epoch, step / steps)
        _apply_schedule(state, lr, p)
        idx = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
        x = data.as_float(data.take(idx)).to(device)
        y = data.y[idx].to(device)
        loss, logits = batch_loss(state, x, y)
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        state.optimizer.step()
        total_loss += float(loss.detach()) * len(idx)
        correct += int((logits.argmax(1) == y).sum())
        seen += len(idx)
        if progress is not None:
            progress(step + 1, steps)
    return total_loss / max(seen, 1), correct / max(seen, 1)


def _apply_schedule(state: TrainState, lr: float, p: float | None) -> None:
    for group in state.optimizer.param_groups:
        group["lr"] = lr
    if p is not None:
        set_linf_p(state.model, p)


@torch.no_grad()
def accuracy(model: nn.Module, data: Dataset, device: torch.device | str = "cpu", batch_size: int = 500) -> float:
    """Clean accuracy in eval mode (ℓ∞-dist layers at p = ∞)."""
    was_training = model.training
    model.eval()
    correct = 0
    for _, x, y in data.batches(batch_size, device):
        correct += int((model(x).argmax(1) == y).sum())
    model.train(was_training)
    return correct / max(len(data), 1)


def train(state: TrainState, train_data: Dataset, eval_data: Dataset, *, device: torch.device | str = "cpu",
          progress: ProgressFn | None = None, on_epoch: Callable[[EpochResult], None] | None = None,
          max_steps: int | None = None) -> list[EpochResult]:
    """Train from ``state.epoch`` to ``config.epochs``; ``on_epoch`` after each (e.g. to save)."""
    results = []
    while state.epoch < state.config.epochs:
        start = time.perf_counter()
        loss, train_acc = train_epoch(state, train_data, device, progress, max_steps)
        lr, p = schedule(state.config, state.epoch, 0.999)
        state.epoch += 1
        res = EpochResult(state.epoch, state.config.epochs, loss, train_acc,
                          accuracy(state.model, eval_data, device), lr, p, time.perf_counter() - start)
        results.append(res)
        if on_epoch is not None:
            on_epoch(res)
    return results


def metadata_for(cfg: TrainConfig, class_names: tuple[str, ...] | None, dataset_name: str):  # type: ignore[no-untyped-def]
    """The :class:`ModelMetadata` a trained checkpoint of this config declares."""
    from ..checkpoints import ModelMetadata
    from .models import INPUT_SHAPE, NUM_CLASSES

    return ModelMetadata(input_shape=INPUT_SHAPE, bounds=(0.0, 1.0), dataset=dataset_name,
                         num_classes=NUM_CLASSES, class_names=class_names,
                         lipschitz=get_family(cfg.family).claim,
                         description=cfg.description or f"{cfg.family} ({cfg.arch}) trained by examples/train.py")
