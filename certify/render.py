"""The one rendering module: results → rich tables, JSON and CSV.

Library functions return frozen dataclasses; nothing else formats them.
(PDF and Markdown reports live in :mod:`certify.report` and read the JSON
produced here, so every number in a report equals the JSON.)
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from datetime import datetime, timezone
from typing import Any, Sequence

import numpy as np
from rich.table import Table

from .certificates import CertifyReport, Examples
from .flags import Flag

JSON_SCHEMA_VERSION = 1


def jsonable(obj: Any) -> Any:
    """Dataclasses, numpy and torch values → plain JSON types (NaN/Inf → None)."""
    import torch

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                if f.compare or f.repr}
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return jsonable(obj.detach().cpu().numpy())
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def dumps(data: Any) -> str:
    return json.dumps(jsonable(data), indent=2, sort_keys=False, ensure_ascii=False) + "\n"


def timestamp() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def flags_json(flags: Sequence[Flag]) -> list[dict[str, str]]:
    return [{"id": f.id, "message": f.message} for f in flags]


def examples_json(ex: Examples) -> dict[str, list[Any]]:
    return {f.name: jsonable(getattr(ex, f.name)) for f in dataclasses.fields(ex)}


# --------------------------------------------------------------------------- certify


def certify_json(report: CertifyReport, argv: Sequence[str] | None = None, *, per_example: bool = True) -> dict[str, Any]:
    """The documented JSON schema of ``lipcert certify`` (see README)."""
    plan = report.plan
    out: dict[str, Any] = {
        "lipcert_version": report.lipcert_version,
        "schema_version": JSON_SCHEMA_VERSION,
        "command": "certify",
        "argv": list(argv) if argv is not None else None,
        "created": timestamp(),
        "model": dict(report.model),
        "data": dict(report.data),
        "norm": report.norm,
        "certificate": plan.certificate,
        "certificate_norm": plan.certificate_norm,
        "lipschitz_constant": plan.lipschitz_constant,
        "lipschitz_verified": plan.lipschitz_verified,
        "lipschitz_basis": plan.basis,
        "lipschitz_reason": plan.reason,
        "clean_accuracy": report.clean_accuracy,
        "mean_gap": report.mean_gap,
        "median_radius": report.median_radius,
        "results": [jsonable(r) for r in report.results],
        "flags": flags_json(report.flags),
        "partial": report.partial,
        "seed": report.seed,
        "seconds": report.seconds,
    }
    if per_example:
        out["per_example"] = examples_json(report.examples)
    return jsonable(out)


def certify_table(report: CertifyReport) -> Table:
    plan = report.plan
    unit = "ℓ₂" if report.norm == "l2" else "ℓ∞"
    verified = "verified" if plan.lipschitz_verified else f"NOT verified ({plan.basis})"
    title = (f"Certified robustness · {plan.certificate} · {unit} · L = {plan.lipschitz_constant:.6g} "
             f"[{verified}]")
    t = Table(title=title, title_justify="left")
    t.add_column("metric")
    t.add_column("value", justify="right")
    t.add_row("examples", f"{report.n}" + (" (partial)" if report.partial else ""))
    t.add_row("clean accuracy", pct(report.clean_accuracy))
    t.add_row("mean gap", f"{report.mean_gap:.4f}")
    t.add_row(f"median radius ({unit})", f"{report.median_radius:.4f}")
    for r in report.results:
        t.add_row(f"certified @ ε={r.eps:g}", f"{pct(r.certified_accuracy)}  ({r.certified_count}/{report.n})")
    return t


def pct(x: float) -> str:
    return f"{100.0 * x:.2f}%"


def flags_table(flags: Sequence[Flag]) -> Table | None:
    if not flags:
        return None
    t = Table(title="Sanity flags (see docs/flags.md)", title_justify="left")
    t.add_column("flag", style="yellow")
    t.add_column("detail")
    for f in flags:
        t.add_row(f.id, f.message)
    return t


def examples_csv(ex: Examples, extra: dict[str, Sequence[Any]] | None = None) -> str:
    """CSV with ``index,label,prediction,gap,margin,radius`` (+ extra columns)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    cols = [f.name for f in dataclasses.fields(ex)]
    extra = extra or {}
    w.writerow(cols + list(extra))
    arrays = [getattr(ex, c) for c in cols] + [list(v) for v in extra.values()]
    for row in zip(*arrays):
        w.writerow([_cell(v) for v in row])
    return buf.getvalue()


def _cell(v: Any) -> Any:
    if isinstance(v, (float, np.floating)):
        return repr(float(v))
    if isinstance(v, np.integer):
        return int(v)
    return v


# --------------------------------------------------------------------------- lipschitz (issue 4)


def lipschitz_json(report: Any, empirical: Any = None, argv: Sequence[str] | None = None,
                   model: dict[str, str] | None = None) -> dict[str, Any]:
    """``lipcert lipschitz`` JSON: bounds per layer, global, per-logit, pairwise, empirical estimates."""
    emp: dict[str, Any] | None = None
    if empirical is not None:
        emp = {"n": empirical.n, "jacobian_spectral_mean": empirical.jacobian_spectral_mean,
               "seconds": empirical.seconds}
        for key in ("jacobian_spectral_max", "grad_loss_l2_max", "grad_loss_l1_max", "jacobian_2_inf_max",
                    "jacobian_1_inf_max", "local_search_max"):
            peak = getattr(empirical, key)
            emp[key] = peak.value
            emp[key + "_index"] = peak.index
    out = {
        "lipcert_version": _version(), "schema_version": JSON_SCHEMA_VERSION, "command": "lipschitz",
        "argv": list(argv) if argv is not None else None, "created": timestamp(), "model": model,
        "norm": report.norm, "verified": report.verified, "unverifiable_ops": list(report.unverifiable_ops),
        "graph_source": report.source, "global_bound": report.global_bound,
        "per_logit_bounds": list(report.per_logit_bounds), "pair_bounds": [list(r) for r in report.pair_bounds],
        "layers": [{"name": lb.name, "op": lb.op, "bound": lb.bound, "estimate": lb.estimate}
                   for lb in report.layers],
        "empirical": emp,
    }
    return jsonable(out)


def _version() -> str:
    from . import __version__

    return __version__


def _num(v: float | None) -> str:
    return "—" if v is None else f"{v:.6g}"


def lipschitz_table(report: Any) -> Table:
    unit = "ℓ₂→ℓ₂" if report.norm == "l2" else "ℓ∞→ℓ∞"
    status = "verified" if report.verified else "UNVERIFIABLE: " + ", ".join(report.unverifiable_ops)
    t = Table(title=f"Lipschitz bounds · {unit} · global {_num(report.global_bound)} [{status}]",
              title_justify="left")
    for col, just in (("node", "left"), ("op", "left"), ("guaranteed", "right"), ("power iter.", "right"),
                      ("ratio", "right")):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for lb in report.layers:
        ratio = f"{lb.bound / lb.estimate:.4f}" if lb.estimate else "—"
        t.add_row(lb.name, lb.op, _num(lb.bound), _num(lb.estimate), ratio)
    if report.per_logit_bounds:
        t.add_section()
        t.add_row("per-logit", "", ", ".join(f"{b:.4g}" for b in report.per_logit_bounds), "", "")
    return t


def empirical_table(empirical: Any) -> Table:
    t = Table(title=f"Empirical lower bounds on {empirical.n} points", title_justify="left")
    t.add_column("estimate")
    t.add_column("value", justify="right")
    t.add_column("index", justify="right")
    t.add_row("‖J‖₂ mean", f"{empirical.jacobian_spectral_mean:.6g}", "")
    for label, key in (("‖J‖₂ max", "jacobian_spectral_max"), ("‖∇ℓ‖₂ max", "grad_loss_l2_max"),
                       ("‖∇ℓ‖₁ max", "grad_loss_l1_max"), ("max_k ‖∇y_k‖₂", "jacobian_2_inf_max"),
                       ("max_k ‖∇y_k‖₁", "jacobian_1_inf_max"), ("‖J‖₂ local search", "local_search_max")):
        peak = getattr(empirical, key)
        t.add_row(label, f"{peak.value:.6g}", str(peak.index))
    return t


def data_lipschitz_json(result: Any, data: dict[str, Any], argv: Sequence[str] | None = None) -> dict[str, Any]:
    out = {"lipcert_version": _version(), "schema_version": JSON_SCHEMA_VERSION, "command": "data-lipschitz",
           "argv": list(argv) if argv is not None else None, "created": timestamp(), "data": data,
           "lip_2_inf": result.lip_2_inf, "min_distance": result.min_distance,
           "closest_pair": [result.index_a, result.index_b], "candidates_rechecked": result.candidates_rechecked,
           "seconds": result.seconds}
    return jsonable(out)


def data_lipschitz_table(result: Any, source: str) -> Table:
    t = Table(title=f"Lipschitz constant of the data · {source}", title_justify="left")
    t.add_column("metric")
    t.add_column("value", justify="right")
    t.add_row("examples", str(result.n))
    t.add_row("Lip₂,∞(D)", f"{result.lip_2_inf:.6g}")
    t.add_row("min distance (ℓ₂)", f"{result.min_distance:.6g}")
    t.add_row("closest pair", f"{result.index_a}, {result.index_b}")
    t.add_row("seconds", f"{result.seconds:.1f}")
    return t
