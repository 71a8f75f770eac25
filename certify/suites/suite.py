"""YAML suites (``lipcert run suite.yaml``): schema, validation with line numbers, runner.

A suite names the model(s), data, norm and ε, what to run (certificate,
attacks, Lipschitz analyser, analyses), where to write JSON/PDF/Markdown,
and the gates.  The schema is data (:data:`SUITE_SCHEMA`, after AutoAttack's
flow without its if-chains); unknown keys are listed with the valid ones and type errors name the key
and its line.  Precedence: CLI options > suite file > :mod:`certify.defaults`.
Relative paths are taken from the current directory (where CI runs).

Example::

    model: examples/models/fmnist_l2nnn.pt2
    data: {source: fashion-mnist, limit: 1000}
    norm: l2
    eps: [0.1, 0.3]
    attacks: {names: [pgd, ddn], steps: [100]}
    gates:
      min_clean_accuracy: 0.8
      min_certified_accuracy: {0.1: 0.6}
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..defaults import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CERTIFICATE,
    DEFAULT_DEVICE,
    DEFAULT_SEED,
    DEFAULT_SPLIT,
    HYBRID_DELEGATE_ACCURACY,
    SEED_MAX,
)
from ..errors import BadInputError, short_repr
from ..threat import parse_fraction

# --------------------------------------------------------------------------- schema as data


@dataclass(frozen=True)
class Field:
    """One key of the schema: accepted kinds (see :data:`KINDS`), a doc line, and nested keys."""

    kinds: tuple[str, ...]
    doc: str
    keys: Mapping[str, "Field"] | None = None  #: for kind "mapping"
    items: str | None = None  #: kind of list items
    values: str | None = None  #: kind of "eps-map" values


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


KINDS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "str": ("a string", lambda v: isinstance(v, str)),
    "bool": ("true or false", lambda v: isinstance(v, bool)),
    "int": ("an integer", _is_int),
    "positive-int": ("an integer ≥ 1", lambda v: _is_int(v) and 1 <= v <= 2**31),
    "count": ("an integer ≥ 0", lambda v: _is_int(v) and 0 <= v <= 2**31),
    "seed": (f"an integer from 0 to {SEED_MAX}", lambda v: _is_int(v) and 0 <= v <= SEED_MAX),
    "number": ("a finite number", _is_number),
    "fraction": ("a number from 0 to 1 (an accuracy, not a percentage)", lambda v: _is_number(v) and 0 <= v <= 1),
    "positive": ("a positive finite number", lambda v: _is_number(v) and v > 0),
    "eps": ("a number or a fraction like 8/255", lambda v: _is_eps(v)),
    "list": ("a list", lambda v: isinstance(v, list)),
    "mapping": ("a mapping of keys to values", lambda v: isinstance(v, dict)),
    "eps-map": ("a mapping of ε to a threshold, like {0.1: 0.5}", lambda v: isinstance(v, dict)),
    "null": ("null", lambda v: v is None),
}

MODEL_KEYS = {
    "path": Field(("str",), "checkpoint path"),
    "name": Field(("str",), "column name in reports (default: file stem)"),
    "arch": Field(("str",), "architecture for state_dict/safetensors: module:Class or spec.yaml"),
    "arch_kwargs": Field(("mapping",), "keyword arguments for arch"),
    "trust_checkpoint": Field(("bool",), "allow arbitrary pickles"),
    "trust_modules": Field(("list",), "modules whose nn.Module classes the checkpoint may name", items="str"),
}
GATE_KEYS = {
    "min_clean_accuracy": Field(("fraction",), "fail when clean accuracy is lower"),
    "min_certified_accuracy": Field(("eps-map",), "{ε: minimum certified accuracy}", values="fraction"),
    "min_robust_accuracy": Field(("eps-map",), "{ε: minimum robust (attacked) accuracy}", values="fraction"),
    "max_lipschitz_bound": Field(("positive",), "fail when the verified bound of the whole logit vector is larger"),
    "max_per_logit_lipschitz": Field(("positive",), "fail when a verified bound of one logit is larger"),
    "max_certificate_violations": Field(("count", "null"), "default 0: any attack inside a certified radius fails"),
    "forbid_flags": Field(("list", "str"), "flag IDs that fail the gate ('all' for any flag)", items="str"),
    "baseline": Field(("mapping",), "compare with a previous results JSON", keys={
        "path": Field(("str",), "baseline results JSON"),
        "max_drop": Field(("fraction",), "allowed drop of each accuracy (absolute, 0..1)"),
        "noise_tolerance": Field(("fraction",), "extra allowance for sampling noise (absolute, 0..1)"),
    }),
}
SUITE_KEYS = {
    "model": Field(("str", "mapping"), "one model: a path or {path, name, arch, ...}", keys=MODEL_KEYS),
    "models": Field(("list",), "several models: paths or {path, name, arch, ...}", items="model"),
    "data": Field(("str", "mapping"), "a data source, or {source, root, split, limit}", keys={
        "source": Field(("str",), "fashion-mnist, mnist, demo, an idx dir, .npz, ..."),
        "root": Field(("str",), "root directory for named datasets"),
        "split": Field(("str",), "train or test"),
        "limit": Field(("positive-int",), "use only the first N examples"),
    }),
    "norm": Field(("str",), "l2 or linf"),
    "eps": Field(("eps", "list"), "chosen ε (a value or a list)", items="eps"),
    "certify": Field(("bool", "mapping"), "false to skip; or {certificate, lipschitz_constant, assume_lipschitz}",
                     keys={
                         "certificate": Field(("str",), "auto, l2-multi, l2-single or linf-dist"),
                         "lipschitz_constant": Field(("positive",), "Lipschitz constant L"),
                         "assume_lipschitz": Field(("bool",), "certify under an unverified property"),
                     }),
    "attacks": Field(("bool", "list", "mapping"), "false to skip; a list of names; or {names, steps, restarts}",
                     items="str", keys={
                         "names": Field(("list",), "attack names from the registry", items="str"),
                         "steps": Field(("positive-int", "list"), "iterations (a list gives iteration scaling)",
                                        items="positive-int"),
                         "restarts": Field(("positive-int",), "random restarts"),
                     }),
    "lipschitz": Field(("bool",), "run the Lipschitz analyser (default true)"),
    "analysis": Field(("mapping",), "{train_margins, delegate_accuracy}", keys={
        "train_margins": Field(("bool",), "histogram label margins on the train split too"),
        "delegate_accuracy": Field(("fraction",), "hybrid curve: accuracy assumed on delegated points"),
    }),
    "output": Field(("str", "mapping"), "JSON path ({name} = model name), or {json}", keys={
        "json": Field(("str",), "results JSON path; {name} is replaced by the model name"),
    }),
    "report": Field(("mapping",), "{pdf, md}", keys={
        "pdf": Field(("str",), "PDF report path"),
        "md": Field(("str",), "Markdown summary path"),
    }),
    "gates": Field(("mapping",), "thresholds (see lipcert gate)", keys=GATE_KEYS),
    "seed": Field(("seed",), "random seed"),
    "device": Field(("str",), "auto, cpu or cuda"),
    "batch_size": Field(("positive-int",), "batch size"),
}


def _is_eps(v: Any) -> bool:
    try:
        parse_fraction(v)
    except BadInputError:
        return False
    return True




# --------------------------------------------------------------------------- validation with line numbers


def load_yaml_nodes(path: str | os.PathLike[str]) -> tuple[Any, Any]:
    """(composed node, constructed value) of a YAML file; syntax errors name the line."""
    import yaml

    from ..io import load_yaml_file

    load_yaml_file(path)  # existence and syntax errors, with line numbers
    loader = yaml.SafeLoader(Path(path).read_text(encoding="utf-8"))
    try:
        node = loader.get_single_node()
        value = loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()
    return node, value


def validate(node: Any, value: Any, keys: Mapping[str, Field], where: str, path: str = "") -> None:
    """Check a mapping against ``keys``: unknown keys, then the kinds of the known ones."""
    import yaml

    if not isinstance(node, yaml.MappingNode) or not isinstance(value, dict):
        raise BadInputError(f"{where}: line {_line(node)}: {path or 'the file'} must be a mapping of keys")
    for key_node, val_node in node.value:
        key = key_node.value
        full = f"{path}.{key}" if path else str(key)
        if key not in keys:
            raise BadInputError(f"{where}: line {_line(key_node)}: unknown key '{full}'; valid keys: "
                                f"{', '.join(sorted(keys))}")
        _check(val_node, value[key], keys[key], where, full)


def _check(node: Any, value: Any, spec: Field, where: str, path: str) -> None:
    import yaml

    kind = next((k for k in spec.kinds if KINDS[k][1](value)), None)
    if kind is None:
        expected = " or ".join(KINDS[k][0] for k in spec.kinds)
        raise BadInputError(f"{where}: line {_line(node)}: key '{path}' must be {expected}, "
                            f"got {_describe(value)}")
    if kind == "mapping" and spec.keys is not None:
        validate(node, value, spec.keys, where, path)
    elif kind == "list" and spec.items is not None:
        for i, (item_node, item) in enumerate(zip(node.value, value)):
            if spec.items == "model":
                _check(item_node, item, SUITE_KEYS["model"], where, f"{path}[{i}]")
            else:
                _check(item_node, item, Field((spec.items,), ""), where, f"{path}[{i}]")
    elif kind == "eps-map" and isinstance(node, yaml.MappingNode):
        for key_node, val_node in node.value:
            eps_key = _scalar(key_node)
            if not _is_eps(eps_key):
                raise BadInputError(f"{where}: line {_line(key_node)}: key '{path}' needs ε keys like 0.1 or "
                                    f"8/255, got {short_repr(key_node.value)}")
            _check(val_node, _scalar(val_node), Field((spec.values or "number",), ""), where,
                   f"{path}.{key_node.value}")


def _scalar(node: Any) -> Any:
    import yaml

    if not isinstance(node, yaml.ScalarNode):
        return node
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node)
    finally:
        loader.dispose()


def _line(node: Any) -> int:
    return int(node.start_mark.line) + 1 if node is not None and getattr(node, "start_mark", None) else 1


def _describe(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
             dict: "a mapping", type(None): "null"}
    text = short_repr(value, 40)  # never the whole value: an alias bomb would take gigabytes
    return f"{names.get(type(value), type(value).__name__)} {text}" if value is not None else "null"


# --------------------------------------------------------------------------- the suite as data


@dataclass(frozen=True)
class ModelSpec:
    path: str
    name: str
    arch: str | None = None
    arch_kwargs: Mapping[str, Any] = field(default_factory=dict)
    trust_checkpoint: bool = False
    trust_modules: tuple[str, ...] = ()


@dataclass(frozen=True)
class Suite:
    """A validated suite; every field already has its default or override applied."""

    models: tuple[ModelSpec, ...]
    data_source: str | None
    data_root: str | None
    split: str
    limit: int | None
    norm: str
    eps: tuple[float, ...] | None
    certify: bool
    certificate: str
    lipschitz_constant: float | None
    assume_lipschitz: bool
    attacks: tuple[str, ...] | None  #: () = skip, None = the norm's defaults
    steps: tuple[int, ...]
    restarts: int
    lipschitz: bool
    train_margins: bool
    delegate_accuracy: float
    json_path: str | None
    pdf_path: str | None
    md_path: str | None
    gates: Mapping[str, Any] | None
    seed: int
    device: str
    batch_size: int
    source: str = ""  #: the suite file


def load_suite(path: str | os.PathLike[str], overrides: Mapping[str, Any] | None = None) -> Suite:
    """Read, validate and apply ``overrides`` (CLI options; None values are ignored)."""
    node, raw = load_yaml_nodes(path)
    where = str(path)
    if raw is None:
        raise BadInputError(f"{where}: the suite is empty; give at least 'model' and 'norm'")
    validate(node, raw, SUITE_KEYS, where)
    return suite_from_dict(raw, where, overrides or {})


def suite_from_dict(raw: Mapping[str, Any], where: str, overrides: Mapping[str, Any]) -> Suite:
    ov = {k: v for k, v in overrides.items() if v is not None}
    models = _models(raw, where)
    data = raw.get("data") or {}
    data = {"source": data} if isinstance(data, str) else data
    cert = raw.get("certify", True)
    cert_cfg = cert if isinstance(cert, dict) else {}
    attacks, steps, restarts = _attacks(raw.get("attacks"))
    analysis = raw.get("analysis") or {}
    output = raw.get("output") or {}
    output = {"json": output} if isinstance(output, str) else output
    report = raw.get("report") or {}
    norm = ov.get("norm", raw.get("norm"))
    if norm not in ("l2", "linf"):
        raise BadInputError(f"{where}: 'norm' must be l2 or linf (in the suite or with --norm), got {short_repr(norm)}")
    eps = ov.get("eps", raw.get("eps"))
    return Suite(
        models=models, data_source=ov.get("data_source", data.get("source")),
        data_root=ov.get("data_root", data.get("root")), split=ov.get("split", data.get("split", DEFAULT_SPLIT)),
        limit=ov.get("limit", data.get("limit")), norm=norm, eps=_eps(eps),
        certify=cert is not False, certificate=cert_cfg.get("certificate", DEFAULT_CERTIFICATE),
        lipschitz_constant=cert_cfg.get("lipschitz_constant"),
        assume_lipschitz=bool(cert_cfg.get("assume_lipschitz", False)),
        attacks=ov.get("attacks", attacks), steps=tuple(ov.get("steps", steps)), restarts=ov.get("restarts", restarts),
        lipschitz=bool(raw.get("lipschitz", True)), train_margins=bool(analysis.get("train_margins", False)),
        delegate_accuracy=float(analysis.get("delegate_accuracy", HYBRID_DELEGATE_ACCURACY)),
        json_path=ov.get("json_path", output.get("json")), pdf_path=ov.get("pdf_path", report.get("pdf")),
        md_path=ov.get("md_path", report.get("md")), gates=raw.get("gates"),
        seed=ov.get("seed", raw.get("seed", DEFAULT_SEED)), device=ov.get("device", raw.get("device", DEFAULT_DEVICE)),
        batch_size=ov.get("batch_size", raw.get("batch_size", DEFAULT_BATCH_SIZE)), source=where)


def _models(raw: Mapping[str, Any], where: str) -> tuple[ModelSpec, ...]:
    if ("model" in raw) == ("models" in raw):
        raise BadInputError(f"{where}: give exactly one of 'model' (one) or 'models' (a list)")
    entries = [raw["model"]] if "model" in raw else list(raw["models"])
    if not entries:
        raise BadInputError(f"{where}: 'models' is empty; list at least one model")
    specs = []
    for e in entries:
        e = {"path": e} if isinstance(e, str) else dict(e)
        if "path" not in e:
            raise BadInputError(f"{where}: every model needs a 'path'; valid keys: {', '.join(sorted(MODEL_KEYS))}")
        e.setdefault("name", Path(e["path"]).stem)
        e["trust_modules"] = tuple(e.get("trust_modules") or ())
        specs.append(ModelSpec(**e))
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise BadInputError(f"{where}: model names must differ, got {short_repr(names)}; set 'name' for each model")
    return tuple(specs)


def _attacks(value: Any) -> tuple[tuple[str, ...] | None, tuple[int, ...], int]:
    if value is False:
        return (), (100,), 1
    if value is None or value is True:
        return None, (100,), 1
    if isinstance(value, list):
        return tuple(value), (100,), 1
    steps = value.get("steps", [100])
    steps = [steps] if isinstance(steps, int) else steps
    names = value.get("names")
    return (tuple(names) if names is not None else None), tuple(steps), int(value.get("restarts", 1))


def _eps(value: Any) -> tuple[float, ...] | None:
    if value is None:
        return None
    values = value if isinstance(value, (list, tuple)) else [value]
    out = []
    for v in values:
        e = parse_fraction(v)
        if not (e >= 0 and math.isfinite(e)):
            raise BadInputError(f"ε must be ≥ 0 and finite, got {v!r}")
        out.append(e)
    return tuple(out)


# --------------------------------------------------------------------------- running


@dataclass(frozen=True)
class SuiteRun:
    """What a suite produced: one combined results dict per model, and gate reports when gates are set."""

    suite: Suite
    results: tuple[dict[str, Any], ...]
    gates: tuple[Any, ...]  #: GateReport per model (empty without gates)

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)


def run_suite(suite: Suite, *, argv: Sequence[str] | None = None,
              progress: Callable[[int, int], None] | None = None) -> SuiteRun:
    """Run every model of the suite (certify, attacks, Lipschitz, analyses) and evaluate its gates."""
    from ..checkpoints.loading import load_architecture, load_model
    from ..data import load_dataset
    from ..device import resolve_device, seed_everything
    from .gates import evaluate_gates, gate_config
    from ..pipeline import AnalyzeOptions, analyze

    dev = resolve_device(suite.device)
    config = gate_config(suite.gates, suite.source) if suite.gates is not None else None
    results, reports = [], []
    for spec in suite.models:
        seed_everything(suite.seed)
        model = load_model(spec.path, arch=load_architecture(spec.arch, dict(spec.arch_kwargs)),
                           trust_checkpoint=spec.trust_checkpoint, trusted_modules=spec.trust_modules, device=dev)
        source = suite.data_source or model.metadata.dataset
        if source is None:
            raise BadInputError(f"{suite.source}: no data given and model {spec.name!r} names no dataset; "
                                "add 'data: {source: ...}'")
        data = load_dataset(source, split=suite.split, data_root=suite.data_root, limit=suite.limit)
        train = _train(source, suite) if suite.train_margins else None
        opts = AnalyzeOptions(norm=suite.norm, eps=suite.eps, attacks=suite.attacks, steps=suite.steps,
                              restarts=suite.restarts, certificate=suite.certificate if suite.certify else "none",
                              lipschitz_constant=suite.lipschitz_constant, assume_lipschitz=suite.assume_lipschitz,
                              lipschitz=suite.lipschitz, delegate_accuracy=suite.delegate_accuracy,
                              batch_size=suite.batch_size, device=dev, seed=suite.seed,
                              argv=tuple(argv) if argv is not None else None)
        res = analyze(model, data, opts, train_data=train, command="run", name=spec.name, progress=progress)
        results.append(res)
        if res.get("partial"):  # interrupted: no further models, no gate on partial results
            break
        if config is not None:
            reports.append(evaluate_gates(res, config, name=spec.name))
    return SuiteRun(suite, tuple(results), tuple(reports))


def _train(source: str, suite: Suite) -> Any:
    from ..data import load_dataset
    from ..defaults import TRAIN_MARGIN_LIMIT

    try:
        return load_dataset(source, split="train", data_root=suite.data_root, limit=TRAIN_MARGIN_LIMIT)
    except BadInputError:
        return None


def json_paths(suite: Suite) -> list[str]:
    """Where each model's results JSON goes ({name} replaced; several models get their name added)."""
    template = suite.json_path or "lipcert-{name}.json"
    out = []
    for spec in suite.models:
        if "{name}" in template:
            out.append(template.replace("{name}", spec.name))
        elif len(suite.models) > 1:
            p = Path(template)
            out.append(str(p.with_name(f"{p.stem}-{spec.name}{p.suffix}")))
        else:
            out.append(template)
    return out


def with_overrides(suite: Suite, **changes: Any) -> Suite:
    return dataclasses.replace(suite, **{k: v for k, v in changes.items() if v is not None})
