"""The strings every renderer shares, so a table, the Markdown and the PDF say the same thing.

Numbers as percentages, model labels, the summary rows of combined results (models as
columns, as in [L2NNN] Tables 1 and 2), the flags of every section, and the rows of gate results.
"""

from __future__ import annotations

import platform
from typing import Any, Sequence

from ..threat import Norm

Results = dict[str, Any]


def pct(x: float) -> str:
    return f"{100.0 * x:.2f}%"


def fmt_pct(x: Any) -> str:
    return "—" if x is None else f"{100.0 * float(x):.2f}%"


def fmt_num(x: Any) -> str:
    if x is None:
        return "—"
    if isinstance(x, str):
        return x
    return f"{float(x):.4g}"


# --------------------------------------------------------------------------- combined results


def model_label(r: Results, i: int) -> str:
    if r.get("name"):
        return str(r["name"])
    path = (r.get("model") or {}).get("path") or f"model {i + 1}"
    return str(path).replace("\\", "/").rsplit("/", 1)[-1]


def labels(results: Sequence[Results]) -> list[str]:
    out = [model_label(r, i) for i, r in enumerate(results)]
    return [f"{lab} ({i + 1})" if out.count(lab) > 1 else lab for i, lab in enumerate(out)]


def norm_of(r: Results) -> str:
    a = r.get("analysis") or {}
    return str(a.get("norm") or (r.get("certify") or r.get("attack") or {}).get("norm") or Norm.L2)


def lipschitz_bound(r: Results) -> Any:
    lip = r.get("lipschitz")
    return lip.get("global_bound") if lip else None


def all_flags(r: Results) -> list[tuple[str, str, str]]:
    """(section, id, message) for every flag raised in any section."""
    out = []
    for section in ("certify", "attack", "lipschitz"):
        for f in (r.get(section) or {}).get("flags") or []:
            out.append((section, f["id"], f["message"]))
    return out


def summary_rows(results: Sequence[Results]) -> list[tuple[str, list[str]]]:
    """Metric name → one string per model; rows for every ε any model reports."""
    rows: list[tuple[str, list[str]]] = [
        ("norm", [norm_of(r) for r in results]),
        ("examples", [str((r.get("analysis") or {}).get("n", "—")) for r in results]),
        ("clean accuracy", [fmt_pct((r.get("analysis") or {}).get("clean_accuracy")) for r in results]),
    ]
    eps_all = sorted({(norm_of(r), e["eps"]) for r in results for e in (r.get("analysis") or {}).get("at_eps", [])})
    for norm, eps in eps_all:
        cells = [_at(r, norm, eps) for r in results]
        tag = f"{Norm.parse(norm).plain_symbol} ε={eps:.4g}"
        rows.append((f"%err attacks @ {tag}", [fmt_pct(c and c["empirical_error"]) for c in cells]))
        rows.append((f"certified acc @ {tag}", [fmt_pct(c and c["certified_accuracy"]) for c in cells]))
        rows.append((f"open (neither) @ {tag}", [fmt_pct(c and c.get("open_share")) for c in cells]))
    rows += [
        ("median adversarial distance", [fmt_num((r.get("analysis") or {}).get("median_adv_distance")) for r in results]),
        ("median certified radius", [fmt_num((r.get("analysis") or {}).get("median_certified_radius")) for r in results]),
        ("Lipschitz bound", [fmt_num(lipschitz_bound(r)) for r in results]),
        ("certificate violations", [str(len((r.get("attack") or {}).get("violations") or [])) if r.get("attack")
                                    else "—" for r in results]),
        ("flags", [str(len(all_flags(r))) for r in results]),
    ]
    return rows


def _at(r: Results, norm: str, eps: float) -> dict[str, Any] | None:
    if norm_of(r) != norm:
        return None
    for e in (r.get("analysis") or {}).get("at_eps", []):
        if e["eps"] == eps:
            return e
    return None


def title_lines(results: Sequence[Results]) -> list[str]:
    """Where each model and its results come from, and what rendered them (Markdown and PDF title)."""
    from .._version import __version__

    lines = []
    for lab, r in zip(labels(results), results):
        m, d = r.get("model") or {}, r.get("data") or {}
        lines.append(f"{lab}: {m.get('path')} ({m.get('format')}), sha256 {str(m.get('sha256'))[:16]}…")
        lines.append(f"    data {d.get('source')}/{d.get('split')} n={d.get('n')} · seed {r.get('seed')} · "
                     f"created {r.get('created')} · lipcert {r.get('lipcert_version')}"
                     + (" · PARTIAL" if r.get("partial") else ""))
    import matplotlib
    import numpy
    import torch

    lines.append(f"rendered by lipcert {__version__} · torch {torch.__version__} · numpy {numpy.__version__} · "
                 f"matplotlib {matplotlib.__version__} · python {platform.python_version()}")
    return lines


# --------------------------------------------------------------------------- gates


def _gate_value(r: Any) -> str:
    if r.value is None:
        return "missing"
    return f"{r.value:.4f}" if r.gate != "certificate violations" and r.gate != "forbidden flags" else f"{r.value:g}"


def gate_rows(reports: Sequence[Any]) -> list[list[str]]:
    """model, gate, value, op, threshold, PASS/FAIL, detail: shared by every gate renderer."""
    return [[rep.name, r.gate, _gate_value(r), r.op, f"{r.threshold:.4g}", "PASS" if r.passed else "FAIL", r.detail]
            for rep in reports for r in rep.rows]


def gate_failure_message(reports: Sequence[Any]) -> str:
    failed = [f"{rep.name}: {r.gate}" for rep in reports for r in rep.failed]
    return f"{len(failed)} gate(s) failed: " + "; ".join(failed)
