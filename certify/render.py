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


# --------------------------------------------------------------------------- attack (issue 5)


def attack_json(report: Any, argv: Sequence[str] | None = None, *, per_example: bool = True) -> dict[str, Any]:
    """The documented JSON schema of ``lipcert attack`` (see README and the shared brief)."""
    plan = report.plan
    out: dict[str, Any] = {
        "lipcert_version": report.lipcert_version,
        "schema_version": JSON_SCHEMA_VERSION,
        "command": "attack",
        "argv": list(argv) if argv is not None else None,
        "created": timestamp(),
        "model": dict(report.model),
        "data": dict(report.data),
        "norm": report.norm,
        "eps": list(report.eps),
        "attacks": list(report.attacks),
        "steps": list(report.steps),
        "restarts": report.restarts,
        "certificate": None if plan is None else plan.certificate,
        "lipschitz_basis": None if plan is None else plan.basis,
        "clean_accuracy": report.clean_accuracy,
        "results": [_attack_row(r) for r in report.results],
        "worst_case": [{"eps": w.eps, "robust_accuracy": w.robust_accuracy} for w in report.worst_case],
        "certified_skipped": {f"{e:g}": c for e, c in report.certified_skipped.items()},
        "certificates_checked": report.certificates_checked,
        "violations": [jsonable(v) for v in report.violations],
        "iteration_scaling": [{k: v for k, v in _attack_row(r).items() if k != "seconds"}
                              for r in report.iteration_scaling],
        "flags": flags_json(report.flags),
        "notes": list(report.notes),
        "partial": report.partial,
        "seed": report.seed,
        "seconds": report.seconds,
    }
    if per_example:
        ex = report.examples
        out["per_example"] = {name: jsonable(getattr(ex, name)) for name in ATTACK_EXAMPLE_COLUMNS}
    return jsonable(out)


ATTACK_EXAMPLE_COLUMNS = ("index", "label", "prediction", "gap", "margin", "radius", "min_adv_distance",
                          "min_adv_attack")


def _attack_row(r: Any) -> dict[str, Any]:
    return {"attack": r.attack, "eps": r.eps, "steps": r.steps, "restarts": r.restarts,
            "robust_accuracy": r.robust_accuracy, "attacked": r.attacked, "successes": r.successes,
            "seconds": r.seconds}


def attack_table(report: Any) -> Table:
    """One row per attack × ε × budget, then the worst case per ε."""
    unit = "ℓ₂" if report.norm == "l2" else "ℓ∞"
    cert = "no certificate" if report.plan is None else f"certify-first: {report.plan.certificate}"
    title = (f"Attacks · {unit} · clean accuracy {pct(report.clean_accuracy)} · n={report.n} · {cert}"
             + (" · PARTIAL" if report.partial else ""))
    t = Table(title=title, title_justify="left")
    for col, just in (("attack", "left"), ("ε", "right"), ("steps", "right"), ("restarts", "right"),
                      ("attacked", "right"), ("robust acc.", "right"), ("seconds", "right")):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for r in report.results:
        t.add_row(r.attack, f"{r.eps:g}", _dash(r.steps), _dash(r.restarts), str(r.attacked),
                  pct(r.robust_accuracy), f"{r.seconds:.2f}")
    for w in report.worst_case:
        skipped = report.certified_skipped.get(w.eps, 0)
        t.add_row("[bold]worst case[/]", f"{w.eps:g}", "", "", f"{skipped} cert.",
                  f"[bold]{pct(w.robust_accuracy)}[/]", "")
    return t


def iteration_scaling_table(report: Any) -> Table | None:
    """[L2NNN] Tables 1/2: robust accuracy against attack budget, per attack and ε."""
    if not report.iteration_scaling:
        return None
    steps = sorted({r.steps for r in report.iteration_scaling})
    t = Table(title="Iteration scaling: robust accuracy vs. attack steps", title_justify="left")
    t.add_column("attack")
    t.add_column("ε", justify="right")
    for s in steps:
        t.add_column(f"{s}×{report.restarts}" if report.restarts > 1 else str(s), justify="right")
    cells: dict[tuple[str, float], dict[int, str]] = {}
    for r in report.iteration_scaling:
        cells.setdefault((r.attack, r.eps), {})[r.steps] = pct(r.robust_accuracy)
    for (name, e), row in cells.items():
        t.add_row(name, f"{e:g}", *(row.get(s, "") for s in steps))
    return t


def attack_examples_csv(report: Any) -> str:
    ex = report.examples
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(ATTACK_EXAMPLE_COLUMNS)
    for row in zip(*(getattr(ex, c) for c in ATTACK_EXAMPLE_COLUMNS)):
        w.writerow([_cell(v) for v in row])
    return buf.getvalue()


def _dash(v: Any) -> str:
    return "–" if v is None else str(v)
