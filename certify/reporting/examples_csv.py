"""Per-example CSV files: ``certify --per-example`` and ``attack --per-example``."""

from __future__ import annotations

import csv
import dataclasses
import io
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..results import ATTACK_EXAMPLE_COLUMNS, radius_method_names

if TYPE_CHECKING:
    from ..certificates import Examples


def examples_csv(ex: Examples, extra: dict[str, Sequence[Any]] | None = None) -> str:
    """CSV with ``index,label,prediction,gap,margin,radius`` (+ extra columns) of a certify run's ``Examples``."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    cols = [f.name for f in dataclasses.fields(ex)]
    extra = extra or {}
    w.writerow(cols + list(extra))
    from ..certificates.auto_plan import method_names

    arrays = [method_names(ex.radius_method) if c == "radius_method" else getattr(ex, c) for c in cols]
    arrays += [list(v) for v in extra.values()]
    for row in zip(*arrays):
        w.writerow([_cell(v) for v in row])
    return buf.getvalue()


def attack_examples_csv(report: Any) -> str:
    """CSV of :data:`certify.results.ATTACK_EXAMPLE_COLUMNS` of an attack run, with ``radius_method`` (the
    certificate that gave the radius, by name; empty where nothing certified the point) after ``radius``."""
    ex = report.examples
    cols = list(ATTACK_EXAMPLE_COLUMNS)
    at = cols.index("radius") + 1
    arrays = [getattr(ex, c) for c in cols]
    cols.insert(at, "radius_method")
    arrays.insert(at, radius_method_names(ex))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for row in zip(*arrays):
        w.writerow([_cell(v) for v in row])
    return buf.getvalue()


def _cell(v: Any) -> Any:
    if isinstance(v, (float, np.floating)):
        return repr(float(v))
    if isinstance(v, np.integer):
        return int(v)
    return v
