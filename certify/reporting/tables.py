"""Rich tables of every command: certify, attack, lipschitz, data-lipschitz, analyze/report, gate, demo.

Tables of a run read its dataclasses (``CertifyReport``, ``AttackReport``, …); tables of combined
results read the JSON dicts of :mod:`certify.results`, with the strings of :mod:`.strings`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from rich.table import Table

from ..threat import Norm
from .strings import all_flags, gate_rows, labels, pct, summary_rows

if TYPE_CHECKING:
    from ..certificates import CertifyReport
    from ..flags import Flag

# --------------------------------------------------------------------------- certify


def certify_table(report: CertifyReport) -> Table:
    """A :class:`certify.certificates.CertifyReport`: accuracy, gap, median radius, certified share per ε."""
    plan = report.plan
    unit = Norm.parse(report.norm).symbol
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
        if len(getattr(plan, "methods", ())) > 1:
            t.add_row("  by method", _by_method(report, r.eps))
    budget = getattr(plan, "budget", None)
    if budget is not None and budget.hit:
        t.add_row("certificate budget", f"{budget.spec.text} hit: later points kept the cheaper radii")
    return t


def _by_method(report: CertifyReport, eps: float) -> str:
    """Certified points at ``eps`` by the method that gave their (largest) radius."""
    from ..certificates.auto_plan import method_names

    ex = report.examples
    names = [m for m, ok in zip(method_names(ex.radius_method), ex.certified(eps)) if ok]
    return ", ".join(f"{m} {names.count(m)}" for m in sorted(set(names))) or "none"


def flags_table(flags: Sequence[Flag]) -> Table | None:
    """Sanity flags (:class:`certify.flags.Flag`) of one run; None when there are none."""
    if not flags:
        return None
    t = Table(title="Sanity flags (see docs/flags.md)", title_justify="left")
    t.add_column("flag", style="yellow")
    t.add_column("detail")
    for f in flags:
        t.add_row(f.id, f.message)
    return t


# --------------------------------------------------------------------------- attack


def attack_table(report: Any) -> Table:
    """One row per attack × ε × budget, then the worst case per ε."""
    unit = Norm.parse(report.norm).symbol
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


def status_table(report: Any) -> Table:
    """Per ε: certified, broken (an adversarial example found) and open (neither) points."""
    from attacks.report import status_counts

    t = Table(title="Certified · broken · open (open: the gap a stronger verifier or attack could close)",
              title_justify="left")
    for col in ("ε", "certified", "broken", "open"):
        t.add_column(col, justify="right")
    for c in status_counts(report):
        sh = c.shares()
        t.add_row(f"{c.eps:g}", f"{pct(sh['certified_share'])} ({c.certified})",
                  f"{pct(sh['broken_share'])} ({c.broken})", f"[bold]{pct(sh['open_share'])}[/] ({c.open})")
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


def _dash(v: Any) -> str:
    return "–" if v is None else str(v)


# --------------------------------------------------------------------------- lipschitz, data-lipschitz


def _num(v: float | None) -> str:
    return "—" if v is None else f"{v:.6g}"


def lipschitz_table(report: Any) -> Table:
    """Guaranteed bound and power-iteration estimate per node of a :class:`certify.lipschitz.LipschitzReport`."""
    unit = Norm.parse(report.norm).operator_symbol
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
        t.caption = (f"{reused} layer(s) reused a bound this installation proved and signed in an earlier run "
                     "(LIPCERT_CACHE_DIR=off proves them again)")
    if report.per_logit_bounds:
        t.add_section()
        t.add_row("per-logit", "", ", ".join(f"{b:.4g}" for b in report.per_logit_bounds), "", "")
    return t


def empirical_table(empirical: Any) -> Table:
    """Empirical lower bounds on the Lipschitz constant (:func:`certify.estimates.empirical_estimates`)."""
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


def data_lipschitz_table(result: Any, source: str) -> Table:
    """Lip₂,∞ of a dataset (:func:`certify.estimates.data_lipschitz`)."""
    t = Table(title=f"Lipschitz constant of the data · {source}", title_justify="left")
    t.add_column("metric")
    t.add_column("value", justify="right")
    t.add_row("examples", str(result.n))
    t.add_row("Lip₂,∞(D)", f"{result.lip_2_inf:.6g}")
    t.add_row("min distance (ℓ₂)", f"{result.min_distance:.6g}")
    t.add_row("closest pair", f"{result.index_a}, {result.index_b}")
    t.add_row("seconds", f"{result.seconds:.1f}")
    return t


# --------------------------------------------------------------------------- analyze / report (combined JSON)


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
    unit = Norm.parse(a["norm"]).symbol
    t = Table(title=f"Error at chosen ε ({unit}) · n = {a['n']}", title_justify="left")
    for col in ("ε", "%err (attacks)", "robust acc", "certified acc", "certified err", "open"):
        t.add_column(col, justify="right")
    for r in a["at_eps"]:
        t.add_row(_fmt(r["eps"]), _pct_or_dash(r["empirical_error"]), _pct_or_dash(r["robust_accuracy"]),
                  pct(r["certified_accuracy"]), pct(r["certified_error"]), _pct_or_dash(r.get("open_share")))
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
    t = Table(title="Summary", title_justify="left")
    t.add_column("metric")
    for lab in labels(results):
        t.add_column(lab, justify="right")
    for k, v in summary_rows(results):
        t.add_row(k, *v)
    return t


# --------------------------------------------------------------------------- gate


def gate_table(reports: Sequence[Any]) -> Table:
    """Every gate of every model (:class:`certify.gate.GateReport`), PASS in green and FAIL in red."""
    ok = all(rep.passed for rep in reports)
    t = Table(title=f"Gates: {'PASSED' if ok else 'FAILED'}", title_justify="left")
    for col in ("model", "gate", "value", "", "threshold", "result", "detail"):
        t.add_column(col, justify="right" if col in ("value", "threshold") else "left")
    for row in gate_rows(reports):
        style = "green" if row[5] == "PASS" else "bold red"
        t.add_row(*row[:5], f"[{style}]{row[5]}[/]", row[6])
    return t


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
    """"l2@0.5" → "ℓ₂ 0.5"."""
    norm, _, eps = k.partition("@")
    return f"{Norm.parse(norm).symbol} {eps}"
