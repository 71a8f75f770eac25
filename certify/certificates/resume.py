"""Resuming an interrupted ``certify`` run: the settings it must share, and its rows read and checked.

A partial's rows are verified, not trusted: :func:`certify.certify` recomputes them and they must
agree (a certify pass is one forward pass, so what a resume gives is a checked partial).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from ..checkpoints import LoadedModel
from ..data import Dataset
from ..errors import BadInputError, short_repr
from .clean_pass import Examples


@dataclass(frozen=True)
class CertifyResume:
    """A partial certify run: its settings block and its per-example rows (checked, then recomputed)."""

    settings: Mapping[str, Any]
    examples: Examples

    def __len__(self) -> int:
        return len(self.examples)


def certify_settings(model: LoadedModel, data: Dataset, *, norm: str, eps: Sequence[float], certificate: str,
                     lipschitz_constant: float | None, assume_lipschitz: bool, seed: int | None,
                     certificate_budget: str | None = None) -> dict[str, Any]:
    """Everything a resumed certify run must share with the partial one (the budget only for ``auto``)."""
    budget = {"certificate_budget": certificate_budget} if certificate == "auto" and certificate_budget else {}
    return {"command": "certify", "model_sha256": model.sha256, "data_source": data.source, "data_split": data.split,
            "data_total": len(data), "norm": norm, "eps": [float(e) for e in eps], "certificate": certificate,
            "lipschitz_constant": lipschitz_constant, "assume_lipschitz": bool(assume_lipschitz), "seed": seed, **budget}


def check_resume_settings(old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    """Refuse a partial whose settings block differs from this run's (exit 2, naming the first difference)."""
    for key, value in new.items():
        if old.get(key) != value:
            label = key.replace("_", " ")
            raise BadInputError(f"resume: the partial results have {label} {short_repr(old.get(key), 70)}, "
                                f"this run has {short_repr(value, 70)}; resume with the same settings or rerun",
                                param="resume")


def check_resumed_rows(old: Examples, new: Examples, timed: bool = False) -> None:
    """The partial's rows must be the ones this run recomputes (index order, labels, predictions, radii).

    ``timed`` (auto under a time budget): a radius that bound propagation gave in either run may differ,
    since how many points a time budget affords depends on the machine; the run keeps the radius it
    recomputed, which is sound either way.
    """
    n = min(len(old), len(new))  # a resumed run may itself be interrupted before it catches up
    for name in ("index", "label", "prediction"):
        a, b = getattr(old, name)[:n], getattr(new, name)[:n]
        bad = np.flatnonzero(a != b)
        if bad.size:
            i = int(bad[0])
            raise BadInputError(f"resume: row {i} of the partial results has {name} {int(a[i])}, but this model "
                                f"and data give {int(b[i])}; the partial is from another run or was edited",
                                param="resume")
    from .auto_plan import method_code

    bounds = [method_code(m) for m in ("ibp", "crown", "alpha-crown")]
    budgeted = timed & (np.isin(old.radius_method[:n], bounds) | np.isin(new.radius_method[:n], bounds))
    for name in ("gap", "margin", "radius"):
        a, b = getattr(old, name)[:n], getattr(new, name)[:n]
        same = np.isclose(a, b, rtol=1e-5, atol=1e-6) | ((a == b) & np.isinf(a))
        if name == "radius":
            same |= budgeted
        bad = np.flatnonzero(~same)
        if bad.size:
            i = int(bad[0])
            raise BadInputError(f"resume: row {i} of the partial results has {name} {a[i]:.6g}, but recomputing "
                                f"it gives {b[i]:.6g}; the partial is from another run or was edited", param="resume")


def resume_examples(results: dict, model: LoadedModel, data: Dataset, norm: str) -> CertifyResume:
    """A partial certify JSON, read and shape-checked (its settings and rows are checked by :func:`certify`)."""
    if not isinstance(results, dict) or results.get("command") != "certify":
        raise BadInputError("resume expects the JSON of a partial 'lipcert certify' run", param="resume")
    model_info = results.get("model") if isinstance(results.get("model"), dict) else {}
    if model_info.get("sha256") != model.sha256:
        raise BadInputError(f"resume: the partial results have model sha256 {short_repr(model_info.get('sha256'))}, "
                            f"this run has {model.sha256!r}", param="resume")
    settings = results.get("settings")
    if not isinstance(settings, dict):
        raise BadInputError("resume: the JSON has no 'settings' block (written by an older lipcert?); rerun",
                            param="resume")
    pe = results.get("per_example")
    if not isinstance(pe, dict):
        raise BadInputError("resume: the JSON has no per_example records to resume from", param="resume")
    return CertifyResume(settings=settings, examples=_read_rows(pe, len(data)))


def _read_rows(pe: dict, total: int) -> Examples:
    """Per-example columns: all present, one-dimensional, of one length, finite where they must be."""
    dtypes = {"index": np.int64, "label": np.int64, "prediction": np.int64}
    cols = {}
    for k in ("index", "label", "prediction", "gap", "margin", "radius"):
        value = pe.get(k)
        if not isinstance(value, list):
            raise BadInputError(f"resume: per_example {k!r} must be a list, got {short_repr(value)}",
                            param="resume")
        try:
            arr = np.array([np.inf if v is None and k == "radius" else v for v in value], dtype=np.float64)
        except (TypeError, ValueError, OverflowError):
            raise BadInputError(f"resume: per_example {k!r} must hold numbers only", param="resume") from None
        if arr.ndim != 1:
            raise BadInputError(f"resume: per_example {k!r} must be a flat list of numbers", param="resume")
        if k in dtypes:
            if not (np.isfinite(arr).all() and (arr == np.round(arr)).all() and (np.abs(arr) < 2**53).all()):
                raise BadInputError(f"resume: per_example {k!r} must hold integers", param="resume")
            arr = arr.astype(dtypes[k])
        cols[k] = arr
    lengths = {k: len(v) for k, v in cols.items()}
    if len(set(lengths.values())) != 1:
        raise BadInputError(f"resume: per_example lists have different lengths {lengths}; the file is damaged",
                            param="resume")
    n = lengths["index"]
    if n > total:
        raise BadInputError(f"resume: the partial results hold {n} examples but the data has {total}",
                            param="resume")
    if not np.array_equal(cols["index"], np.arange(n)):
        raise BadInputError("resume: per_example 'index' must be 0, 1, 2, … in order; the file was edited",
                            param="resume")
    if (cols["radius"] < 0).any() or np.isnan(cols["radius"]).any():
        raise BadInputError("resume: per_example 'radius' holds a negative or NaN radius; the file was edited",
                            param="resume")
    return Examples(**cols, radius_method=_read_methods(pe.get("radius_method"), n))


def _read_methods(names: Any, n: int) -> np.ndarray:
    """Per-example method codes from their names (a partial from before the column: −1, unknown)."""
    from .auto_plan import RADIUS_METHODS

    if names is None:
        return np.full(n, -1, dtype=np.int64)
    if not isinstance(names, list) or len(names) != n or any(v is not None and v not in RADIUS_METHODS for v in names):
        raise BadInputError(f"resume: per_example 'radius_method' must list {n} names from {RADIUS_METHODS} or "
                            "null; the file was edited", param="resume")
    return np.array([-1 if v is None else RADIUS_METHODS.index(v) for v in names], dtype=np.int64)
