"""CI gates on robustness regressions (``lipcert gate``, the ``gates:`` block of a suite).

Each gate compares one number of a combined results JSON with a threshold
and becomes a :class:`GateResult` row.  A gate whose number is missing from
the results (e.g. robust accuracy when no attack ran) fails: a gate that
cannot be checked must not pass silently.

Baseline comparison: for every accuracy present in both the results and a
previous results JSON (clean, certified at each ε, robust at each ε), the gate
fails when ``value < baseline − max_drop − noise_tolerance``.  ``max_drop`` is
the regression you accept; ``noise_tolerance`` is the explicit allowance for
run-to-run noise (e.g. ~2·√(p(1−p)/n) for a random test subset).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from .defaults import DEFAULT_MAX_DROP, DEFAULT_NOISE_TOLERANCE
from .errors import BadInputError


@dataclass(frozen=True)
class GateResult:
    """One row of the gate table: ``value op threshold`` passed or not."""

    gate: str
    value: float | None
    op: str  #: ">=" or "<="
    threshold: float
    passed: bool
    detail: str = ""


@dataclass(frozen=True)
class GateReport:
    name: str
    rows: tuple[GateResult, ...]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.rows)

    @property
    def failed(self) -> tuple[GateResult, ...]:
        return tuple(r for r in self.rows if not r.passed)


@dataclass(frozen=True)
class GateConfig:
    min_clean_accuracy: float | None = None
    min_certified_accuracy: tuple[tuple[float, float], ...] = ()
    min_robust_accuracy: tuple[tuple[float, float], ...] = ()
    max_lipschitz_bound: float | None = None
    max_certificate_violations: int | None = 0
    forbid_flags: tuple[str, ...] = ()
    baseline_path: str | None = None
    max_drop: float = DEFAULT_MAX_DROP
    noise_tolerance: float = DEFAULT_NOISE_TOLERANCE


# --------------------------------------------------------------------------- config


def gate_config(raw: Mapping[str, Any], where: str = "gates") -> GateConfig:
    """A validated ``gates:`` mapping (see :data:`certify.suite.GATE_KEYS`) → :class:`GateConfig`."""
    from .suite import parse_fraction

    base = raw.get("baseline") or {}
    flags = raw.get("forbid_flags") or ()
    cfg = GateConfig(
        min_clean_accuracy=_opt_float(raw.get("min_clean_accuracy")),
        min_certified_accuracy=tuple((parse_fraction(k), float(v))
                                     for k, v in (raw.get("min_certified_accuracy") or {}).items()),
        min_robust_accuracy=tuple((parse_fraction(k), float(v)) for k, v in (raw.get("min_robust_accuracy") or {}).items()),
        max_lipschitz_bound=_opt_float(raw.get("max_lipschitz_bound")),
        max_certificate_violations=raw.get("max_certificate_violations", 0),
        forbid_flags=(flags,) if isinstance(flags, str) else tuple(flags),
        baseline_path=base.get("path"),
        max_drop=float(base.get("max_drop", DEFAULT_MAX_DROP)),
        noise_tolerance=float(base.get("noise_tolerance", DEFAULT_NOISE_TOLERANCE)),
    )
    if cfg.max_drop < 0 or cfg.noise_tolerance < 0:
        raise BadInputError(f"{where}: baseline max_drop and noise_tolerance must be ≥ 0")
    return cfg


def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)


def load_gate_config(path: str | os.PathLike[str]) -> GateConfig:
    """Gates from a YAML file: either the gate keys at top level, or a suite with a ``gates:`` block."""
    from .suite import GATE_KEYS, SUITE_KEYS, load_yaml_nodes, validate

    node, raw = load_yaml_nodes(path)
    where = str(path)
    if not isinstance(raw, dict) or not raw:
        raise BadInputError(f"{where}: expected a mapping of gates, e.g. 'min_clean_accuracy: 0.8'")
    if "gates" in raw:
        validate(node, raw, SUITE_KEYS, where)
        return gate_config(raw["gates"] or {}, where)
    validate(node, raw, GATE_KEYS, where)
    return gate_config(raw, where)


# --------------------------------------------------------------------------- reading numbers from results


def clean_accuracy(res: Mapping[str, Any]) -> float | None:
    for section in ("analysis", "certify", "attack"):
        if res.get(section) and res[section].get("clean_accuracy") is not None:
            return float(res[section]["clean_accuracy"])
    return None


def certified_accuracy(res: Mapping[str, Any], eps: float) -> float | None:
    for row in (res.get("certify") or {}).get("results") or []:
        if _same(row["eps"], eps):
            return float(row["certified_accuracy"])
    a = res.get("analysis") or {}
    if a.get("median_certified_radius") is not None:
        for row in a.get("at_eps") or []:
            if _same(row["eps"], eps):
                return float(row["certified_accuracy"])
    return None


def robust_accuracy(res: Mapping[str, Any], eps: float) -> float | None:
    """Worst case over attacks at ε (from the attack JSON, else the analysis)."""
    attack = res.get("attack") or {}
    for row in attack.get("worst_case") or []:
        if _same(row["eps"], eps) and row.get("robust_accuracy") is not None:
            return float(row["robust_accuracy"])
    per_attack = [float(r["robust_accuracy"]) for r in attack.get("results") or []
                  if _same(r["eps"], eps) and r.get("robust_accuracy") is not None]
    if per_attack:
        return min(per_attack)
    for row in (res.get("analysis") or {}).get("at_eps") or []:
        if _same(row["eps"], eps) and row.get("robust_accuracy") is not None:
            return float(row["robust_accuracy"])
    return None


def lipschitz_bound(res: Mapping[str, Any]) -> float | None:
    lip = res.get("lipschitz") or {}
    if lip.get("global_bound") is not None:
        return float(lip["global_bound"])
    cert = res.get("certify") or {}
    if cert.get("lipschitz_verified"):
        return float(cert["lipschitz_constant"])
    return None


def violations(res: Mapping[str, Any]) -> int | None:
    """Attacks inside a certified radius (attack JSON, or radius > d in the analysis); None: no attack."""
    attack = res.get("attack")
    tight = (res.get("analysis") or {}).get("tightness") or {}
    if attack is None and not tight:
        return None
    return max(len((attack or {}).get("violations") or []), int(tight.get("violations") or 0))


def flag_ids(res: Mapping[str, Any]) -> list[str]:
    return [f["id"] for s in ("certify", "attack", "lipschitz") for f in (res.get(s) or {}).get("flags") or []]


def _same(a: Any, b: float) -> bool:
    return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)


# --------------------------------------------------------------------------- evaluation


def evaluate_gates(res: Mapping[str, Any], config: GateConfig, *, baseline: Mapping[str, Any] | None = None,
                   name: str | None = None) -> GateReport:
    """Every configured gate on one model's combined results.

    ``baseline`` overrides ``config.baseline_path`` (a combined results dict).
    """
    rows: list[GateResult] = [_complete(res)]
    if config.min_clean_accuracy is not None:
        rows.append(_min("clean accuracy", clean_accuracy(res), config.min_clean_accuracy))
    for eps, thr in config.min_certified_accuracy:
        rows.append(_min(f"certified accuracy @ ε={eps:g}", certified_accuracy(res, eps), thr))
    for eps, thr in config.min_robust_accuracy:
        rows.append(_min(f"robust accuracy @ ε={eps:g}", robust_accuracy(res, eps), thr))
    if config.max_lipschitz_bound is not None:
        rows.append(_max("Lipschitz bound", lipschitz_bound(res), config.max_lipschitz_bound))
    if config.max_certificate_violations is not None:
        rows.append(_violations(res, config.max_certificate_violations))
    if config.forbid_flags:
        rows.append(_flags(res, config.forbid_flags))
    if baseline is None and config.baseline_path:
        from .render import load_results

        baseline = load_results(config.baseline_path)
    if baseline is not None:
        rows += baseline_rows(res, baseline, config)
    return GateReport(name or str(res.get("name") or (res.get("model") or {}).get("path") or "model"), tuple(rows))


def _complete(res: Mapping[str, Any]) -> GateResult:
    """Partial (interrupted) results never pass a gate: they measured only part of the data."""
    parts = [name for name in ("certify", "attack") if (res.get(name) or {}).get("partial")]
    partial = bool(res.get("partial")) or bool(parts)
    detail = "interrupted run: " + (", ".join(parts) or "results") + " marked partial" if partial else ""
    return GateResult("complete results", 0.0 if partial else 1.0, "==", 1.0, not partial, detail)


def _min(gate: str, value: float | None, thr: float, detail: str = "") -> GateResult:
    if value is None:
        return GateResult(gate, None, ">=", thr, False, "not measured in these results")
    return GateResult(gate, value, ">=", thr, value >= thr, detail)


def _max(gate: str, value: float | None, thr: float) -> GateResult:
    if value is None:
        return GateResult(gate, None, "<=", thr, False, "not measured in these results")
    return GateResult(gate, value, "<=", thr, value <= thr)


def _violations(res: Mapping[str, Any], limit: int) -> GateResult:
    count = violations(res)
    if count is None:
        return GateResult("certificate violations", 0.0, "<=", float(limit), True, "no attack ran: nothing to violate")
    return GateResult("certificate violations", float(count), "<=", float(limit), count <= limit)


def _flags(res: Mapping[str, Any], forbid: Sequence[str]) -> GateResult:
    raised = flag_ids(res)
    bad = sorted({f for f in raised if "all" in forbid or f in forbid})
    return GateResult("forbidden flags", float(len(bad)), "<=", 0.0, not bad, ", ".join(bad))


def baseline_rows(res: Mapping[str, Any], base: Mapping[str, Any], config: GateConfig) -> list[GateResult]:
    """No accuracy may fall more than ``max_drop + noise_tolerance`` below the baseline."""
    allow = config.max_drop + config.noise_tolerance
    metrics: list[tuple[str, float | None, float | None]] = [
        ("clean accuracy", clean_accuracy(res), clean_accuracy(base))]
    for eps in _eps_of(base, "certify"):
        metrics.append((f"certified accuracy @ ε={eps:g}", certified_accuracy(res, eps), certified_accuracy(base, eps)))
    for eps in _eps_of(base, "attack"):
        metrics.append((f"robust accuracy @ ε={eps:g}", robust_accuracy(res, eps), robust_accuracy(base, eps)))
    rows = []
    for label, value, ref in metrics:
        if ref is None:
            continue
        detail = f"baseline {ref:.4f} − max drop {config.max_drop:g} − noise {config.noise_tolerance:g}"
        rows.append(_min(f"vs baseline: {label}", value, ref - allow, detail))
    return rows


def _eps_of(res: Mapping[str, Any], section: str) -> list[float]:
    rows = (res.get(section) or {}).get("results") or []
    return sorted({float(r["eps"]) for r in rows})
