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


# --------------------------------------------------------------------------- demo (issue 3)


def demo_table(report: Any) -> Table:
    """One comparison table of the shipped models (a :class:`certify.demo.DemoReport`): a column per model."""
    t = Table(title=f"lipcert demo · {report.data_source} · n = {report.n}\n"
                    f"certified: from each model's declared Lipschitz property; PGD: {report.attack_steps} steps",
              title_justify="left")
    t.add_column("metric", no_wrap=True)
    for r in report.rows:
        t.add_column(r.label, justify="right")
    rows = report.rows
    t.add_row("certificate", *[r.certificate or "none" for r in rows])
    t.add_row("clean accuracy", *[pct(r.clean_accuracy) for r in rows])
    t.add_row("mean gap", *[f"{r.mean_gap:.3f}" for r in rows])
    for k in (list(rows[0].certified) if rows else []):
        t.add_row(f"certified {_eps_label(k)}", *["—" if r.certified[k] is None else pct(r.certified[k]) for r in rows])
    for k in (list(rows[0].robust) if rows else []):
        t.add_row(f"PGD {_eps_label(k)}", *[pct(r.robust[k]) for r in rows])
    return t


def _eps_label(k: str) -> str:
    norm, _, eps = k.partition("@")
    return f"{'ℓ₂' if norm == 'l2' else 'ℓ∞'} {eps}"


def demo_json(report: Any, argv: Sequence[str] | None = None) -> dict[str, Any]:
    return jsonable({"lipcert_version": _version(), "schema_version": JSON_SCHEMA_VERSION, "command": "demo",
                     "created": timestamp(), "argv": list(argv) if argv is not None else None,
                     **{f.name: getattr(report, f.name) for f in dataclasses.fields(report)}})


def _version() -> str:
    from . import __version__

    return __version__
