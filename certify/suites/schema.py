"""The schema of suite and gate files, as data, and validation that names the key and its line.

:data:`SUITE_KEYS` (with :data:`MODEL_KEYS` and :data:`GATE_KEYS`) lists every key a suite may
hold: its accepted kinds (:data:`KINDS`), a doc line and its nested keys (after AutoAttack's flow,
without its if-chains).  :func:`validate` reports unknown keys with the valid ones, and type
errors with the key and its line.  Both :mod:`certify.suites.suite` and :mod:`certify.suites.gates`
read files through here, so neither imports the other for it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from ..defaults import SEED_MAX
from ..errors import BadInputError, short_repr
from ..threat import NORMS, Norm, parse_fraction


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


def _is_budget(v: Any) -> bool:
    from ..budget import parse_budget

    if not (isinstance(v, str) or (_is_int(v) and v >= 0)):
        return False
    try:
        parse_budget(str(v))
    except BadInputError:
        return False
    return True


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
    "norm": (" or ".join(NORMS), lambda v: _is_norm(v)),
    "list": ("a list", lambda v: isinstance(v, list)),
    "mapping": ("a mapping of keys to values", lambda v: isinstance(v, dict)),
    "eps-map": ("a mapping of ε to a threshold, like {0.1: 0.5}", lambda v: isinstance(v, dict)),
    "null": ("null", lambda v: v is None),
    "budget": ("a certificate budget: seconds like 30s, bound passes like 200, 0 (Lipschitz only) or unlimited",
               _is_budget),
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
    "norm": Field(("norm",), " or ".join(NORMS)),
    "eps": Field(("eps", "list"), "chosen ε (a value or a list)", items="eps"),
    "certify": Field(("bool", "mapping"), "false to skip; or {certificate, certificate_budget, lipschitz_constant, "
                     "assume_lipschitz}", keys={
                         "certificate": Field(("str",), "auto, l2-multi, l2-single or linf-dist"),
                         "certificate_budget": Field(("budget",), "auto: bound propagation (CROWN, α-CROWN) within "
                                                     "it after the Lipschitz certificate; default 0: Lipschitz only"),
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


def _is_norm(v: Any) -> bool:
    try:
        Norm.parse(v)
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

