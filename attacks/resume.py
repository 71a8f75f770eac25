"""Resuming ``lipcert attack`` from the JSON of an interrupted run (docs/security.md covers what a partial file may hold).

An interrupted run keeps only its completed chunks of points (see
:data:`certify.defaults.ATTACK_CHUNK`); :func:`resume_state` reads them back from
the partial JSON so that :func:`attacks.evaluate` can skip them and merge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from certify.errors import BadInputError, short_repr

from .evaluate import AttackResult, Violation


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
        raise BadInputError("--resume expects the JSON of a partial 'lipcert attack' run")
    pe = results.get("per_example")
    if not isinstance(pe, dict) or "robust" not in pe:
        raise BadInputError("--resume: the JSON has no per_example records with 'robust' to resume from "
                            "(write it with --json from an interrupted run)")
    if not isinstance(results.get("settings"), dict):
        raise BadInputError("--resume: the JSON has no 'settings' block (written by an older lipcert?); rerun")
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
        raise BadInputError(f"--resume: the partial results are incomplete or malformed "
                            f"({type(err).__name__}: {short_repr(str(err), 100)[1:-1]})") from err
    if not (len(state.label) == len(dist) == len(state.min_adv_attack) == n):
        raise BadInputError(f"--resume: per_example records do not all have the {n} examples of data.n")
    return state


def _settings(results: dict[str, Any]) -> dict[str, Any]:
    return dict(results["settings"])


def _row(r: dict[str, Any], n: int) -> AttackResult:
    """A result row with its robust count (robust_accuracy × n is exact: the accuracy is count / n)."""
    return AttackResult(r["attack"], float(r["eps"]), r["steps"], r["restarts"], float(r["robust_accuracy"]),
                        int(r["attacked"]), int(r["successes"]), float(r["seconds"]),
                        int(round(float(r["robust_accuracy"]) * n)))
