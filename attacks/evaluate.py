"""``evaluate``: run an attack suite against a model and report robust accuracy ([L2NNN] Tables 1–2; [WCAT] §5.1).

Semantics
---------
* A point is **robust at ε** when it is classified correctly and no attack
  found an adversarial example within ε.  Clean errors are failures.
* The **worst case** per point is taken over every attack run; so the worst
  case is never above any single attack's robust accuracy.
* Each point's **minimum adversarial distance** is the smallest distance any
  attack reached (minimum-norm attacks give it directly; a fixed-ε success
  gives a distance ≤ ε).  0 for clean errors, ``inf`` when nothing was found.

Certify-first
-------------
When a certificate can be planned (:func:`certify.certificates.plan_certificate`, or the ``plan``
a caller passes in), points certified at ε (correct and radius > ε) are not attacked at that ε:
:attr:`AttackReport.certified_skipped` says how many.  Any attack success
inside a certified radius, and any success of ``check_certificates`` (strong
PGD at ε = 0.999·radius on sampled certified points), raises
:class:`~certify.errors.CertificateViolation` carrying the report.

Layout: this module checks the arguments and plans; :mod:`attacks.runner` runs the suite over
chunks of points; :mod:`attacks.report` builds the :class:`AttackReport`; :mod:`attacks.resume`
reads and checks a partial run.  The clean pass is certify's one batched loop
(:func:`certify.certificates.clean_pass`).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from certify.certificates import (
    CertificatePlan,
    NoCertificate,
    batch_sizes_for,
    check_finite_logits,
    model_num_classes,
    plan_certificate,
    sharded_clean_pass,
)
from certify.checkpoints import LoadedModel
from certify.data import Dataset, ProgressFn, check_against_model
from certify.defaults import (
    DEFAULT_ATTACK_BATCH_SIZE,
    DEFAULT_ATTACK_STEPS,
    DEFAULT_ATTACKS,
    DEFAULT_CASCADE,
    DEFAULT_DISTANCE_ATTACK,
    DEFAULT_RESTARTS,
    DEFAULT_SEED,
    ZERO_GRADIENT_SHARE,
)
from certify.device import run_device
from certify.distributed import World, current_world
from certify.errors import BadInputError
from certify.flags import Flag
from certify.rowstore import Rows
from certify.threat import Norm, parse_eps

from .base import Attack, input_gradient
from .registry import ATTACKS, attack_class
from .report import AttackReport, build_report, raise_violation
from .resume import AttackResume, take_resume
from .runner import Run, Ticker, check_sampled, run_chunks


def evaluate(
    model: LoadedModel,
    data: Dataset,
    *,
    norm: Norm | str,
    eps: Sequence[float],
    attacks: Sequence[str] | None = None,
    steps: Sequence[int] = DEFAULT_ATTACK_STEPS,
    restarts: int = DEFAULT_RESTARTS,
    certify_first: bool = True,
    certificate: str = "auto",
    assume_lipschitz: bool = False,
    check_certificates: int = 0,
    min_distance: bool = True,
    cascade: bool = DEFAULT_CASCADE,
    batch_size: int = DEFAULT_ATTACK_BATCH_SIZE,
    device: torch.device | str | None = None,
    seed: int = DEFAULT_SEED,
    progress: ProgressFn | None = None,
    resume: AttackResume | None = None,
    plan: CertificatePlan | NoCertificate | None = None,
    world: World | None = None,
    certificate_budget: str | None = None,
) -> AttackReport:
    """Attack every example of ``data`` with a suite; see the module docs for the semantics.

    ``cascade=True`` (AutoAttack's flow): each fixed-ε attack only attacks
    the points still robust after the attacks before it, and its rows give the robust accuracy
    *after* it and those before it.  The budgets of one attack (``steps``) each start from the
    same state, so the iteration-scaling view compares like with like.  ``cascade=False`` runs
    every attack on every uncertified point, so each row is that attack alone.
    ``min_distance=True`` adds DDN (L2) or FMN (ℓ∞) when the suite has no minimum-norm attack, so
    every point gets a distance.  ``plan``: the certificate plan a caller already made for this model,
    norm and certificate (or :class:`~certify.certificates.NoCertificate` when planning was refused),
    so it is not planned twice.  ``certificate_budget`` (with ``certificate="auto"``): certify-first
    also runs bound propagation within it, as ``certify`` does (None: the Lipschitz certificate
    alone); the points it certifies are not attacked.

    Points are attacked in chunks of :data:`~certify.defaults.ATTACK_CHUNK` (each with a seed from
    ``seed`` and its start), so results do not depend on interruptions.  A ``KeyboardInterrupt``
    returns the completed chunks with ``partial=True``; ``resume`` (:func:`attacks.resume.resume_state`
    of that partial JSON, same settings) skips them and merges.

    Under torchrun (``world``, default: the initialised process group's) each rank attacks its shard
    of the chunks and every rank gets the whole report, the same as one process's (the certificate
    check, ``check_certificates``, shares its sample out the same way).
    """
    world = current_world() if world is None else world
    norm, eps_t = Norm.parse(norm), parse_eps(list(eps))
    steps_t = _check_args(steps, restarts, check_certificates, batch_size)
    specs = _resolve_attacks(attacks, norm, min_distance)
    dev = run_device(model.module, device)  # None: the model's device; another one is refused
    start = time.perf_counter()
    _check_eps_scale(norm, eps_t, model.metadata.bounds)
    num_classes, flags = model_num_classes(model, data, dev)
    check_against_model(data, model.metadata.input_shape, model.metadata.bounds, num_classes)
    plan, notes = _plan(model, data, norm, certificate, assume_lipschitz, certify_first, check_certificates,
                        batch_size, plan, certificate_budget)
    flags += plan.assumption_flags() if plan is not None else []
    clean = _clean(model, data, plan, batch_size, dev, world)
    x, y = data.float_rows(), data.y  # the images are read when a chunk or a point needs them
    flags += gradient_flags(model.module, x, y, clean.correct, dev)
    rows = sum(len(eps_t) * (len(steps_t) if cls.scales_with_steps else 1) for _, cls in specs)
    run = Run(model.module, x, y, norm, eps_t, model.metadata.bounds, clean.correct,
              clean.radius if certify_first else np.full(len(y), np.nan), batch_size, dev, seed,
              Ticker(0, progress))
    settings = attack_settings(model, data, norm=norm, eps=eps_t, attacks=[k for k, _ in specs], steps=steps_t,
                               restarts=restarts, certify_first=certify_first, cascade=cascade,
                               certificate=certificate, assume_lipschitz=assume_lipschitz,
                               check_certificates=check_certificates, seed=seed,
                               certificate_budget=certificate_budget)
    if resume is not None:
        take_resume(run, resume, settings)
    lo, hi = world.shard(len(y), start=run.completed)
    run.tick.total = rows * (hi - lo) + check_certificates
    partial, checked = False, 0
    notes += ("cascade: each row is the robust accuracy after that attack and the attacks above it",) \
        if cascade and len(specs) > 1 else ()
    try:
        partial = run_chunks(run, specs, steps_t, restarts, cascade, world)
        if check_certificates and not partial:
            checked = check_sampled(run, clean.radius, check_certificates, specs, world)
    except KeyboardInterrupt:
        partial = True
    seconds = time.perf_counter() - start + (resume.seconds if resume is not None else 0.0)
    report = build_report(model, data, run, clean, specs, steps_t, restarts, plan, notes, flags, partial, checked,
                          seconds)
    report = dataclasses.replace(report, settings=settings)
    if report.violations:
        raise_violation(report)
    return report


def _clean(model: LoadedModel, data: Dataset, plan: CertificatePlan | None, batch_size: int,
           device: torch.device, world: World) -> Any:
    """The clean pass (certify's batched loop, sharded under torchrun): predictions, margins and, with a
    plan, radii."""
    done = sharded_clean_pass(model.module, data, device, plan=plan, batch_size=batch_size, world=world)
    if done.partial:
        raise KeyboardInterrupt  # nothing was attacked yet: there is no partial result to keep
    check_finite_logits(done.examples)
    return done.examples


def attack_settings(model: LoadedModel, data: Dataset, *, norm: Norm, eps: Sequence[float], attacks: Sequence[str],
                    steps: Sequence[int], restarts: int, certify_first: bool, cascade: bool, certificate: str,
                    assume_lipschitz: bool, check_certificates: int, seed: int,
                    certificate_budget: str | None = None) -> dict[str, Any]:
    """Everything a resumed attack run must share with the partial one (the certificate budget only when
    certify-first ``auto`` spends one, so partials written without it still resume)."""
    return {"command": "attack", "model_sha256": model.sha256, "data_source": data.source,
            "data_split": data.split, "data_total": len(data), "norm": norm, "eps": [float(e) for e in eps],
            "attacks": list(attacks), "steps": list(steps), "restarts": restarts,
            "mode": "cascade" if cascade else "independent", "certify_first": bool(certify_first),
            "certificate": certificate, "assume_lipschitz": bool(assume_lipschitz),
            "check_certificates": check_certificates, "seed": seed,
            **({"certificate_budget": certificate_budget} if certificate_budget is not None else {})}


def _check_args(steps: Sequence[int], restarts: int, check: int, batch_size: int) -> tuple[int, ...]:
    steps_t = tuple(int(s) for s in steps)
    if not steps_t or any(s < 1 for s in steps_t) or len(set(steps_t)) != len(steps_t):
        raise BadInputError(f"steps expects distinct positive integers like 100,1000; got {list(steps)}",
                            param="steps")
    if restarts < 1:
        raise BadInputError(f"restarts must be at least 1, got {restarts}", param="restarts")
    if check < 0:
        raise BadInputError(f"check_certificates must be ≥ 0, got {check}", param="check_certificates")
    if batch_size < 1:
        raise BadInputError(f"batch size must be at least 1, got {batch_size}", param="batch_size")
    return tuple(sorted(steps_t))


def _check_eps_scale(norm: Norm, eps: tuple[float, ...], bounds: tuple[float, float]) -> None:
    """An ℓ∞ ε as wide as the input range makes every point trivially attackable: a wrong scale."""
    width = bounds[1] - bounds[0]
    if norm is Norm.LINF and max(eps) >= width:
        raise BadInputError(f"eps {max(eps):g} in ℓ∞ covers the whole input range {width:g} (bounds "
                            f"{list(bounds)}); ε is on the input scale, e.g. 8/255 ≈ 0.0314 for pixels in [0, 1]",
                            param="eps")


def _resolve_attacks(names: Sequence[str] | None, norm: Norm, min_distance: bool) -> list[tuple[str, type[Attack]]]:
    chosen = list(DEFAULT_ATTACKS[norm] if names is None else names)
    if not chosen:
        raise BadInputError(f"give at least one attack; valid attacks are {', '.join(sorted(ATTACKS))}",
                            param="attacks")
    keys = [n.strip().lower() for n in chosen]
    if len(set(keys)) != len(keys):
        raise BadInputError(f"attacks lists an attack twice: {chosen}", param="attacks")
    specs = [(k, attack_class(k, norm)) for k in keys]
    if min_distance and not any(cls.minimization for _, cls in specs):
        extra = DEFAULT_DISTANCE_ATTACK[norm]
        specs.append((extra, ATTACKS[extra]))
    return specs


def _plan(model: LoadedModel, data: Dataset, norm: Norm, certificate: str, assume: bool, certify_first: bool,
          check: int, batch_size: int, given: CertificatePlan | NoCertificate | None, budget: str | None
          ) -> tuple[CertificatePlan | None, tuple[str, ...]]:
    if not certify_first and not check:
        return None, ("certify-first disabled: every correctly classified point was attacked",)
    if isinstance(given, CertificatePlan):
        given.check_fits(norm, certificate)
        return given, ()
    try:
        if isinstance(given, NoCertificate):
            raise given.error()
        plan = plan_certificate(model, norm=norm, certificate=certificate, assume_lipschitz=assume,
                                input_dim=int(np.prod(data.input_shape)), input_shape=tuple(data.input_shape),
                                batch_sizes=batch_sizes_for(len(data), batch_size), certificate_budget=budget)
    except BadInputError as err:
        if check:
            raise BadInputError(f"check_certificates needs a certificate, but none could be planned: {err}",
                                param="check_certificates") from err
        return None, (f"no certificate ({err}); every correctly classified point was attacked",)
    return plan, ()


def gradient_flags(module: torch.nn.Module, x: torch.Tensor | Rows, y: torch.Tensor, correct: np.ndarray,
                   device: torch.device, n: int = 64) -> list[Flag]:
    """``nan-gradients`` / ``zero-gradients`` from the input gradient of the CE loss on a few correct points."""
    idx = torch.from_numpy(np.flatnonzero(correct)[:n])
    if idx.numel() == 0:
        return []
    xb = x[idx].to(device).requires_grad_(True)
    grad = input_gradient(F.cross_entropy(module(xb), y[idx].to(device), reduction="sum"), xb)
    flat = grad.detach().flatten(1)
    flags = []
    if not bool(torch.isfinite(flat).all()):
        flags.append(Flag("nan-gradients", "input gradients contain NaN or Inf"))
    zero = float((flat == 0).all(dim=1).float().mean())
    if zero > ZERO_GRADIENT_SHARE:
        flags.append(Flag("zero-gradients", f"{100 * zero:.0f}% of {idx.numel()} correctly classified points have "
                                            "an all-zero input gradient"))
    return flags
