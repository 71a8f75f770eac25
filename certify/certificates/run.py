"""``certify``: from a model and a dataset to certified accuracies (radii: [L2NNN] Lemmas 1 and 6,
[LINF-DIST] Fact 3.2; ``docs/soundness.md``).

:func:`certify` plans the certificate (:mod:`.plan`) unless given a plan, streams the data through
the model with the one batched loop (:mod:`.clean_pass`) and returns a frozen :class:`CertifyReport`.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from .._version import __version__
from ..checkpoints import LoadedModel
from ..data import Dataset, ProgressFn, check_against_model
from ..defaults import DEFAULT_BATCH_SIZE, DEFAULT_CERTIFICATE_BUDGET
from ..device import run_device
from ..distributed import World
from ..flags import Flag
from ..threat import Norm, parse_eps
from .clean_pass import Examples, check_finite_logits, model_num_classes, sharded_clean_pass
from .margins import certified_mask
from .plan import CertificatePlan, batch_sizes_for, plan_certificate
from .resume import CertifyResume, certify_settings, check_resume_settings, check_resumed_rows


@dataclass(frozen=True)
class EpsResult:
    eps: float
    certified_accuracy: float
    certified_count: int


@dataclass(frozen=True)
class CertifyReport:
    lipcert_version: str
    model: dict[str, str]
    data: dict[str, object]
    norm: str
    plan: CertificatePlan
    clean_accuracy: float
    mean_gap: float
    median_radius: float
    results: tuple[EpsResult, ...]
    examples: Examples
    flags: tuple[Flag, ...]
    partial: bool
    seed: int | None
    seconds: float
    #: what a ``--resume`` must match (see :func:`certify_settings`)
    settings: Mapping[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.examples)


def certify(
    model: LoadedModel,
    data: Dataset,
    *,
    norm: Norm | str,
    eps: Sequence[float],
    certificate: str = "auto",
    lipschitz_constant: float | None = None,
    assume_lipschitz: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: torch.device | str | None = None,
    seed: int | None = None,
    progress: ProgressFn | None = None,
    resume: CertifyResume | None = None,
    plan: CertificatePlan | None = None,
    world: World | None = None,
    certificate_budget: str | None = DEFAULT_CERTIFICATE_BUDGET,
) -> CertifyReport:
    """Certify every example of ``data``; see :class:`CertifyReport`.

    ``plan`` (from :func:`~certify.certificates.plan.plan_certificate` with the same settings) skips
    planning, so a caller that also attacks analyses the model once.  A ``KeyboardInterrupt`` stops
    the run and returns what was done, with ``partial=True``.  ``resume`` (:func:`resume_examples` of
    a partial run) is verified, not trusted: its settings must equal this run's, and its rows are
    recomputed and must agree with it.

    ``certificate="auto"`` certifies a point when any sound method certifies it: the Lipschitz
    certificate and bound propagation within ``certificate_budget`` (:mod:`.auto_plan`; None: the
    Lipschitz certificate alone).

    Under torchrun (``world``, default: the initialised process group's) each rank passes its shard
    of the data through the model and every rank gets the whole report, the same as one process's.
    """
    norm, eps_t = Norm.parse(norm), parse_eps(list(eps))
    settings = certify_settings(model, data, norm=norm, eps=eps_t, certificate=certificate,
                                lipschitz_constant=lipschitz_constant, assume_lipschitz=assume_lipschitz, seed=seed,
                                certificate_budget=certificate_budget)
    if resume is not None:
        check_resume_settings(resume.settings, settings)
    device = run_device(model.module, device)  # None: the model's device; another one is refused
    start = time.perf_counter()
    meta = model.metadata
    check_against_model(data, meta.input_shape, meta.bounds, None)
    num_classes, flags = model_num_classes(model, data, device)
    check_against_model(data, meta.input_shape, meta.bounds, num_classes)
    if plan is None:
        plan = plan_certificate(model, norm=norm, certificate=certificate, lipschitz_constant=lipschitz_constant,
                                assume_lipschitz=assume_lipschitz, input_dim=int(np.prod(data.input_shape)),
                                input_shape=data.input_shape, batch_sizes=batch_sizes_for(len(data), batch_size),
                                certificate_budget=certificate_budget)
    plan.check_fits(norm, certificate)
    flags += plan.assumption_flags()
    done = sharded_clean_pass(model.module, data, device, plan=plan, batch_size=batch_size, progress=progress,
                              world=world)
    check_finite_logits(done.examples)
    if resume is not None:
        budget = getattr(plan, "budget", None)  # a time budget's bound-propagation radii depend on the machine
        check_resumed_rows(resume.examples, done.examples,
                           timed=budget is not None and budget.spec.seconds is not None)
    report = _summarise(model, data, norm, plan, eps_t, done.examples, flags, done.partial, seed,
                        time.perf_counter() - start)
    return dataclasses.replace(report, settings=settings)


def _summarise(model: LoadedModel, data: Dataset, norm: Norm, plan: CertificatePlan, eps: tuple[float, ...],
               ex: Examples, flags: list[Flag], partial: bool, seed: int | None, seconds: float) -> CertifyReport:
    n = len(ex)
    correct = ex.correct
    results = []
    for e in eps:
        mask = certified_mask(torch.from_numpy(ex.radius), torch.from_numpy(correct), e)
        count = int(mask.sum())
        results.append(EpsResult(eps=e, certified_accuracy=count / n if n else 0.0, certified_count=count))
    return CertifyReport(
        lipcert_version=__version__,
        model=model.info,
        data={"source": data.source, "split": data.split, "n": n},
        norm=norm,
        plan=plan,
        clean_accuracy=float(correct.mean()) if n else 0.0,
        mean_gap=float(ex.gap.mean()) if n else 0.0,
        median_radius=float(np.median(ex.radius)) if n else 0.0,
        results=tuple(results),
        examples=ex,
        flags=tuple(flags),
        partial=partial,
        seed=seed,
        seconds=seconds,
    )
