"""Markdown: the report of combined results (``lipcert report --md``) and the gate summary (``--summary-md``)."""

from __future__ import annotations

from typing import Any, Sequence

from .strings import (
    Results,
    all_flags,
    fmt_num,
    fmt_pct,
    gate_rows,
    labels,
    summary_rows,
    title_lines,
)


def markdown(results: Sequence[Results]) -> str:
    """Markdown summary: title block, summary table (models as columns), gap bins, flags."""
    labs = labels(results)
    out = ["# lipcert report", ""] + [f"- {line.strip()}" for line in title_lines(results)] + [""]
    out += ["## Summary", "", md_table(["metric"] + labs, [[k] + v for k, v in summary_rows(results)]), ""]
    for lab, r in zip(labs, results):
        a = r.get("analysis") or {}
        if a.get("gap_bins"):
            out += [f"## Accuracy by confidence-gap bin: {lab} (ε = {fmt_num(a['bin_eps'])})", ""]
            rows = [[str(b["index"] + 1), str(b["n"]), f"{fmt_num(b['gap_min'])}–{fmt_num(b['gap_max'])}",
                     fmt_pct(b["natural_accuracy"]), fmt_pct(b["attacked_accuracy"]),
                     fmt_pct(b["certified_accuracy"])] for b in a["gap_bins"]]
            out += [md_table(["bin", "n", "gap range", "natural", "after attack", "certified"], rows), ""]
    flags = [[lab, f"`{fid}`", msg] for lab, r in zip(labs, results) for _, fid, msg in all_flags(r)]
    out += ["## Flags", "", md_table(["model", "flag", "detail"], flags) if flags else "No flags raised.", ""]
    notes = [[lab, n] for lab, r in zip(labs, results) for n in r.get("notes") or []]
    if notes:
        out += ["## Notes", "", md_table(["model", "note"], notes), ""]
    return "\n".join(out)


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    esc = [[str(c).replace("|", "\\|") for c in row] for row in [list(header)] + [list(r) for r in rows]]
    lines = ["| " + " | ".join(esc[0]) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in esc[1:]])


def gate_markdown(reports: Sequence[Any]) -> str:
    """Markdown for CI step summaries and PR comments."""
    ok = all(rep.passed for rep in reports)
    head = f"## lipcert gates: {'✅ passed' if ok else '❌ failed'}"
    rows = [row[:5] + [("✅ " if row[5] == "PASS" else "❌ ") + row[5], row[6]] for row in gate_rows(reports)]
    return "\n".join([head, "", md_table(["model", "gate", "value", "", "threshold", "result", "detail"], rows), ""])
