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

from ..defaults import DEFAULT_MAX_DROP, DEFAULT_NOISE_TOLERANCE
from ..errors import BadInputError, short_repr
from ..threat import parse_fraction
from .schema import GATE_KEYS, SUITE_KEYS, load_yaml_nodes, validate


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
    #: bound on each logit separately (a multi-L2NNN has 1-Lipschitz logits, but not a 1-Lipschitz vector)
    max_per_logit_lipschitz: float | None = None
    max_certificate_violations: int | None = 0
    forbid_flags: tuple[str, ...] = ()
    baseline_path: str | None = None
    max_drop: float = DEFAULT_MAX_DROP
    noise_tolerance: float = DEFAULT_NOISE_TOLERANCE


# --------------------------------------------------------------------------- config


def gate_config(raw: Mapping[str, Any], where: str = "gates") -> GateConfig:
    """A validated ``gates:`` mapping (see :data:`certify.suites.schema.GATE_KEYS`) → :class:`GateConfig`."""
    base = raw.get("baseline") or {}
    flags = raw.get("forbid_flags") or ()
    cfg = GateConfig(
        min_clean_accuracy=_opt_float(raw.get("min_clean_accuracy")),
        min_certified_accuracy=tuple((parse_fraction(k), float(v))
                                     for k, v in (raw.get("min_certified_accuracy") or {}).items()),
        min_robust_accuracy=tuple((parse_fraction(k), float(v)) for k, v in (raw.get("min_robust_accuracy") or {}).items()),
        max_lipschitz_bound=_opt_float(raw.get("max_lipschitz_bound")),
        max_per_logit_lipschitz=_opt_float(raw.get("max_per_logit_lipschitz")),
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


def _number(value: Any, what: str, lo: float = -math.inf, hi: float = math.inf) -> float:
    """A number read from a results JSON: type- and range-checked, else exit 2 naming the key."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not lo <= value <= hi:
        rng = "from 0 to 1" if (lo, hi) == (0.0, 1.0) else ("> 0" if lo > 0 else "finite")
        raise BadInputError(f"results: {what} must be a number {rng}, got {short_repr(value, 40)}; "
                            "the file is not a lipcert results JSON or was edited")
    return float(value)


def _accuracy(value: Any, what: str) -> float:
    return _number(value, what, 0.0, 1.0)


def _rows(section: Mapping[str, Any], key: str, what: str) -> list[Mapping[str, Any]]:
    rows = section.get(key) or []
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise BadInputError(f"results: {what}.{key} must be a list of objects, got {short_repr(rows, 40)}")
    return rows


def _section(res: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    sec = res.get(name) or {}
    if not isinstance(sec, dict):
        raise BadInputError(f"results: '{name}' must be an object, got {short_repr(sec, 40)}")
    return sec


def clean_accuracy(res: Mapping[str, Any]) -> float | None:
    for section in ("analysis", "certify", "attack"):
        sec = _section(res, section)
        if sec.get("clean_accuracy") is not None:
            return _accuracy(sec["clean_accuracy"], f"{section}.clean_accuracy")
    return None


def certified_accuracy(res: Mapping[str, Any], eps: float) -> float | None:
    for row in _rows(_section(res, "certify"), "results", "certify"):
        if _same(row.get("eps"), eps):
            return _accuracy(row.get("certified_accuracy"), "certify.results[].certified_accuracy")
    a = _section(res, "analysis")
    if a.get("median_certified_radius") is not None:
        for row in _rows(a, "at_eps", "analysis"):
            if _same(row.get("eps"), eps):
                return _accuracy(row.get("certified_accuracy"), "analysis.at_eps[].certified_accuracy")
    return None


def robust_accuracy(res: Mapping[str, Any], eps: float) -> float | None:
    """Worst case over attacks at ε (from the attack JSON, else the analysis)."""
    attack = _section(res, "attack")
    for row in _rows(attack, "worst_case", "attack"):
        if _same(row.get("eps"), eps) and row.get("robust_accuracy") is not None:
            return _accuracy(row["robust_accuracy"], "attack.worst_case[].robust_accuracy")
    per_attack = [_accuracy(r["robust_accuracy"], "attack.results[].robust_accuracy")
                  for r in _rows(attack, "results", "attack")
                  if _same(r.get("eps"), eps) and r.get("robust_accuracy") is not None]
    if per_attack:
        return min(per_attack)
    for row in _rows(_section(res, "analysis"), "at_eps", "analysis"):
        if _same(row.get("eps"), eps) and row.get("robust_accuracy") is not None:
            return _accuracy(row["robust_accuracy"], "analysis.at_eps[].robust_accuracy")
    return None


def lipschitz_bound(res: Mapping[str, Any]) -> float | None:
    """The verified bound of the whole logit vector (analyser, else a verified certificate constant)."""
    lip = _section(res, "lipschitz")
    if lip.get("global_bound") is not None:
        return _number(lip["global_bound"], "lipschitz.global_bound", 0.0)
    cert = _section(res, "certify")
    if cert.get("lipschitz_verified") is True:
        return _number(cert.get("lipschitz_constant"), "certify.lipschitz_constant", 0.0)
    return None


def per_logit_lipschitz(res: Mapping[str, Any]) -> float | None:
    """The largest verified bound of a single logit (from the Lipschitz analyser)."""
    lip = _section(res, "lipschitz")
    bounds = lip.get("per_logit_bounds")
    if bounds is None:
        return None
    if not isinstance(bounds, list) or not bounds:
        raise BadInputError(f"results: lipschitz.per_logit_bounds must be a list of numbers, "
                            f"got {short_repr(bounds, 40)}")
    return max(_number(b, "lipschitz.per_logit_bounds[]", 0.0) for b in bounds)


def violations(res: Mapping[str, Any]) -> int | None:
    """Attacks inside a certified radius (attack JSON, or radius > d in the analysis); None: no attack."""
    attack = res.get("attack")
    tight = _section(res, "analysis").get("tightness") or {}
    if attack is None and not tight:
        return None
    if not isinstance(tight, dict):
        raise BadInputError(f"results: analysis.tightness must be an object, got {short_repr(tight, 40)}")
    listed = _section(res, "attack").get("violations") or []
    if not isinstance(listed, list):
        raise BadInputError(f"results: attack.violations must be a list, got {short_repr(listed, 40)}")
    counted = _number(tight.get("violations") or 0, "analysis.tightness.violations", 0.0)
    return max(len(listed), int(counted))


def flag_ids(res: Mapping[str, Any]) -> list[str]:
    ids = []
    for s in ("certify", "attack", "lipschitz"):
        flags = _section(res, s).get("flags") or []
        if not isinstance(flags, list) or not all(isinstance(f, dict) and isinstance(f.get("id"), str)
                                                  for f in flags):
            raise BadInputError(f"results: {s}.flags must be a list of {{id, message}}, got {short_repr(flags, 40)}")
        ids += [f["id"] for f in flags]
    return ids


def _same(a: Any, b: float) -> bool:
    return math.isclose(_number(a, "eps", 0.0), float(b), rel_tol=1e-9, abs_tol=1e-12)


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
    if config.max_per_logit_lipschitz is not None:
        rows.append(_max("per-logit Lipschitz bound", per_logit_lipschitz(res), config.max_per_logit_lipschitz))
    if config.max_certificate_violations is not None:
        rows.append(_violations(res, config.max_certificate_violations))
    if config.forbid_flags:
        rows.append(_flags(res, config.forbid_flags))
    if baseline is None and config.baseline_path:
        from ..results import load_results

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
    rows = _rows(_section(res, section), "results", section)
    return sorted({_number(r.get("eps"), f"{section}.results[].eps", 0.0) for r in rows})
