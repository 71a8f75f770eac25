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
When a certificate can be planned (:func:`certify.certificates.plan_certificate`),
points certified at ε (correct and radius > ε) are not attacked at that ε:
:attr:`AttackReport.certified_skipped` says how many.  Any attack success
inside a certified radius, and any success of ``check_certificates`` (strong
PGD at ε = 0.999·radius on sampled certified points), raises
:class:`~certify.errors.CertificateViolation` carrying the report.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from certify._version import __version__
from certify.device import run_device
from certify.certificates import CertificatePlan, batch_sizes_for, model_num_classes, parse_eps, plan_certificate
from certify.checkpoints import LoadedModel
from certify.data import Dataset, ProgressFn, check_against_model
from certify.defaults import (
    CHECK_EPS_FRACTION,
    ATTACK_CHUNK,
    DEFAULT_ATTACK_BATCH_SIZE,
    DEFAULT_ATTACK_STEPS,
    DEFAULT_CASCADE,
    DEFAULT_ATTACKS,
    DEFAULT_CHECK_RESTARTS,
    DEFAULT_CHECK_STEPS,
    DEFAULT_DISTANCE_ATTACK,
    DEFAULT_RESTARTS,
    DEFAULT_SEED,
    STILL_FALLING_DROP,
    ZERO_GRADIENT_SHARE,
)
from certify.errors import BadInputError, CertificateViolation, short_repr
from certify.flags import Flag
from certify.margins import logit_stats

from .apgd import APGD
from .base import Attack, AttackOutcome, batch_seed, input_gradient, run_batched
from .pgd import PGD, MarginPGD
from .registry import ATTACKS, attack_class, build

if TYPE_CHECKING:
    from .resume import AttackResume



# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class AttackResult:
    """One attack at one ε and one budget.  ``seconds`` of a minimum-norm attack cover all ε."""

    attack: str
    eps: float
    steps: int | None
    restarts: int | None
    robust_accuracy: float
    attacked: int  #: points attacked (correct and not certified at ε)
    successes: int  #: adversarial examples found within ε
    seconds: float
    robust_count: int  #: points robust after this row (``robust_accuracy`` = robust_count / n)


@dataclass(frozen=True)
class WorstCase:
    eps: float
    robust_accuracy: float
    robust_count: int


@dataclass(frozen=True)
class Violation:
    """An adversarial example inside a certified radius."""

    index: int
    radius: float
    eps: float
    distance: float
    attack: str

    def describe(self) -> str:
        return (f"point {self.index}: certified radius {self.radius:.6g} but {self.attack} found an adversarial "
                f"at distance {self.distance:.6g} (attacked at ε={self.eps:.6g})")


@dataclass(frozen=True)
class AttackExamples:
    """Per-example records (numpy arrays of equal length)."""

    index: np.ndarray
    label: np.ndarray
    prediction: np.ndarray
    gap: np.ndarray
    margin: np.ndarray
    radius: np.ndarray  #: NaN when no certificate could be planned
    min_adv_distance: np.ndarray  #: 0 for clean errors, inf when no adversarial was found
    min_adv_attack: np.ndarray  #: object array of attack names ("clean", or "" when none)
    robust: np.ndarray = field(repr=False)  #: bool, points × eps: worst-case robust

    def __len__(self) -> int:
        return int(self.index.shape[0])


@dataclass(frozen=True)
class AttackReport:
    lipcert_version: str
    model: dict[str, str]
    data: dict[str, object]
    norm: str
    eps: tuple[float, ...]
    attacks: tuple[str, ...]
    steps: tuple[int, ...]
    restarts: int
    clean_accuracy: float
    results: tuple[AttackResult, ...]
    worst_case: tuple[WorstCase, ...]
    certified_skipped: dict[float, int]
    violations: tuple[Violation, ...]
    iteration_scaling: tuple[AttackResult, ...]
    flags: tuple[Flag, ...]
    partial: bool
    seed: int
    seconds: float
    plan: CertificatePlan | None
    notes: tuple[str, ...]
    certificates_checked: int
    examples: AttackExamples
    #: what a ``--resume`` must match (see :func:`attack_settings`)
    settings: Mapping[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.examples)


# --------------------------------------------------------------------------- run state


@dataclass
class _Ticker:
    """Progress shared by the chunks of one run."""

    total: int
    progress: ProgressFn | None
    done: int = 0

    def __call__(self, k: int) -> None:
        self.done += k
        if self.progress is not None:
            self.progress(min(self.done, self.total), self.total)


@dataclass
class _Run:
    """Mutable bookkeeping while the suite runs (never returned): the whole data, or one chunk of it."""

    module: torch.nn.Module
    x: torch.Tensor
    y: torch.Tensor
    norm: str
    eps: tuple[float, ...]
    bounds: tuple[float, float]
    correct: np.ndarray
    radius: np.ndarray
    batch_size: int
    device: torch.device
    seed: int
    tick: _Ticker
    offset: int = 0  #: index of this run's first point in the data (for violations)
    broken: np.ndarray = field(init=False)
    min_dist: np.ndarray = field(init=False)
    min_attack: np.ndarray = field(init=False)
    results: list[AttackResult] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    completed: int = 0  #: points whose chunk finished (a prefix of the data)

    def __post_init__(self) -> None:
        n = len(self.correct)
        self.broken = np.zeros((len(self.eps), n), dtype=bool)
        self.min_dist = np.where(self.correct, np.inf, 0.0)
        self.min_attack = np.where(self.correct, "", "clean").astype(object)

    def certified(self, eps: float) -> np.ndarray:
        return self.correct & (self.radius > eps)  # NaN radius → False

    def chunk(self, lo: int, hi: int) -> _Run:
        """A run over points ``lo:hi`` with its own seed (the same whether or not the run was resumed)."""
        seed = self.seed if lo == 0 else batch_seed(self.seed, CHUNK_SEED_KEY, lo)
        return _Run(self.module, self.x[lo:hi], self.y[lo:hi], self.norm, self.eps, self.bounds, self.correct[lo:hi],
                    self.radius[lo:hi], self.batch_size, self.device, seed, self.tick, offset=lo)

    def absorb(self, part: _Run, lo: int, hi: int) -> None:
        """Take over a finished chunk ``lo:hi``; rows add up over chunks."""
        self.broken[:, lo:hi] = part.broken
        self.min_dist[lo:hi] = part.min_dist
        self.min_attack[lo:hi] = part.min_attack
        self.violations += part.violations
        self.results = merge_rows(self.results, part.results, hi)
        self.completed = hi

    def record_distances(self, idx: np.ndarray, out: AttackOutcome, name: str) -> None:
        d = out.distance.numpy()
        better = out.success.numpy() & (d < self.min_dist[idx])
        self.min_dist[idx[better]] = d[better]
        self.min_attack[idx[better]] = name

    def attack(self, attack: Attack, idx: np.ndarray, eps: float | torch.Tensor | None, key: int,
               weight: int = 1) -> AttackOutcome:
        t = torch.from_numpy(idx)
        e = eps[t] if isinstance(eps, torch.Tensor) else eps
        return run_batched(attack, self.module, self.x[t], self.y[t], norm=self.norm, eps=e, bounds=self.bounds,
                           seed=self.seed, batch_size=self.batch_size, device=self.device, key=key,
                           on_batch=lambda b: self.tick(b * weight))


#: Key mixed into the seed of every chunk after the first (the first keeps the run's seed).
CHUNK_SEED_KEY = 7_777_777


def merge_rows(before: Sequence[AttackResult], new: Sequence[AttackResult], n: int) -> list[AttackResult]:
    """Rows of two consecutive slices of the data added up (``n``: points in both together)."""
    if not before:
        return [replace(r, robust_accuracy=r.robust_count / n if n else 0.0) for r in new]
    if [_row_key(r) for r in before] != [_row_key(r) for r in new]:
        raise BadInputError("--resume: the partial results ran other attack rows than this run; rerun from scratch")
    return [replace(a, robust_accuracy=(a.robust_count + b.robust_count) / n, attacked=a.attacked + b.attacked,
                    successes=a.successes + b.successes, seconds=a.seconds + b.seconds,
                    robust_count=a.robust_count + b.robust_count) for a, b in zip(before, new)]


def _row_key(r: AttackResult) -> tuple:
    return r.attack, r.eps, r.steps, r.restarts


# --------------------------------------------------------------------------- entry point


def evaluate(
    model: LoadedModel,
    data: Dataset,
    *,
    norm: str,
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
) -> AttackReport:
    """Attack every example of ``data`` with a suite; see the module docs for the semantics.

    ``cascade=True`` (AutoAttack's flow): each fixed-ε attack only attacks
    the points still robust after the attacks before it, and its rows give the robust accuracy
    *after* it and those before it.  The budgets of one attack (``steps``) each start from the
    same state, so the iteration-scaling view compares like with like.  ``cascade=False`` runs
    every attack on every uncertified point, so each row is that attack alone.
    ``min_distance=True`` adds DDN (L2) or FMN (ℓ∞) when the suite has no minimum-norm attack, so
    every point gets a distance.

    Points are attacked in chunks of :data:`~certify.defaults.ATTACK_CHUNK` (each with a seed from
    ``seed`` and its start), so results do not depend on interruptions.  A ``KeyboardInterrupt``
    returns the completed chunks with ``partial=True``; ``resume`` (:func:`attacks.resume.resume_state`
    of that partial JSON, same settings) skips them and merges.
    """
    eps_t = parse_eps(list(eps))
    steps_t = _check_args(norm, steps, restarts, check_certificates, batch_size)
    specs = _resolve_attacks(attacks, norm, min_distance)
    dev = run_device(model.module, device)  # None: the model's device; another one is refused
    start = time.perf_counter()
    _check_eps_scale(norm, eps_t, model.metadata.bounds)
    num_classes, flags = model_num_classes(model, data, dev)
    check_against_model(data, model.metadata.input_shape, model.metadata.bounds, num_classes)
    input_dim = int(np.prod(data.input_shape))
    plan, notes = _plan(model, norm, certificate, assume_lipschitz, certify_first, check_certificates, input_dim,
                        batch_sizes_for(len(data), batch_size))
    if plan is not None and not plan.lipschitz_verified:
        flags.append(Flag("lipschitz-assumed", f"certificate {plan.certificate} rests on a {plan.basis} "
                                               f"Lipschitz property: {plan.reason}"))
    x, y = data.batch(0, len(data), "cpu")
    clean = _clean_pass(model.module, x, y, plan, batch_size, dev)
    bad = np.flatnonzero(~(np.isfinite(clean["gap"]) & np.isfinite(clean["margin"])))
    if bad.size:
        raise BadInputError(f"the model's logits are NaN or Inf on example {int(bad[0])} (and {bad.size - 1} "
                            "more); the model is broken: check its weights and inputs")
    flags += gradient_flags(model.module, x, y, clean["prediction"] == clean["label"], dev)
    rows = sum(len(eps_t) * (len(steps_t) if cls.scales_with_steps else 1) for _, cls in specs)
    run = _Run(model.module, x, y, norm, eps_t, model.metadata.bounds, clean["prediction"] == clean["label"],
               clean["radius"] if certify_first else np.full(len(y), np.nan), batch_size, dev, seed,
               _Ticker(rows * len(y) + check_certificates, progress))
    settings = attack_settings(model, data, norm=norm, eps=eps_t, attacks=[k for k, _ in specs], steps=steps_t,
                               restarts=restarts, certify_first=certify_first, cascade=cascade,
                               certificate=certificate, assume_lipschitz=assume_lipschitz,
                               check_certificates=check_certificates, seed=seed)
    if resume is not None:
        _take_resume(run, resume, settings)
        run.tick(rows * run.completed)
    partial, checked = False, 0
    notes += ("cascade: each row is the robust accuracy after that attack and the attacks above it",) \
        if cascade and len(specs) > 1 else ()
    try:
        for lo in range(run.completed, len(y), ATTACK_CHUNK):
            hi = min(len(y), lo + ATTACK_CHUNK)
            run.absorb(_run_suite(run.chunk(lo, hi), specs, steps_t, restarts, cascade), lo, hi)
        if check_certificates:
            checked = _check_certificates(run, clean["radius"], check_certificates, specs)
    except KeyboardInterrupt:
        partial = True
    seconds = time.perf_counter() - start + (resume.seconds if resume is not None else 0.0)
    report = _report(model, data, run, clean, specs, steps_t, restarts, plan, notes, flags, partial, checked, seconds)
    report = dataclasses.replace(report, settings=settings)
    if report.violations:
        _raise_violation(report)
    return report


def _run_suite(run: _Run, specs: list[tuple[str, type[Attack]]], steps: tuple[int, ...], restarts: int,
               cascade: bool) -> _Run:
    for ai, (name, cls) in enumerate(specs):
        before = run.broken.copy() if cascade else np.zeros_like(run.broken)
        for budget in (steps if cls.scales_with_steps else (None,)):
            _run_one(run, ai, name, build(cls, steps=budget, restarts=restarts), budget, restarts, before)
    return run


def attack_settings(model: LoadedModel, data: Dataset, *, norm: str, eps: Sequence[float], attacks: Sequence[str],
                    steps: Sequence[int], restarts: int, certify_first: bool, cascade: bool, certificate: str,
                    assume_lipschitz: bool, check_certificates: int, seed: int) -> dict[str, Any]:
    """Everything a resumed attack run must share with the partial one."""
    return {"command": "attack", "model_sha256": model.sha256, "data_source": data.source,
            "data_split": data.split, "data_total": len(data), "norm": norm, "eps": [float(e) for e in eps],
            "attacks": list(attacks), "steps": list(steps), "restarts": restarts,
            "mode": "cascade" if cascade else "independent", "certify_first": bool(certify_first),
            "certificate": certificate, "assume_lipschitz": bool(assume_lipschitz),
            "check_certificates": check_certificates, "seed": seed}


def _take_resume(run: _Run, resume: AttackResume, settings: Mapping[str, Any]) -> None:
    """Check that a partial run had this run's settings and sane rows, then load its completed chunks."""
    for what, new in settings.items():
        old = resume.settings.get(what)
        if old != new:
            label = what.replace("_", " ")
            raise BadInputError(f"--resume: the partial results have {label} {short_repr(old, 70)}, this run has "
                                f"{short_repr(new, 70)}; resume with the same settings or rerun from scratch")
    k = resume.n
    if k > len(run.correct) or (k % ATTACK_CHUNK and k != len(run.correct)):
        raise BadInputError(f"--resume: the partial results hold {k} examples, which is not a run of "
                            f"{len(run.correct)} examples in chunks of {ATTACK_CHUNK}")
    if resume.robust.shape != (k, len(run.eps)) or not np.array_equal(resume.label, run.y[:k].numpy()):
        raise BadInputError("--resume: the partial results' labels or robust records do not match this data")
    _check_resumed_rows(run, resume, settings)
    run.broken[:, :k] = run.correct[None, :k] & ~resume.robust.T
    run.min_dist[:k] = resume.min_adv_distance
    run.min_attack[:k] = resume.min_adv_attack
    run.results = list(resume.results)
    run.violations = list(resume.violations)
    run.completed = k


def _check_resumed_rows(run: _Run, resume: AttackResume, settings: Mapping[str, Any]) -> None:
    """Rows must be possible: robust only where this model is correct, no adversarial inside a robust ε,
    distances ≥ 0, attack names from this run, counts within the points."""
    k = resume.n
    correct = run.correct[:k]
    eps = np.asarray(run.eps)
    dist = resume.min_adv_distance
    if np.isnan(dist).any() or (dist < 0).any():
        raise BadInputError("--resume: min_adv_distance holds a negative or NaN distance; the file was edited")
    if (resume.robust & ~correct[:, None]).any():
        i = int(np.flatnonzero((resume.robust & ~correct[:, None]).any(axis=1))[0])
        raise BadInputError(f"--resume: row {i} is marked robust but this model misclassifies it; "
                            "the partial is from another run or was edited")
    if (resume.robust & (dist[:, None] <= eps[None, :])).any():
        raise BadInputError("--resume: a row is marked robust at an ε above its adversarial distance; "
                            "the file was edited")
    names = set(settings["attacks"]) | {"", "clean"}
    if any(a not in names for a in resume.min_adv_attack):
        raise BadInputError("--resume: min_adv_attack names an attack this run does not run; the file was edited")
    for r in resume.results:
        if (r.attack not in settings["attacks"] or r.eps not in run.eps
                or not 0 <= r.successes <= r.attacked <= k or not 0 <= r.robust_count <= k):
            raise BadInputError(f"--resume: result row {short_repr(r.attack, 30)} at eps {r.eps:g} is not one this "
                                "run could have written; the file was edited")


def _check_args(norm: str, steps: Sequence[int], restarts: int, check: int, batch_size: int) -> tuple[int, ...]:
    if norm not in ("l2", "linf"):
        raise BadInputError(f"expected --norm l2 or linf, got {norm!r}")
    steps_t = tuple(int(s) for s in steps)
    if not steps_t or any(s < 1 for s in steps_t) or len(set(steps_t)) != len(steps_t):
        raise BadInputError(f"--steps expects distinct positive integers like 100,1000; got {list(steps)}")
    if restarts < 1:
        raise BadInputError(f"--restarts must be at least 1, got {restarts}")
    if check < 0:
        raise BadInputError(f"--check-certificates must be ≥ 0, got {check}")
    if batch_size < 1:
        raise BadInputError(f"batch size must be at least 1, got {batch_size}")
    return tuple(sorted(steps_t))


def _check_eps_scale(norm: str, eps: tuple[float, ...], bounds: tuple[float, float]) -> None:
    """An ℓ∞ ε as wide as the input range makes every point trivially attackable: a wrong scale."""
    width = bounds[1] - bounds[0]
    if norm == "linf" and max(eps) >= width:
        raise BadInputError(f"--eps {max(eps):g} in ℓ∞ covers the whole input range {width:g} (bounds "
                            f"{list(bounds)}); ε is on the input scale, e.g. 8/255 ≈ 0.0314 for pixels in [0, 1]")


def _resolve_attacks(names: Sequence[str] | None, norm: str, min_distance: bool) -> list[tuple[str, type[Attack]]]:
    chosen = list(DEFAULT_ATTACKS[norm] if names is None else names)
    if not chosen:
        raise BadInputError(f"give at least one attack; valid attacks are {', '.join(sorted(ATTACKS))}")
    keys = [n.strip().lower() for n in chosen]
    if len(set(keys)) != len(keys):
        raise BadInputError(f"--attacks lists an attack twice: {chosen}")
    specs = [(k, attack_class(k, norm)) for k in keys]
    if min_distance and not any(cls.minimization for _, cls in specs):
        extra = DEFAULT_DISTANCE_ATTACK[norm]
        specs.append((extra, ATTACKS[extra]))
    return specs


def _plan(model: LoadedModel, norm: str, certificate: str, assume: bool, certify_first: bool, check: int,
          input_dim: int, batch_sizes: tuple[int, ...]) -> tuple[CertificatePlan | None, tuple[str, ...]]:
    if not certify_first and not check:
        return None, ("certify-first disabled: every correctly classified point was attacked",)
    try:
        plan = plan_certificate(model, norm=norm, certificate=certificate, assume_lipschitz=assume,
                                input_dim=input_dim, batch_sizes=batch_sizes)
    except BadInputError as err:
        if check:
            raise BadInputError(f"--check-certificates needs a certificate, but none could be planned: {err}") from err
        return None, (f"no certificate ({err}); every correctly classified point was attacked",)
    return plan, ()


@torch.no_grad()
def _clean_pass(module: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, plan: CertificatePlan | None,
                batch_size: int, device: torch.device) -> dict[str, np.ndarray]:
    cols: dict[str, list[torch.Tensor]] = {k: [] for k in ("label", "prediction", "gap", "margin", "radius")}
    for lo in range(0, len(y), batch_size):
        xb, yb = x[lo:lo + batch_size].to(device), y[lo:lo + batch_size].to(device)
        if plan is not None:
            logits, err = plan.logits(module, xb)
            stats = logit_stats(logits, yb)
            radius = plan.radii(logits, stats, err)
        else:
            stats = logit_stats(module(xb), yb)
            radius = torch.full_like(stats.gap, float("nan"))
        for k, v in (("label", yb), ("prediction", stats.prediction), ("gap", stats.gap),
                     ("margin", stats.margin), ("radius", radius)):
            cols[k].append(v.cpu())
    return {k: torch.cat(v).numpy() for k, v in cols.items()}


def gradient_flags(module: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, correct: np.ndarray,
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


# --------------------------------------------------------------------------- running attacks


def _run_one(run: _Run, ai: int, name: str, attack: Attack, budget: int | None, restarts: int,
             before: np.ndarray) -> None:
    """Run one attack at one budget.  ``before``: points × ε already broken by earlier attacks
    (all False when not cascading); the row's robust accuracy counts them as broken."""
    steps = getattr(attack, "steps", None)
    rs = restarts if type(attack).has_restarts else None
    if attack.minimization:
        _run_min(run, ai, name, attack, steps, rs, before)
        return
    for ei, e in enumerate(run.eps):
        targets = np.flatnonzero(run.correct & ~run.certified(e) & ~before[ei])
        run.tick(len(run.correct) - len(targets))
        t0 = time.perf_counter()
        out = run.attack(attack, targets, e, key=_key(ai, budget, ei))
        succ = targets[out.success.numpy()]
        run.broken[ei, succ] = True
        run.record_distances(targets, out, name)
        _record_violations(run, targets, out.success.numpy(), out.distance.numpy(), name, run.radius, eps=None)
        robust = run.correct & ~before[ei]
        robust[succ] = False
        run.results.append(AttackResult(name, e, steps, rs, float(robust.mean()), len(targets), len(succ),
                                        time.perf_counter() - t0, int(robust.sum())))


def _run_min(run: _Run, ai: int, name: str, attack: Attack, steps: int | None, rs: int | None,
             before: np.ndarray) -> None:
    """A minimum-norm attack runs once on the points not certified at the largest ε.

    It is the source of minimum distances, so it also attacks points that earlier attacks broke.
    """
    k = len(run.eps)
    targets = np.flatnonzero(run.correct & ~run.certified(max(run.eps)))
    run.tick((len(run.correct) - len(targets)) * k)
    t0 = time.perf_counter()
    out = run.attack(attack, targets, None, key=_key(ai, None, 0), weight=k)
    seconds = time.perf_counter() - t0
    run.record_distances(targets, out, name)
    dist, success = out.distance.numpy(), out.success.numpy()
    _record_violations(run, targets, success, dist, name, run.radius, eps=None)
    for ei, e in enumerate(run.eps):
        succ = targets[success & (dist <= e)]
        run.broken[ei, succ] = True
        robust = run.correct & ~before[ei]
        robust[succ] = False
        run.results.append(AttackResult(name, e, steps, rs, float(robust.mean()), len(targets), len(succ), seconds,
                                        int(robust.sum())))


def _record_violations(run: _Run, idx: np.ndarray, success: np.ndarray, dist: np.ndarray, name: str,
                       radius: np.ndarray, eps: np.ndarray | None) -> None:
    """A success closer than the radius (min-norm), or any success at ε < radius (fixed ε), is a violation."""
    r = radius[idx]
    bad = success & (dist < r)
    for j in np.flatnonzero(bad):
        e = float(dist[j]) if eps is None else float(eps[j])
        run.violations.append(Violation(run.offset + int(idx[j]), float(r[j]), e, float(dist[j]), name))


def _key(ai: int, budget: int | None, ei: int) -> int:
    return (ai * 1_000_003 + (budget or 0)) * 1_009 + ei


def _check_certificates(run: _Run, radius: np.ndarray, count: int, specs: list[tuple[str, type[Attack]]]) -> int:
    """Strong attacks (PGD-CE, PGD-margin, APGD-CE, the suite's minimum-norm attacks) at ε = 0.999·radius
    on a seeded sample of certified points."""
    pool = np.flatnonzero(run.correct & np.isfinite(radius) & (radius > 0))
    if len(pool) == 0:
        return 0
    rng = np.random.default_rng(run.seed)
    idx = np.sort(rng.choice(pool, size=min(count, len(pool)), replace=False))
    eps = torch.zeros(len(run.y), dtype=torch.float64, device="cpu")  # run_batched moves each batch
    eps[torch.from_numpy(idx)] = torch.from_numpy(CHECK_EPS_FRACTION * radius[idx])
    strong = [("check:pgd", PGD(steps=DEFAULT_CHECK_STEPS, restarts=DEFAULT_CHECK_RESTARTS)),
              ("check:pgd-margin", MarginPGD(steps=DEFAULT_CHECK_STEPS, restarts=DEFAULT_CHECK_RESTARTS)),
              ("check:apgd-ce", APGD(steps=DEFAULT_CHECK_STEPS, restarts=DEFAULT_CHECK_RESTARTS))]
    strong += [(f"check:{n}", cls()) for n, cls in specs if cls.minimization]
    for si, (name, attack) in enumerate(strong):
        out = run.attack(attack, idx, None if attack.minimization else eps, key=_key(10_000 + si, None, 0))
        dist = out.distance.numpy()
        _record_violations(run, idx, out.success.numpy(), dist, name, radius,
                           eps=None if attack.minimization else eps.numpy()[idx])
    run.tick(count)
    return len(idx)


# --------------------------------------------------------------------------- report


def _report(model: LoadedModel, data: Dataset, run: _Run, clean: dict[str, np.ndarray],
            specs: list[tuple[str, type[Attack]]], steps: tuple[int, ...], restarts: int,
            plan: CertificatePlan | None, notes: tuple[str, ...], flags: list[Flag], partial: bool,
            checked: int, seconds: float) -> AttackReport:
    """The report over the completed chunks (all points unless interrupted)."""
    n = run.completed
    correct, certified = run.correct[:n], {e: run.certified(e)[:n] for e in run.eps}
    robust = (correct[None, :] & ~run.broken[:, :n]).T  # points × eps
    worst = tuple(WorstCase(e, float(robust[:, i].mean()) if n else 0.0, int(robust[:, i].sum()))
                  for i, e in enumerate(run.eps))
    results = tuple(run.results) if n else ()
    scaling = _iteration_scaling(list(results), specs, steps)
    flags = flags + _still_falling(scaling, n)
    c = {k: v[:n] for k, v in clean.items()}
    examples = AttackExamples(np.arange(n), c["label"], c["prediction"], c["gap"], c["margin"], c["radius"],
                              run.min_dist[:n], run.min_attack[:n], robust)
    return AttackReport(
        lipcert_version=__version__, model=model.info, data={"source": data.source, "split": data.split, "n": n},
        norm=run.norm, eps=run.eps, attacks=tuple(k for k, _ in specs), steps=steps, restarts=restarts,
        clean_accuracy=float(correct.mean()) if n else 0.0, results=results, worst_case=worst,
        certified_skipped={e: int(v.sum()) for e, v in certified.items()},
        violations=tuple(run.violations), iteration_scaling=scaling, flags=tuple(flags), partial=partial,
        seed=run.seed, seconds=seconds, plan=plan, notes=notes, certificates_checked=checked, examples=examples)


def _iteration_scaling(results: list[AttackResult], specs: list[tuple[str, type[Attack]]],
                       steps: tuple[int, ...]) -> tuple[AttackResult, ...]:
    if len(steps) < 2:
        return ()
    scaled = {k for k, cls in specs if cls.scales_with_steps}
    return tuple(r for r in results if r.attack in scaled)


def _still_falling(scaling: tuple[AttackResult, ...], n: int) -> list[Flag]:
    by_key: dict[tuple[str, float], list[AttackResult]] = {}
    for r in scaling:
        by_key.setdefault((r.attack, r.eps), []).append(r)
    flags = []
    for (name, e), rows in by_key.items():
        rows.sort(key=lambda r: r.steps or 0)
        if len(rows) < 2:
            continue
        prev, last = rows[-2], rows[-1]
        drop = prev.robust_accuracy - last.robust_accuracy
        if drop >= max(STILL_FALLING_DROP, 1.0 / max(n, 1)) - 1e-12:
            flags.append(Flag("robust-accuracy-still-falling",
                              f"{name} at ε={e:g}: {100 * prev.robust_accuracy:.2f}% at {prev.steps} steps → "
                              f"{100 * last.robust_accuracy:.2f}% at {last.steps} steps"))
    return flags


def _raise_violation(report: AttackReport) -> None:
    v = report.violations
    more = f" (and {len(v) - 1} more)" if len(v) > 1 else ""
    err = CertificateViolation(f"certificate violated at {v[0].describe()}{more}: a bug or a false Lipschitz claim")
    err.report = report  # type: ignore[attr-defined]
    raise err
