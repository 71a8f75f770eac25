"""Resuming an attack run from the JSON of an interrupted one (docs/security.md covers what a partial file may hold).

An interrupted run keeps only its completed chunks of points (see
:data:`certify.defaults.ATTACK_CHUNK`); :func:`resume_state` reads them back from
the partial JSON, and :func:`take_resume` checks them against this run's settings and data before
:func:`attacks.evaluate` skips them and merges.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from certify.defaults import ATTACK_CHUNK
from certify.errors import BadInputError, short_repr

from .report import AttackResult, Violation
from .runner import Run


@dataclass(frozen=True)
class AttackResume:
    """The completed prefix of an interrupted attack run."""

    settings: dict[str, Any]  #: what must match the resumed run (model sha256, data, norm, eps, …)
    n: int
    label: np.ndarray
    min_adv_distance: np.ndarray  #: inf where none was found
    min_adv_attack: np.ndarray
    robust: np.ndarray  #: bool, points × eps
    results: tuple[AttackResult, ...]
    violations: tuple[Violation, ...]
    seconds: float


def resume_state(results: dict[str, Any]) -> AttackResume:
    """The completed chunks of a partial ``lipcert attack`` JSON (settings are checked by ``evaluate``)."""
    if results.get("command") != "attack":
        raise BadInputError("resume expects the JSON of a partial 'lipcert attack' run", param="resume")
    pe = results.get("per_example")
    if not isinstance(pe, dict) or "robust" not in pe:
        raise BadInputError("resume: the JSON has no per_example records with 'robust' to resume from "
                            "(write it as JSON from an interrupted run)", param="resume")
    if not isinstance(results.get("settings"), dict):
        raise BadInputError("resume: the JSON has no 'settings' block (written by an older lipcert?); rerun",
                            param="resume")
    try:
        n = int(results["data"]["n"])
        if not 0 <= n <= 10**9:
            raise ValueError(f"data.n {n} out of range")
        if pe.get("index") != list(range(n)):
            raise ValueError("per_example 'index' must be 0, 1, 2, … n-1 in order")
        eps = [float(e) for e in results["eps"]]
        robust = np.asarray(pe["robust"], dtype=bool).reshape(n, len(eps))
        dist = np.array([math.inf if d is None else float(d) for d in pe["min_adv_distance"]], dtype=np.float64)
        state = AttackResume(
            settings=_settings(results), n=n, label=np.asarray(pe["label"], dtype=np.int64), min_adv_distance=dist,
            min_adv_attack=np.asarray(pe["min_adv_attack"], dtype=object), robust=robust,
            results=tuple(_row(r, n) for r in results["results"]) if n else (),
            violations=tuple(Violation(**v) for v in results.get("violations") or ()),
            seconds=float(results.get("seconds") or 0.0))
    except (KeyError, TypeError, ValueError, OverflowError, AttributeError) as err:
        raise BadInputError(f"resume: the partial results are incomplete or malformed "
                            f"({type(err).__name__}: {short_repr(str(err), 100)[1:-1]})", param="resume") from err
    if not (len(state.label) == len(dist) == len(state.min_adv_attack) == n):
        raise BadInputError(f"resume: per_example records do not all have the {n} examples of data.n",
                            param="resume")
    return state


def _settings(results: dict[str, Any]) -> dict[str, Any]:
    return dict(results["settings"])


def _row(r: dict[str, Any], n: int) -> AttackResult:
    """A result row with its robust count (robust_accuracy × n is exact: the accuracy is count / n)."""
    return AttackResult(r["attack"], float(r["eps"]), r["steps"], r["restarts"], float(r["robust_accuracy"]),
                        int(r["attacked"]), int(r["successes"]), float(r["seconds"]),
                        int(round(float(r["robust_accuracy"]) * n)))


def take_resume(run: Run, resume: AttackResume, settings: Mapping[str, Any]) -> None:
    """Check that a partial run had this run's settings and sane rows, then load its completed chunks."""
    for what, new in settings.items():
        old = resume.settings.get(what)
        if old != new:
            label = what.replace("_", " ")
            raise BadInputError(f"resume: the partial results have {label} {short_repr(old, 70)}, this run has "
                                f"{short_repr(new, 70)}; resume with the same settings or rerun from scratch",
                            param="resume")
    k = resume.n
    if k > len(run.correct) or (k % ATTACK_CHUNK and k != len(run.correct)):
        raise BadInputError(f"resume: the partial results hold {k} examples, which is not a run of "
                            f"{len(run.correct)} examples in chunks of {ATTACK_CHUNK}",
                            param="resume")
    if resume.robust.shape != (k, len(run.eps)) or not np.array_equal(resume.label, run.y[:k].numpy()):
        raise BadInputError("resume: the partial results' labels or robust records do not match this data",
                            param="resume")
    _check_resumed_rows(run, resume, settings)
    run.broken[:, :k] = run.correct[None, :k] & ~resume.robust.T
    run.min_dist[:k] = resume.min_adv_distance
    run.min_attack[:k] = resume.min_adv_attack
    run.results = list(resume.results)
    run.violations = list(resume.violations)
    run.completed = k


def _check_resumed_rows(run: Run, resume: AttackResume, settings: Mapping[str, Any]) -> None:
    """Rows must be possible: robust only where this model is correct, no adversarial inside a robust ε,
    distances ≥ 0, attack names from this run, counts within the points."""
    k = resume.n
    correct = run.correct[:k]
    eps = np.asarray(run.eps)
    dist = resume.min_adv_distance
    if np.isnan(dist).any() or (dist < 0).any():
        raise BadInputError("resume: min_adv_distance holds a negative or NaN distance; the file was edited",
                            param="resume")
    if (resume.robust & ~correct[:, None]).any():
        i = int(np.flatnonzero((resume.robust & ~correct[:, None]).any(axis=1))[0])
        raise BadInputError(f"resume: row {i} is marked robust but this model misclassifies it; "
                            "the partial is from another run or was edited",
                            param="resume")
    if (resume.robust & (dist[:, None] <= eps[None, :])).any():
        raise BadInputError("resume: a row is marked robust at an ε above its adversarial distance; "
                            "the file was edited",
                            param="resume")
    names = set(settings["attacks"]) | {"", "clean"}
    if any(a not in names for a in resume.min_adv_attack):
        raise BadInputError("resume: min_adv_attack names an attack this run does not run; the file was edited",
                            param="resume")
    for r in resume.results:
        if (r.attack not in settings["attacks"] or r.eps not in run.eps
                or not 0 <= r.successes <= r.attacked <= k or not 0 <= r.robust_count <= k):
            raise BadInputError(f"resume: result row {short_repr(r.attack, 30)} at eps {r.eps:g} is not one this "
                                "run could have written; the file was edited",
                            param="resume")
