"""What an attack run reports: rows per attack, ε and budget, the worst case, violations and
per-example records (:class:`AttackReport`), and how rows of consecutive chunks add up."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

import numpy as np

from certify._version import __version__
from certify.certificates import CertificatePlan
from certify.checkpoints import LoadedModel
from certify.data import Dataset
from certify.defaults import STILL_FALLING_DROP
from certify.errors import BadInputError, CertificateViolation
from certify.flags import Flag
from certify.threat import Norm

from .base import Attack


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
    #: which method gave each radius (:data:`certify.certificates.auto_plan.RADIUS_METHODS` codes, −1: none)
    radius_method: np.ndarray | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return int(self.index.shape[0])

    def status(self, i: int, eps: float) -> np.ndarray:
        """Per point at the ``i``-th ε: ``certified`` (correct, radius > ε), ``broken`` (an adversarial example
        was found, a clean error included) or ``open`` (neither)."""
        certified = (self.label == self.prediction) & (self.radius > eps)  # NaN radius → False
        broken = ~self.robust[:, i]
        if (certified & broken).any():  # attacks skip certified points, and a success inside a radius is a violation
            raise CertificateViolation(f"internal: a point is both certified and broken at ε={eps:g}")
        return np.where(certified, "certified", np.where(broken, "broken", "open")).astype(object)


@dataclass(frozen=True)
class StatusCount:
    """How many points are certified, broken or open at one ε (shares of ``n``, summing to 1)."""

    eps: float
    certified: int
    broken: int
    open: int
    n: int

    def shares(self) -> dict[str, float]:
        n = self.n or 1
        return {"certified_share": self.certified / n, "broken_share": self.broken / n, "open_share": self.open / n}


def status_counts(report: Any) -> tuple[StatusCount, ...]:
    """:class:`StatusCount` per ε of an :class:`AttackReport`."""
    out = []
    for i, e in enumerate(report.eps):
        st = report.examples.status(i, e)
        out.append(StatusCount(e, int((st == "certified").sum()), int((st == "broken").sum()),
                               int((st == "open").sum()), len(st)))
    return tuple(out)


@dataclass(frozen=True)
class AttackReport:
    lipcert_version: str
    model: dict[str, str]
    data: dict[str, object]
    norm: Norm
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


def merge_rows(before: Sequence[AttackResult], new: Sequence[AttackResult], n: int) -> list[AttackResult]:
    """Rows of two consecutive slices of the data added up (``n``: points in both together)."""
    if not before:
        return [replace(r, robust_accuracy=r.robust_count / n if n else 0.0) for r in new]
    if [_row_key(r) for r in before] != [_row_key(r) for r in new]:
        raise BadInputError("resume: the partial results ran other attack rows than this run; rerun from scratch",
                            param="resume")
    return [replace(a, robust_accuracy=(a.robust_count + b.robust_count) / n, attacked=a.attacked + b.attacked,
                    successes=a.successes + b.successes, seconds=a.seconds + b.seconds,
                    robust_count=a.robust_count + b.robust_count) for a, b in zip(before, new)]


def _row_key(r: AttackResult) -> tuple:
    return r.attack, r.eps, r.steps, r.restarts


def build_report(model: LoadedModel, data: Dataset, run: Any, clean: Any,
                 specs: list[tuple[str, type[Attack]]], steps: tuple[int, ...], restarts: int,
                 plan: CertificatePlan | None, notes: tuple[str, ...], flags: list[Flag], partial: bool,
                 checked: int, seconds: float) -> AttackReport:
    """The report over the completed chunks (all points unless interrupted); ``run`` is the
    :class:`attacks.runner.Run`, ``clean`` the :class:`certify.certificates.Examples` of the clean pass."""
    n = run.completed
    correct, certified = run.correct[:n], {e: run.certified(e)[:n] for e in run.eps}
    robust = (correct[None, :] & ~run.broken[:, :n]).T  # points × eps
    worst = tuple(WorstCase(e, float(robust[:, i].mean()) if n else 0.0, int(robust[:, i].sum()))
                  for i, e in enumerate(run.eps))
    results = tuple(run.results) if n else ()
    scaling = _iteration_scaling(list(results), specs, steps)
    flags = flags + _still_falling(scaling, n)
    c = {k: getattr(clean, k)[:n] for k in ("label", "prediction", "gap", "margin", "radius")}
    examples = AttackExamples(np.arange(n), c["label"], c["prediction"], c["gap"], c["margin"], c["radius"],
                              run.min_dist[:n], run.min_attack[:n], robust, clean.radius_method[:n])
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


def raise_violation(report: AttackReport) -> None:
    v = report.violations
    more = f" (and {len(v) - 1} more)" if len(v) > 1 else ""
    err = CertificateViolation(f"certificate violated at {v[0].describe()}{more}: a bug or a false Lipschitz claim")
    err.report = report  # type: ignore[attr-defined]
    raise err
