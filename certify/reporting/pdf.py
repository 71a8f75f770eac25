"""The PDF report of one or several combined results JSONs (``lipcert report --pdf``).

Every number drawn or printed is read from the results dicts (the JSON), never recomputed
from a model; the tables use :func:`.strings.summary_rows`, so the PDF and the Markdown show
the same strings.  Models are columns, as in [L2NNN] Tables 1 and 2.  One function per page
(:data:`PAGES`); a page that has nothing to draw returns None and is left out.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

from ..errors import BadInputError
from ..threat import Norm
from .strings import (
    Results,
    all_flags,
    fmt_num,
    fmt_pct,
    labels,
    norm_of,
    summary_rows,
    title_lines,
)

PAGE = (11.69, 8.27)  # A4 landscape, inches


def distance_label(norm: Any) -> str:
    """The axis unit of ε and distances: "ℓ2 distance (pixel scale [0, 1])"."""
    return f"{Norm.parse(norm).plain_symbol} distance (pixel scale [0, 1])"


# --------------------------------------------------------------------------- PDF


def write_pdf(results: Sequence[Results], path: str) -> int:
    """Write the PDF report; returns the number of pages."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.backends.backend_pdf import PdfPages

    from ..io import atomic_path

    if not results:
        raise BadInputError("give at least one results JSON to report on", param="results")
    pages = 0
    with atomic_path(path) as tmp, PdfPages(tmp, metadata={"Title": "lipcert report", "Creator": "lipcert"}) as pdf:
        for page in PAGES:
            out = page(results)
            for fig in out if isinstance(out, list) else ([out] if out is not None else []):
                pdf.savefig(fig)
                _close(fig)
                pages += 1
    return pages


def _close(fig: Any) -> None:
    import matplotlib.pyplot as plt

    plt.close(fig)


def _figure(title: str, nrows: int = 1, ncols: int = 1, **kw: Any) -> tuple[Any, Any]:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(nrows, ncols, figsize=PAGE, squeeze=False, **kw)
    fig.suptitle(title, fontsize=15, fontweight="bold")
    return fig, axes


def _grid(n: int) -> tuple[int, int]:
    cols = min(n, 2)
    return math.ceil(n / cols), cols


def _table_pages(title: str, header: Sequence[str], rows: Sequence[Sequence[str]], *, per_page: int,
                 col_widths: Sequence[float] | None = None, fontsize: float = 9, cell_loc: str = "center",
                 row_height: float | None = None) -> list[Any]:
    """A table split over as many pages as it needs: no row is ever dropped."""
    figs = []
    chunks = [rows[i:i + per_page] for i in range(0, len(rows), per_page)] or [[]]
    for k, chunk in enumerate(chunks):
        suffix = f" ({k + 1}/{len(chunks)})" if len(chunks) > 1 else ""
        fig, axes = _figure(title + suffix)
        ax = axes[0, 0]
        ax.axis("off")
        t = ax.table(cellText=[list(r) for r in chunk], colLabels=list(header), loc="upper center",
                     cellLoc=cell_loc, colWidths=list(col_widths) if col_widths else None)
        t.auto_set_font_size(False)
        t.set_fontsize(fontsize)
        if row_height is not None:
            for (row, _), cell in t.get_celld().items():
                cell.set_height(row_height)
        else:
            t.scale(1.0, 1.4)
        figs.append(fig)
    return figs


def _hide_unused(axes: Any, used: int) -> None:
    for ax in axes.flat[used:]:
        ax.set_visible(False)


def page_title(results: Sequence[Results]) -> Any:
    fig, axes = _figure("lipcert robustness report")
    ax = axes[0, 0]
    ax.axis("off")
    lines = title_lines(results)
    ax.text(0.0, 1.0, "\n".join(lines), va="top", ha="left", fontsize=8.5, family="monospace",
            transform=ax.transAxes)
    rows = summary_rows(results)
    n = len(results)
    table = ax.table(cellText=[[k] + v for k, v in rows], colLabels=["metric"] + labels(results),
                     colWidths=[0.34] + [0.66 / n] * n, loc="lower center", cellLoc="center",
                     bbox=[0.02, 0.0, 0.96, 0.93 - 0.035 * len(lines)])
    for (row, col), cell in table.get_celld().items():
        if col == 0:
            cell.set_text_props(ha="left")
            cell.PAD = 0.02
    table.auto_set_font_size(False)
    table.set_fontsize(9)
    return fig


def _per_norm_page(results: Sequence[Results], title: str, ylabel: str,
                   curve_of: Callable[[Results], dict[str, Any] | None]) -> Any:
    """One panel per norm, one line per model (None when nothing is drawn)."""
    norms = sorted({norm_of(r) for r in results})
    fig, axes = _figure(title, 1, len(norms))
    drawn = False
    for ax, norm in zip(axes.flat, norms):
        for lab, r in zip(labels(results), results):
            c = curve_of(r) if norm_of(r) == norm else None
            if c:
                ax.plot(c["eps"], c["values"], label=lab)
                drawn = True
        _curve_axes(ax, norm, ylabel)
    return fig if drawn else _closed(fig)


def page_error_curves(results: Sequence[Results]) -> Any:
    return _per_norm_page(results, "Empirical error curves C_err(ε) = P(d(x) ≤ ε), worst case over attacks",
                          "error rate (attacked)", lambda r: _curve(r, "worst case"))


def _closed(fig: Any) -> None:
    _close(fig)
    return None


def _curve(r: Results, name: str) -> dict[str, Any] | None:
    for c in (r.get("analysis") or {}).get("curves", []):
        if c["name"] == name:
            return c
    return None


def _curve_axes(ax: Any, norm: str, ylabel: str) -> None:
    ax.set_xlabel(f"ε, {distance_label(norm)}")
    ax.set_ylabel(ylabel)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", fontsize=8)


def page_certified_vs_empirical(results: Sequence[Results]) -> Any:
    nr, nc = _grid(len(results))
    fig, axes = _figure("Certified (upper bound) vs empirical (lower bound) error", nr, nc)
    for ax, lab, r in zip(axes.flat, labels(results), results):
        for c in (r.get("analysis") or {}).get("curves", []):
            style = {"certified": dict(ls="--", color="black", lw=2), "worst case": dict(color="tab:red", lw=2)}
            if c["name"] in style:
                ax.plot(c["eps"], c["values"], label=f"{c['name']} error", **style[c["name"]])
            else:
                ax.plot(c["eps"], c["values"], marker="o", ls=":", label=f"{c['name']} (robust acc points)")
        ax.set_title(lab, fontsize=10)
        _curve_axes(ax, norm_of(r), "error rate")
    _hide_unused(axes, len(results))
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    return fig


def page_certified_accuracy(results: Sequence[Results]) -> Any:
    def certified(r: Results) -> dict[str, Any] | None:
        a = r.get("analysis") or {}
        return a.get("certified_accuracy") if a.get("median_certified_radius") is not None else None

    return _per_norm_page(results, "Certified accuracy against ε", "certified accuracy", certified)


def page_gap_bins(results: Sequence[Results]) -> Any:
    import numpy as np

    nr, nc = _grid(len(results))
    fig, axes = _figure("Accuracy in 10 equal bins sorted by confidence gap ([L2NNN] Fig. 2)", nr, nc)
    for ax, lab, r in zip(axes.flat, labels(results), results):
        a = r.get("analysis") or {}
        bins = a.get("gap_bins") or []
        x = np.arange(len(bins))
        kinds = [("natural_accuracy", "natural"), ("attacked_accuracy", f"after attack ε={fmt_num(a.get('bin_eps'))}"),
                 ("certified_accuracy", f"certified ε={fmt_num(a.get('bin_eps'))}")]
        for k, (key, name) in enumerate(kinds):
            vals = [b[key] for b in bins]
            if any(v is not None for v in vals):
                ax.bar(x + (k - 1) * 0.27, [v or 0.0 for v in vals], width=0.27, label=name)
        ax.set_xticks(x, [str(b["index"] + 1) for b in bins])
        ax.set_xlabel("gap bin (1 = smallest gaps)")
        ax.set_ylabel("accuracy")
        ax.set_ylim(0, 1.05)
        ax.set_title(lab, fontsize=10)
        ax.legend(fontsize=8, loc="upper left")
    _hide_unused(axes, len(results))
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    return fig


def page_hybrid(results: Sequence[Results]) -> Any:
    fig, axes = _figure("Hybrid model: delegate points with gap < threshold ([L2NNN] §3.2)", 1, 2)
    left, right = axes[0]
    for k, (lab, r) in enumerate(zip(labels(results), results)):
        h = (r.get("analysis") or {}).get("hybrid") or []
        t = [p["threshold"] for p in h]
        left.plot(t, [p["delegated_share"] for p in h], label=lab, color=f"C{k}")
        right.plot(t, [p["kept_accuracy"] if p["kept_accuracy"] is not None else float("nan") for p in h],
                   label=f"{lab}: kept points", color=f"C{k}")
        right.plot(t, [p["overall_accuracy"] for p in h], ls="--", label=f"{lab}: overall", color=f"C{k}")
    left.set_ylabel("share delegated")
    right.set_ylabel("accuracy")
    share = (results[0].get("analysis") or {}).get("hybrid_delegate_accuracy", 1.0)
    right.set_title(f"overall counts delegated points {fmt_pct(share)} right", fontsize=9)
    for ax in (left, right):
        ax.set_xlabel("gap threshold (logit units)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    return fig


def page_iteration_scaling(results: Sequence[Results]) -> Any:
    per_model = [(lab, (r.get("attack") or {}).get("iteration_scaling") or []) for lab, r in zip(labels(results), results)]
    per_model = [(lab, rows) for lab, rows in per_model if rows]
    if not per_model:
        return None
    nrows, ncols = _grid(len(per_model))
    fig, axes = _figure("Robust accuracy as the attack budget grows ([L2NNN] Tables 1–2)", nrows, ncols)
    for ax, (lab, rows) in zip(axes.flat, per_model):
        series: dict[str, list[tuple[float, float]]] = {}
        for s_ in rows:
            key = f"{s_['attack']} ε={fmt_num(s_['eps'])}"
            series.setdefault(key, []).append((s_["steps"] * s_.get("restarts", 1), s_["robust_accuracy"]))
        for key, pts in series.items():
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=key)
        ax.set_xscale("log")
        ax.set_title(lab, fontsize=10)
        ax.set_xlabel("attack iterations × restarts")
        ax.set_ylabel("robust accuracy")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2, loc="lower left")
    _hide_unused(axes, len(per_model))
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    cells = [[lab, s_["attack"], fmt_num(s_["eps"]), str(s_["steps"]), str(s_.get("restarts", 1)),
              fmt_pct(s_["robust_accuracy"])] for lab, rows in per_model for s_ in rows]
    return [fig] + _table_pages("Iteration scaling: robust accuracy per attack budget",
                                ["model", "attack", "ε", "steps", "restarts", "robust acc"], cells, per_page=24,
                                col_widths=[0.34, 0.14, 0.1, 0.1, 0.1, 0.14])


def page_margins(results: Sequence[Results]) -> Any:
    nr, nc = _grid(len(results))
    fig, axes = _figure("Label-margin histograms, train and test ([AR-REG] Fig. 4)", nr, nc)
    for ax, lab, r in zip(axes.flat, labels(results), results):
        m = (r.get("analysis") or {}).get("margins") or {}
        edges = m.get("edges") or []
        for split, color in (("test", "tab:blue"), ("train", "tab:orange")):
            if m.get(split) is not None:
                total = max(sum(m[split]), 1)
                ax.stairs([c / total for c in m[split]], edges, label=f"{split} (mean {fmt_num(m.get(split + '_mean'))})",
                          color=color, lw=1.8)
        ax.axvline(0.0, color="grey", lw=0.8, ls=":")
        ax.set_xlabel("label margin y_label − max other logit (logit units)")
        ax.set_ylabel("share of points")
        ax.set_title(lab, fontsize=10)
        ax.legend(fontsize=8)
    _hide_unused(axes, len(results))
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    return fig


def page_singular_values(results: Sequence[Results]) -> Any:
    import numpy as np

    if not any((r.get("analysis") or {}).get("singular_values") for r in results):
        return None
    fig, axes = _figure("Std of each weight's singular values (kernel reshaped to out × rest; [AR-REG] Fig. 5)")
    ax = axes[0, 0]
    width = 0.8 / len(results)
    for k, (lab, r) in enumerate(zip(labels(results), results)):
        sv = (r.get("analysis") or {}).get("singular_values") or []
        ax.bar(np.arange(len(sv)) + k * width, [s["std"] for s in sv], width=width, label=lab)
    ax.set_xlabel("weight tensor (rank ≥ 2), in parameter order: 1 = first layer")
    longest = max(len((r.get("analysis") or {}).get("singular_values") or []) for r in results)
    ax.set_xticks(np.arange(longest) + 0.4 - width / 2, [str(i + 1) for i in range(longest)])
    ax.set_ylabel("std of singular values")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    return fig


def page_lipschitz(results: Sequence[Results]) -> Any:
    rows = []
    for lab, r in zip(labels(results), results):
        lip = r.get("lipschitz")
        if not lip:
            continue
        rows.append([lab, "global", "", fmt_num(lip.get("global_bound")), "",
                     "verified" if lip.get("verified") else "NOT verified"])
        for layer in lip.get("layers") or []:
            rows.append([lab, str(layer.get("name")), str(layer.get("op")), fmt_num(layer.get("bound")),
                         fmt_num(layer.get("estimate")), ""])
    if not rows:
        return None
    return _table_pages("Lipschitz bounds (sound bound and power-iteration estimate per layer)",
                        ["model", "layer", "op", "bound", "estimate", "status"], rows, per_page=24,
                        col_widths=[0.3, 0.16, 0.14, 0.12, 0.12, 0.14])


def page_tightness(results: Sequence[Results]) -> Any:
    pairs = []
    for lab, r in zip(labels(results), results):
        pe = (r.get("attack") or {}).get("per_example") or {}
        cert_pe = (r.get("certify") or {}).get("per_example") or pe
        if pe.get("min_adv_distance") and cert_pe.get("radius"):
            pairs.append((lab, r, cert_pe, pe))
    if not pairs:
        return None
    fig, axes = _figure("Certified radius against minimum adversarial distance (tightness)")
    ax = axes[0, 0]
    top = 0.0
    for lab, r, cert_pe, pe in pairs:
        pts = [(rad, d) for rad, d, y, p in zip(cert_pe["radius"], pe["min_adv_distance"], cert_pe["label"],
                                                cert_pe["prediction"])
               if rad is not None and d is not None and y == p]
        tight = (r.get("analysis") or {}).get("tightness") or {}
        ax.scatter([p[1] for p in pts], [p[0] for p in pts], s=6, alpha=0.5,
                   label=f"{lab} (median radius/d = {fmt_num(tight.get('median_ratio'))})")
        top = max([top] + [max(p) for p in pts])
    ax.plot([0, top], [0, top], color="black", lw=1, label="radius = d (tight)")
    ax.set_xlabel(f"minimum adversarial distance d(x), {distance_label(norm_of(pairs[0][1]))}")
    ax.set_ylabel("certified radius")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def page_flags(results: Sequence[Results]) -> Any:
    rows = [[lab, f"{section}: {fid}", _wrap(msg)] for lab, r in zip(labels(results), results)
            for section, fid, msg in all_flags(r)]
    rows += [[lab, "note", _wrap(n)] for lab, r in zip(labels(results), results) for n in r.get("notes") or []]
    if not rows:
        fig, axes = _figure("Flags raised and notes (see docs/flags.md)")
        axes[0, 0].axis("off")
        axes[0, 0].text(0.5, 0.5, "No flags raised.", ha="center", fontsize=14)
        return fig
    return _table_pages("Flags raised and notes (see docs/flags.md)", ["model", "flag", "detail"], rows,
                        per_page=16, col_widths=[0.2, 0.25, 0.55], fontsize=7.5, cell_loc="left", row_height=0.05)


def _wrap(text: str, width: int = 80) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(str(text), width))


PAGES: list[Callable[[Sequence[Results]], Any]] = [
    page_title, page_error_curves, page_certified_vs_empirical, page_certified_accuracy, page_gap_bins,
    page_hybrid, page_iteration_scaling, page_tightness, page_margins, page_singular_values, page_lipschitz,
    page_flags,
]
