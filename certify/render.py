"""The one rendering module: results → rich tables, JSON and CSV.

Library functions return frozen dataclasses; nothing else formats them.
(PDF and Markdown reports live in :mod:`certify.report` and read the JSON
produced here, so every number in a report equals the JSON.)
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import math
from datetime import datetime, timezone
from typing import Any, Iterator, Sequence

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


def header(command: str, argv: Sequence[str] | None = None) -> dict[str, Any]:
    """The keys every lipcert JSON starts with."""
    from ._version import __version__

    return {"lipcert_version": __version__, "schema_version": JSON_SCHEMA_VERSION, "command": command,
            "argv": list(argv) if argv is not None else None, "created": timestamp()}


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
        **header("certify", argv),
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
        "settings": dict(report.settings),
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


# --------------------------------------------------------------------------- analyze / report

RESULT_SECTIONS = ("certify", "attack", "lipschitz", "analysis")


def analysis_json(analysis: Any) -> dict[str, Any]:
    """An :class:`certify.analysis.Analysis` as JSON (inf/nan → null; see the docs for null meanings)."""
    out = jsonable(analysis)
    if analysis.median_adv_distance is not None and math.isinf(analysis.median_adv_distance):
        out["median_adv_distance"] = "inf"  # more than half never broken: keep it distinct from "no attack"
    return out


def combined_json(*, command: str, seed: int | None, model: dict[str, Any], data: dict[str, Any],
                  certify: dict[str, Any] | None = None, attack: dict[str, Any] | None = None,
                  lipschitz: dict[str, Any] | None = None, analysis: dict[str, Any] | None = None,
                  partial: bool = False, name: str | None = None, notes: Sequence[str] = ()) -> dict[str, Any]:
    """The combined results JSON of ``lipcert analyze`` / ``lipcert run`` (one per model)."""
    head = header(command)
    del head["argv"]
    return jsonable({
        **head, "seed": seed, "name": name, "model": dict(model), "data": dict(data),
        "certify": certify, "attack": attack, "lipschitz": lipschitz, "analysis": analysis,
        "partial": bool(partial), "notes": list(notes),
    })


#: Keys whose values, anywhere in a results JSON, are accuracies (or error rates) in [0, 1].
FRACTION_KEYS = frozenset({"clean_accuracy", "certified_accuracy", "robust_accuracy", "certified_error",
                           "empirical_error", "accuracy"})
#: Keys whose values are finite numbers ≥ 0.
NONNEGATIVE_KEYS = frozenset({"eps", "median_radius", "median_certified_radius", "median_adv_distance",
                              "lipschitz_constant", "global_bound", "seconds", "certified_count", "attacked",
                              "successes", "restarts", "n"})
#: Keys whose values are true or false.
BOOL_KEYS = frozenset({"partial", "lipschitz_verified", "verified"})


def check_result_values(raw: Any, where: str, path: str = "", depth: int = 0) -> None:
    """Type- and range-check the numbers of a results JSON (one owner reads results: this module)."""
    from .errors import BadInputError

    if depth > 40:
        raise BadInputError(f"{where}: the results JSON is nested too deeply to be lipcert's")
    items = raw.items() if isinstance(raw, dict) else enumerate(raw) if isinstance(raw, list) else ()
    for key, value in items:
        here = f"{path}.{key}" if isinstance(key, str) else f"{path}[{key}]"
        if value is not None and isinstance(key, str):
            _check_value(key, value, where, here.lstrip("."))
        if isinstance(value, (dict, list)) and key not in ("per_example", "settings"):
            check_result_values(value, where, here, depth + 1)


def _check_value(key: str, value: Any, where: str, here: str) -> None:
    from .errors import BadInputError, short_repr

    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    if isinstance(value, dict):  # a curve ({eps: [...], ...}): its own keys are checked by the caller
        return
    values = value if isinstance(value, list) else [value]
    if key in FRACTION_KEYS and not all(v is None or (number(v) and 0 <= v <= 1) for v in values):
        raise BadInputError(f"{where}: {here} must be a number from 0 to 1, got {short_repr(value, 40)}; "
                            "the file is not lipcert's or was edited")
    if key in NONNEGATIVE_KEYS and not all(v is None or v == "inf" or (number(v) and v >= 0) for v in values):
        raise BadInputError(f"{where}: {here} must be a number ≥ 0, got {short_repr(value, 40)}; "
                            "the file is not lipcert's or was edited")
    if key in BOOL_KEYS and not isinstance(value, bool):
        raise BadInputError(f"{where}: {here} must be true or false, got {short_repr(value, 40)}")


def wrap_results(raw: Any, where: str = "results") -> dict[str, Any]:
    """Accept a combined JSON, or a bare certify/attack JSON (wrapped into the combined shape)."""
    from .errors import BadInputError, short_repr

    if not isinstance(raw, dict) or "command" not in raw:
        raise BadInputError(f"{where}: expected a lipcert results JSON object with a 'command' key")
    version = raw.get("schema_version", JSON_SCHEMA_VERSION)
    if version != JSON_SCHEMA_VERSION:
        raise BadInputError(f"{where}: written with schema_version {short_repr(version, 40)}, this lipcert reads "
                            f"schema_version {JSON_SCHEMA_VERSION}; rerun the lipcert command with this version")
    check_result_values(raw, str(where))
    cmd = raw["command"]
    if cmd in ("analyze", "run"):
        return raw
    if cmd not in ("certify", "attack"):
        raise BadInputError(f"{where}: cannot read results of command {cmd!r}; expected analyze, run, certify or attack")
    wrapped = combined_json(command=cmd, seed=raw.get("seed"), model=raw.get("model") or {},
                            data=raw.get("data") or {}, partial=bool(raw.get("partial")),
                            **{cmd: raw})
    wrapped["created"] = raw.get("created")
    return wrapped


def load_results(path: str) -> dict[str, Any]:
    """Read a results JSON file (combined or bare) into the combined shape."""
    from pathlib import Path

    from .errors import BadInputError

    p = Path(path)
    if not p.is_file():
        raise BadInputError(f"results file {path!r} does not exist; run lipcert analyze/run --json first")
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BadInputError(f"results file {path!r} is not valid JSON ({err})") from None
    return wrap_results(raw, path)


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None:
        return "—"
    if isinstance(x, str):
        return x
    return f"{x:.{digits}g}" if abs(x) < 1e4 else f"{x:.3e}"


def _pct_or_dash(x: Any) -> str:
    return "—" if x is None else pct(x)


def analysis_tables(a: dict[str, Any]) -> list[Table]:
    """Rich tables of an analysis JSON: readings at ε, gap bins, hybrid and singular values."""
    unit = "ℓ₂" if a["norm"] == "l2" else "ℓ∞"
    t = Table(title=f"Error at chosen ε ({unit}) · n = {a['n']}", title_justify="left")
    for col in ("ε", "%err (attacks)", "robust acc", "certified acc", "certified err"):
        t.add_column(col, justify="right")
    for r in a["at_eps"]:
        t.add_row(_fmt(r["eps"]), _pct_or_dash(r["empirical_error"]), _pct_or_dash(r["robust_accuracy"]),
                  pct(r["certified_accuracy"]), pct(r["certified_error"]))
    t.caption = (f"median adversarial distance {_fmt(a['median_adv_distance'])} · "
                 f"median certified radius {_fmt(a['median_certified_radius'])}")
    return [t, gap_bins_table(a), hybrid_table(a), spreads_table(a)]


def gap_bins_table(a: dict[str, Any]) -> Table:
    t = Table(title=f"Accuracy in bins of confidence gap (attack/certified at ε = {_fmt(a['bin_eps'])})",
              title_justify="left")
    for col in ("bin", "n", "gap range", "natural", "after attack", "certified"):
        t.add_column(col, justify="right")
    for b in a["gap_bins"]:
        t.add_row(str(b["index"] + 1), str(b["n"]), f"{_fmt(b['gap_min'], 3)}–{_fmt(b['gap_max'], 3)}",
                  pct(b["natural_accuracy"]), _pct_or_dash(b["attacked_accuracy"]),
                  _pct_or_dash(b["certified_accuracy"]))
    return t


def hybrid_table(a: dict[str, Any], every: int = 4) -> Table:
    t = Table(title=f"Hybrid threshold (delegated points counted {pct(a['hybrid_delegate_accuracy'])} right)",
              title_justify="left")
    for col in ("gap threshold", "delegated", "kept accuracy", "overall"):
        t.add_column(col, justify="right")
    for h in a["hybrid"][::every]:
        t.add_row(_fmt(h["threshold"], 3), pct(h["delegated_share"]), _pct_or_dash(h["kept_accuracy"]),
                  pct(h["overall_accuracy"]))
    return t


def spreads_table(a: dict[str, Any]) -> Table | None:
    if not a["singular_values"]:
        return None
    t = Table(title="Singular values of the weights (reshaped to out × rest)", title_justify="left")
    for col in ("parameter", "shape", "std", "largest", "smallest"):
        t.add_column(col, justify="right" if col != "parameter" else "left")
    for s in a["singular_values"]:
        t.add_row(s["name"], "×".join(map(str, s["shape"])), _fmt(s["std"]), _fmt(s["largest"]), _fmt(s["smallest"]))
    return t


def flags_table_json(results: dict[str, Any]) -> Table | None:
    """Flags of every section of combined results (plus notes)."""
    from .report import all_flags

    rows = [(f"{section}: {fid}", msg) for section, fid, msg in all_flags(results)]
    rows += [("note", n) for n in results.get("notes") or []]
    if not rows:
        return None
    t = Table(title="Flags and notes (see docs/flags.md)", title_justify="left")
    t.add_column("flag", style="yellow")
    t.add_column("detail")
    for r in rows:
        t.add_row(*r)
    return t


def summary_table(results: Sequence[dict[str, Any]]) -> Table:
    """Models as columns ([L2NNN] Tables 1–2); the same strings as the PDF and Markdown."""
    from .report import labels, summary_rows

    t = Table(title="Summary", title_justify="left")
    t.add_column("metric")
    for lab in labels(results):
        t.add_column(lab, justify="right")
    for k, v in summary_rows(results):
        t.add_row(k, *v)
    return t


# --------------------------------------------------------------------------- run / gate


def _gate_value(r: Any) -> str:
    if r.value is None:
        return "missing"
    return f"{r.value:.4f}" if r.gate != "certificate violations" and r.gate != "forbidden flags" else f"{r.value:g}"


def gate_rows(reports: Sequence[Any]) -> list[list[str]]:
    """model, gate, value, op, threshold, PASS/FAIL, detail: shared by every gate renderer."""
    return [[rep.name, r.gate, _gate_value(r), r.op, f"{r.threshold:.4g}", "PASS" if r.passed else "FAIL", r.detail]
            for rep in reports for r in rep.rows]


def gate_table(reports: Sequence[Any]) -> Table:
    ok = all(rep.passed for rep in reports)
    t = Table(title=f"Gates: {'PASSED' if ok else 'FAILED'}", title_justify="left")
    for col in ("model", "gate", "value", "", "threshold", "result", "detail"):
        t.add_column(col, justify="right" if col in ("value", "threshold") else "left")
    for row in gate_rows(reports):
        style = "green" if row[5] == "PASS" else "bold red"
        t.add_row(*row[:5], f"[{style}]{row[5]}[/]", row[6])
    return t


def gate_failure_message(reports: Sequence[Any]) -> str:
    failed = [f"{rep.name}: {r.gate}" for rep in reports for r in rep.failed]
    return f"{len(failed)} gate(s) failed: " + "; ".join(failed)


def gate_junit(reports: Sequence[Any]) -> str:
    """JUnit XML: one testsuite per model, one testcase per gate, <failure> for failed gates."""
    import xml.etree.ElementTree as ET

    root = ET.Element("testsuites", name="lipcert gates",
                      tests=str(sum(len(r.rows) for r in reports)),
                      failures=str(sum(len(r.failed) for r in reports)))
    for rep in reports:
        suite = ET.SubElement(root, "testsuite", name=rep.name, tests=str(len(rep.rows)),
                              failures=str(len(rep.failed)), errors="0", skipped="0")
        for r, row in zip(rep.rows, gate_rows([rep])):
            case = ET.SubElement(suite, "testcase", classname=f"lipcert.{rep.name}", name=r.gate)
            if not r.passed:
                failure = ET.SubElement(case, "failure", message=f"{r.gate}: {row[2]} {r.op} {row[4]} is false",
                                        type="GateFailed")
                failure.text = row[6] or None
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def gate_markdown(reports: Sequence[Any]) -> str:
    """Markdown for CI step summaries and PR comments."""
    from .report import md_table

    ok = all(rep.passed for rep in reports)
    head = f"## lipcert gates: {'✅ passed' if ok else '❌ failed'}"
    rows = [row[:5] + [("✅ " if row[5] == "PASS" else "❌ ") + row[5], row[6]] for row in gate_rows(reports)]
    return "\n".join([head, "", md_table(["model", "gate", "value", "", "threshold", "result", "detail"], rows), ""])
# --------------------------------------------------------------------------- lipschitz


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
        **header("lipschitz", argv), "model": model,
        "norm": report.norm, "verified": report.verified, "unverifiable_ops": list(report.unverifiable_ops),
        "graph_source": report.source, "global_bound": report.global_bound,
        "per_logit_bounds": list(report.per_logit_bounds), "pair_bounds": [list(r) for r in report.pair_bounds],
        "layers": [{"name": lb.name, "op": lb.op, "bound": lb.bound, "estimate": lb.estimate,
                    "method": lb.method, "reused": lb.reused} for lb in report.layers],
        "empirical": emp,
    }
    return jsonable(out)
# --------------------------------------------------------------------------- demo


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
    return jsonable({**header("demo", argv), **{f.name: getattr(report, f.name) for f in dataclasses.fields(report)}})


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
        op = lb.op + (f" ({lb.method})" if lb.method else "") + (" · reused" if lb.reused else "")
        t.add_row(lb.name, op, _num(lb.bound), _num(lb.estimate), ratio)
    reused = sum(lb.reused for lb in report.layers)
    if reused:
        t.caption = f"{reused} layer(s) reused cached work (hints only; every bound re-proven)"
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
    out = {**header("data-lipschitz", argv), "data": data,
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
# --------------------------------------------------------------------------- attack


def attack_json(report: Any, argv: Sequence[str] | None = None, *, per_example: bool = True) -> dict[str, Any]:
    """The documented JSON schema of ``lipcert attack`` (see README and the shared brief)."""
    plan = report.plan
    out: dict[str, Any] = {
        **header("attack", argv),
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
        "settings": dict(report.settings),
    }
    if per_example:
        ex = report.examples
        out["per_example"] = {name: jsonable(getattr(ex, name)) for name in ATTACK_EXAMPLE_COLUMNS}
        out["per_example"]["robust"] = jsonable(ex.robust)  # points × eps: worst-case robust (for --resume)
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


@contextlib.contextmanager
def malformed_results(where: str) -> Iterator[None]:
    """Reading, gating or rendering results JSONs someone may have edited: a wrong type or a missing key
    deep inside is bad input (exit 2 naming the files), not an internal error."""
    from .errors import BadInputError, LipcertError, short_repr

    try:
        yield
    except LipcertError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, ZeroDivisionError, OverflowError) as err:
        detail = short_repr(str(err), 80)[1:-1]
        raise BadInputError(f"results {short_repr(where, 120)[1:-1]}: malformed lipcert results "
                            f"({type(err).__name__}: {detail}); give JSON files written by lipcert") from err
