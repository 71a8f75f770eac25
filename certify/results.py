"""The results JSON: built, written, read and validated here, and nowhere else.

Every lipcert JSON starts with :func:`header` (``lipcert_version``, ``schema_version``,
``command``, ``argv``, ``created``, ``world_size``) and is made of plain JSON types (:func:`jsonable`:
NaN and ±inf become ``null``).  The kinds, by ``command``:

==================  ==========================  ==============================================
command             built by                    read back by
==================  ==========================  ==============================================
``certify``         :func:`certify_json`        ``report``, ``gate``, ``certify --resume``
``attack``          :func:`attack_json`         ``report``, ``gate``, ``attack --resume``
``analyze``/``run`` :func:`combined_json`       ``report``, ``gate`` (sections: certify,
                    (+ :func:`analysis_json`)   attack, lipschitz, analysis; see the README)
``lipschitz``       :func:`lipschitz_json`      a section of the combined JSON
``data-lipschitz``  :func:`data_lipschitz_json`
``demo``            :func:`demo_json`
``verify``          :func:`verify_json`         (VNN-LIB answers; one property or an instances.csv run)
==================  ==========================  ==============================================

:func:`read_results` is the one reader: it checks the schema version and the type and range of
every number (:data:`FRACTION_KEYS`, :data:`NONNEGATIVE_KEYS`, :data:`BOOL_KEYS`, :data:`NORM_KEYS`).
:func:`load_results` also wraps a bare certify or attack JSON into the combined shape, which is
what reports and gates read.  The renderers in :mod:`certify.reporting` only read these dicts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

from .errors import BadInputError, LipcertError, short_repr
from .threat import NORMS

if TYPE_CHECKING:
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
    """The text of a results JSON file (two-space indent, keys in the order built, UTF-8)."""
    return json.dumps(jsonable(data), indent=2, sort_keys=False, ensure_ascii=False) + "\n"


def write_results(data: Any, path: str | os.PathLike[str], out: Any = None) -> None:
    """Write a results JSON atomically to ``path``, or stage it in ``out`` (a :class:`certify.io.OutputSet`)."""
    from .io import write_text_atomic

    text = dumps(data)
    if out is not None:
        out.text(path, text)
    else:
        write_text_atomic(path, text)


def header(command: str, argv: Sequence[str] | None = None, world_size: int | None = None) -> dict[str, Any]:
    """The keys every lipcert JSON starts with; ``world_size``: the processes of the run (default: the
    initialised process group's, 1 without torchrun).  Nothing else in a document depends on it."""
    from ._version import __version__
    from .distributed import current_world

    size = current_world().world_size if world_size is None else int(world_size)
    return {"lipcert_version": __version__, "schema_version": JSON_SCHEMA_VERSION, "command": command,
            "argv": list(argv) if argv is not None else None, "created": timestamp(), "world_size": size}


def timestamp() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def flags_json(flags: Sequence[Flag]) -> list[dict[str, str]]:
    return [{"id": f.id, "message": f.message} for f in flags]


def examples_json(ex: Examples) -> dict[str, list[Any]]:
    """Per-example columns; ``radius_method`` by name (null where nothing certified the point)."""
    from .certificates.auto_plan import method_names

    out = {f.name: jsonable(getattr(ex, f.name)) for f in dataclasses.fields(ex)}
    out["radius_method"] = method_names(ex.radius_method)
    return out


def methods_json(ex: Any, plan: Any, eps: Sequence[float]) -> dict[str, Any]:
    """Which method certified how many points (by their largest radius) per ε, the methods and the budget.
    ``ex``: per-example rows with ``label``, ``prediction``, ``radius`` and ``radius_method``."""
    from .certificates.auto_plan import method_names

    names = np.array(method_names(ex.radius_method), dtype=object)
    rows = []
    for e in eps:
        got = names[(ex.label == ex.prediction) & (ex.radius > e)]  # strict: radius > ε (NaN → not)
        rows += [{"eps": e, "method": m, "certified_count": int((got == m).sum())}
                 for m in sorted(set(got.tolist()))]
    out: dict[str, Any] = {"certified_by": rows,
                           "certificate_methods": list(getattr(plan, "methods", (plan.certificate,)))}
    if getattr(plan, "budget", None) is not None:
        out["certificate_budget"] = plan.budget.as_dict()
        out["bound_propagation_skipped"] = plan.bounds_skipped
    return out


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
        **methods_json(report.examples, report.plan, [r.eps for r in report.results]),
        "flags": flags_json(report.flags),
        "partial": report.partial,
        "seed": report.seed,
        "seconds": report.seconds,
        "settings": dict(report.settings),
    }
    if per_example:
        out["per_example"] = examples_json(report.examples)
    return jsonable(out)


# --------------------------------------------------------------------------- attack

#: The per-example columns of an attack JSON (and of ``attack --per-example``), besides ``robust``.
ATTACK_EXAMPLE_COLUMNS = ("index", "label", "prediction", "gap", "margin", "radius", "min_adv_distance",
                          "min_adv_attack")


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
        "status": _status_rows(report),
        "certificates_checked": report.certificates_checked,
        **(methods_json(report.examples, plan, report.eps) if plan is not None else {}),
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
        out["per_example"]["radius_method"] = radius_method_names(ex)
        out["per_example"]["robust"] = jsonable(ex.robust)  # points × eps: worst-case robust (for resuming)
        # points × eps: certified, broken or open
        out["per_example"]["status"] = np.stack([ex.status(i, e) for i, e in enumerate(report.eps)], axis=1
                                                ).tolist() if len(ex) else []
    return jsonable(out)


def radius_method_names(ex: Any) -> list[str | None]:
    """Per point, the name of the certificate that gave its radius (None where nothing certified it)."""
    from .certificates.auto_plan import method_names

    return method_names(ex.radius_method) if ex.radius_method is not None else [None] * len(ex)


def _status_rows(report: Any) -> list[dict[str, Any]]:
    from attacks.report import status_counts

    return [{"eps": c.eps, "certified": c.certified, "broken": c.broken, "open": c.open, **c.shares()}
            for c in status_counts(report)]


def _attack_row(r: Any) -> dict[str, Any]:
    return {"attack": r.attack, "eps": r.eps, "steps": r.steps, "restarts": r.restarts,
            "robust_accuracy": r.robust_accuracy, "attacked": r.attacked, "successes": r.successes,
            "seconds": r.seconds}


# --------------------------------------------------------------------------- lipschitz, data-lipschitz, demo


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


def data_lipschitz_json(result: Any, data: dict[str, Any], argv: Sequence[str] | None = None) -> dict[str, Any]:
    """``lipcert data-lipschitz`` JSON: Lip₂,∞ of a dataset and its closest pair."""
    out = {**header("data-lipschitz", argv), "data": data,
           "lip_2_inf": result.lip_2_inf, "min_distance": result.min_distance,
           "closest_pair": [result.index_a, result.index_b], "candidates_rechecked": result.candidates_rechecked,
           "seconds": result.seconds}
    return jsonable(out)


def demo_json(report: Any, argv: Sequence[str] | None = None) -> dict[str, Any]:
    """``lipcert demo`` JSON: the fields of a :class:`certify.demo.DemoReport`."""
    return jsonable({**header("demo", argv), **{f.name: getattr(report, f.name) for f in dataclasses.fields(report)}})


# --------------------------------------------------------------------------- analyze / run (combined)

#: The sections of a combined results JSON.
RESULT_SECTIONS = ("certify", "attack", "lipschitz", "analysis")


def verify_json(result: Any = None, run: Any = None, argv: Sequence[str] | None = None) -> dict[str, Any]:
    """One property's :class:`~certify.vnnlib.verify.VerifyResult`, or an instances run's rows and counts."""
    out = header("verify", argv)
    if result is not None:
        out["result"] = result.to_dict()
    if run is not None:
        out["instances"] = [{"onnx": r.instance.onnx, "vnnlib": r.instance.vnnlib, "timeout": r.instance.timeout,
                             **r.result.to_dict()} for r in run.rows]
        out["counts"] = run.counts()
        out["seconds"] = run.seconds
    return jsonable(out)


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


# --------------------------------------------------------------------------- validation

#: Keys whose values, anywhere in a results JSON, are accuracies (or error rates) in [0, 1].
FRACTION_KEYS = frozenset({"clean_accuracy", "certified_accuracy", "robust_accuracy", "certified_error",
                           "empirical_error", "accuracy"})
#: Keys whose values are finite numbers ≥ 0.
NONNEGATIVE_KEYS = frozenset({"eps", "median_radius", "median_certified_radius", "median_adv_distance",
                              "lipschitz_constant", "global_bound", "seconds", "certified_count", "attacked",
                              "successes", "restarts", "n", "world_size"})
#: Keys whose values are true or false.
BOOL_KEYS = frozenset({"partial", "lipschitz_verified", "verified"})
#: Keys whose values name a norm (:data:`certify.threat.NORMS`).
NORM_KEYS = frozenset({"norm"})


def check_result_values(raw: Any, where: str, path: str = "", depth: int = 0, *, param: str = "path") -> None:
    """Type- and range-check the numbers of a results JSON; errors name ``where`` (the file) and the key."""
    if depth > 40:
        raise BadInputError(f"{where}: the results JSON is nested too deeply to be lipcert's", param=param)
    items = raw.items() if isinstance(raw, dict) else enumerate(raw) if isinstance(raw, list) else ()
    for key, value in items:
        here = f"{path}.{key}" if isinstance(key, str) else f"{path}[{key}]"
        if value is not None and isinstance(key, str):
            _check_value(key, value, where, here.lstrip("."), param)
        if isinstance(value, (dict, list)) and key not in ("per_example", "settings"):
            check_result_values(value, where, here, depth + 1, param=param)


def _check_value(key: str, value: Any, where: str, here: str, param: str) -> None:
    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    if isinstance(value, dict):  # a curve ({eps: [...], ...}): its own keys are checked by the caller
        return
    values = value if isinstance(value, list) else [value]
    edited = "the file is not lipcert's or was edited"
    if key in FRACTION_KEYS and not all(v is None or (number(v) and 0 <= v <= 1) for v in values):
        raise BadInputError(f"{where}: {here} must be a number from 0 to 1, got {short_repr(value, 40)}; {edited}",
                            param=param)
    if key in NONNEGATIVE_KEYS and not all(v is None or v == "inf" or (number(v) and v >= 0) for v in values):
        raise BadInputError(f"{where}: {here} must be a number ≥ 0, got {short_repr(value, 40)}; {edited}",
                            param=param)
    if key in BOOL_KEYS and not isinstance(value, bool):
        raise BadInputError(f"{where}: {here} must be true or false, got {short_repr(value, 40)}", param=param)
    if key in NORM_KEYS and value not in NORMS:
        raise BadInputError(f"{where}: {here} must be one of {', '.join(NORMS)}, got {short_repr(value, 40)}; "
                            f"{edited}", param=param)


def check_results(raw: Any, where: str = "results", *, param: str = "path") -> dict[str, Any]:
    """A results JSON as parsed: an object with a ``command``, this schema version, sound values."""
    if not isinstance(raw, dict) or "command" not in raw:
        raise BadInputError(f"{where}: expected a lipcert results JSON object with a 'command' key", param=param)
    version = raw.get("schema_version", JSON_SCHEMA_VERSION)
    if version != JSON_SCHEMA_VERSION:
        raise BadInputError(f"{where}: written with schema_version {short_repr(version, 40)}, this lipcert reads "
                            f"schema_version {JSON_SCHEMA_VERSION}; rerun the lipcert command with this version",
                            param=param)
    check_result_values(raw, str(where), param=param)
    return raw


def wrap_results(raw: Any, where: str = "results", *, param: str = "path") -> dict[str, Any]:
    """Accept a combined JSON, or a bare certify/attack JSON (wrapped into the combined shape)."""
    return _combined(check_results(raw, where, param=param), where, param)


def _combined(raw: dict[str, Any], where: str, param: str) -> dict[str, Any]:
    cmd = raw["command"]
    if cmd in ("analyze", "run"):
        return raw
    if cmd not in ("certify", "attack"):
        raise BadInputError(f"{where}: cannot read results of command {cmd!r}; expected analyze, run, certify or attack",
                            param=param)
    wrapped = combined_json(command=cmd, seed=raw.get("seed"), model=raw.get("model") or {},
                            data=raw.get("data") or {}, partial=bool(raw.get("partial")),
                            **{cmd: raw})
    wrapped["created"] = raw.get("created")
    wrapped["world_size"] = raw.get("world_size")
    return wrapped


def read_results(path: str, *, param: str = "path") -> dict[str, Any]:
    """Read a results JSON file of any command, as written, after :func:`check_results`.

    Errors name the file; ``param`` names the argument that gave it (the CLI puts its flag there).
    """
    from pathlib import Path

    p = Path(path)
    if not p.is_file():
        raise BadInputError(f"results file {path!r} does not exist; give a results JSON that lipcert wrote",
                            param=param)
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BadInputError(f"results file {path!r} is not valid JSON ({err})", param=param) from None
    return check_results(raw, path, param=param)


def load_results(path: str, *, param: str = "path") -> dict[str, Any]:
    """Read a results JSON file (combined or bare) into the combined shape."""
    return _combined(read_results(path, param=param), path, param)


@contextlib.contextmanager
def malformed_results(where: str) -> Iterator[None]:
    """Reading, gating or rendering results JSONs someone may have edited: a wrong type or a missing key
    deep inside is bad input (exit 2 naming the files), not an internal error."""
    try:
        yield
    except LipcertError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, ZeroDivisionError, OverflowError) as err:
        detail = short_repr(str(err), 80)[1:-1]
        raise BadInputError(f"results {short_repr(where, 120)[1:-1]}: malformed lipcert results "
                            f"({type(err).__name__}: {detail}); give JSON files written by lipcert") from err
