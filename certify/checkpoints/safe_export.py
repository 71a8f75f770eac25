"""Reading a torch.export archive (``.pt2``) without running code from it.

``torch.export.load`` is not safe on untrusted files: it unpickles some
members with ``weights_only=False`` (pickled weights and constants, and the
sample inputs when the safe unpickler refuses them), loads custom and opaque
objects with plain ``pickle``, loads AOTInductor shared libraries, passes
expression strings to ``sympy.sympify`` (which calls ``eval``) and turns
``guards_code`` strings into Python source.  So before torch sees the file,
:func:`validate_archive` checks, from the bytes alone:

* every zip member's CRC (a damaged archive is refused, not half-loaded);
* every member name against an allow-list of the plain pt2 layout (one root
  folder; weights, constants configs, one model, sample inputs, extra files);
  AOTInductor, ExecuTorch, custom/opaque objects and legacy pickles are refused;
* weight and constant configs: no ``use_pickle`` entries;
* the graph: every call target is on an allow-list of op namespaces
  (``aten``, ``prims``, ``_operator``, ``math``, ``torch.sym_*``); every
  symbolic expression uses only a small grammar of sympy names; no
  ``guards_code``.

:func:`load_archive` then calls ``torch.export.load`` with ``torch.load``
forced to ``weights_only=True`` and plain unpickling disabled, as a second
line of defence.  That patch changes module attributes for the duration of the
call, so it holds a lock and is **not safe against other threads** calling
``torch.load`` at the same moment.
"""

from __future__ import annotations

import json
import re
import threading
import zipfile
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ..errors import BadInputError, UnsafeCheckpointError

#: Member names (below the archive's one root folder) a plain pt2 may hold.
_ALLOWED_MEMBERS = re.compile(
    r"(archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id"
    r"|models/model\.json|data/sample_inputs/model\.pt"
    r"|data/weights/model_weights_config\.json|data/weights/weight_\d+"
    r"|data/constants/model_constants_config\.json|data/constants/tensor_\d+"
    r"|extra/[A-Za-z0-9_.\-]+)"
)
#: Call targets a graph may name (prefixes of the serialized target string).
_ALLOWED_TARGET_PREFIXES = ("torch.ops.aten.", "torch.ops.prims.", "_operator.", "math.",
                            "torch.sym_", "torch._sym_")
#: Names a sympy expression string may use; everything else is refused.
_SYMPY_NAMES = frozenset({
    "Symbol", "Integer", "Rational", "Float", "Max", "Min", "Mod", "FloorDiv", "CeilDiv", "CleanDiv",
    "PythonMod", "ModularIndexing", "CeilToInt", "FloorToInt", "IntTrueDiv", "FloatTrueDiv", "TruncToInt",
    "Abs", "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "And", "Or", "Not", "Where", "oo", "zoo", "nan",
    "True", "False", "positive", "integer", "real", "nonnegative", "finite", "infinite",
})
_SYMBOL = re.compile(r"[a-z]{1,2}\d+\Z")
_EXPR_CHARS = re.compile(r"[A-Za-z0-9_ +\-*/(),=<>!%.'\"]*\Z")
_EXPR_MAX = 2000
_LOAD_LOCK = threading.Lock()


def _refuse(path: Path, why: str) -> UnsafeCheckpointError:
    return UnsafeCheckpointError(
        f"torch.export archive {str(path)!r} {why}; lipcert will not load it, because that could run code. "
        "Re-export the model with torch.export.save, or load it with trust_checkpoint if you trust its source",
        param="trust_checkpoint")


def validate_archive(path: Path) -> None:
    """Refuse (see module docs) anything but a plain, intact pt2 archive."""
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
            names = zf.namelist()
            if bad is not None:
                raise BadInputError(f"torch.export archive {str(path)!r}: member {bad!r} fails its CRC check; "
                                    "the file is damaged, copy or re-save it")
            rel = _relative_names(path, names)
            _check_members(path, rel)
            root = names[0].split("/", 1)[0] + "/"
            configs = [root + n for n in rel if n.endswith("_config.json")]
            for name in configs:
                _check_payload_config(path, name, _read_json(zf, name, path))
            graph = _read_json(zf, root + "models/model.json", path)
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, zlib.error) as err:
        raise BadInputError(f"torch.export archive {str(path)!r} is damaged ({str(err)[:120]}); re-save it") from err
    _check_graph(path, graph)


def _relative_names(path: Path, names: list[str]) -> list[str]:
    if len(set(names)) != len(names):  # two readers could pick different copies of one name
        raise _refuse(path, "holds two members with the same name")
    roots = {n.split("/", 1)[0] for n in names}
    if len(roots) != 1 or any("/" not in n for n in names):
        raise _refuse(path, "does not have the single root folder of torch.export.save")
    return [n.split("/", 1)[1] for n in names]


def _check_members(path: Path, rel: list[str]) -> None:
    for name in rel:
        if not _ALLOWED_MEMBERS.fullmatch(name):
            raise _refuse(path, f"holds member {name[:80]!r}, which is not part of a plain torch.export program")
    if "models/model.json" not in rel:
        raise BadInputError(f"torch.export archive {str(path)!r} has no models/model.json; re-save it")


def _read_json(zf: zipfile.ZipFile, name: str, path: Path) -> Any:
    try:
        return json.loads(zf.read(name))
    except (KeyError, ValueError, UnicodeDecodeError) as err:
        raise BadInputError(f"torch.export archive {str(path)!r}: {name.split('/', 1)[-1]!r} is not valid JSON "
                            f"({str(err)[:80]}); re-save it") from err


def _check_payload_config(path: Path, name: str, config: Any) -> None:
    entries = config.get("config") if isinstance(config, dict) else None
    if not isinstance(entries, dict):
        raise BadInputError(f"torch.export archive {str(path)!r}: {name.split('/', 1)[-1]!r} is malformed")
    for fqn, meta in entries.items():
        if not isinstance(meta, dict) or meta.get("use_pickle") is not False:
            raise _refuse(path, f"stores {str(fqn)[:60]!r} as a pickle")
        if not re.fullmatch(r"(weight|tensor)_\d+", str(meta.get("path_name", ""))):
            raise _refuse(path, f"stores {str(fqn)[:60]!r} in an object that is not a plain tensor")


def _check_graph(path: Path, program: Any) -> None:
    if not isinstance(program, dict):
        raise BadInputError(f"torch.export archive {str(path)!r}: models/model.json is not an object")
    if program.get("guards_code"):
        raise _refuse(path, "carries guards_code (Python source)")
    for key in (program.get("range_constraints") or {}):
        _check_expr(path, key)
    for node, kind, value in _walk(program):
        if kind == "target":
            if not value.startswith(_ALLOWED_TARGET_PREFIXES):
                raise _refuse(path, f"calls {value[:80]!r}, which is not an aten/prims/operator op")
        else:
            _check_expr(path, value)


def _walk(obj: Any, depth: int = 0) -> Iterator[tuple[Any, str, str]]:
    """Yield (node, 'target' | 'expr', string) for graph call targets and sympy expression strings."""
    if depth > 200:
        raise BadInputError("torch.export archive: models/model.json is nested too deeply")
    if isinstance(obj, dict):
        if isinstance(obj.get("target"), str) and "inputs" in obj:
            yield obj, "target", obj["target"]
        for key, value in obj.items():
            if key == "expr_str" and isinstance(value, str):
                yield obj, "expr", value
            elif isinstance(value, (dict, list)):
                yield from _walk(value, depth + 1)
    elif isinstance(obj, list):
        for value in obj:
            if isinstance(value, (dict, list)):
                yield from _walk(value, depth + 1)


def _check_expr(path: Path, expr: str) -> None:
    if len(expr) > _EXPR_MAX or not _EXPR_CHARS.fullmatch(expr) or "__" in expr or re.search(r"\.\s*[A-Za-z_]", expr):
        raise _refuse(path, f"holds the symbolic expression {expr[:60]!r}, which is not a plain shape formula")
    for word in re.findall(r"[A-Za-z_]\w*", re.sub(r"'[a-z]{1,2}\d+'", "", expr)):
        if word not in _SYMPY_NAMES and not _SYMBOL.match(word):
            raise _refuse(path, f"holds the symbolic expression {expr[:60]!r}, which names {word[:30]!r}")


class _NoPickle:
    """Stands in for the ``pickle`` module inside torch.export's loader."""

    UnpicklingError = Exception

    @staticmethod
    def loads(*_args: Any, **_kwargs: Any) -> Any:
        raise _NoPickleError("plain pickle is disabled while loading an untrusted archive")


class _NoPickleError(RuntimeError):
    pass


@contextmanager
def weights_only_loading() -> Iterator[None]:
    """Force ``torch.load(weights_only=True)`` and disable plain unpickling (not thread-safe; see module docs)."""
    import torch
    from torch.export.pt2_archive import _package

    original_load, original_pickle = torch.load, _package.pickle
    original_obj = torch._C._pickle_load_obj

    def safe_load(*args: Any, **kwargs: Any) -> Any:
        kwargs["weights_only"] = True
        return original_load(*args, **kwargs)

    def no_obj(*_args: Any, **_kwargs: Any) -> Any:
        raise _NoPickleError("custom objects are disabled while loading an untrusted archive")

    with _LOAD_LOCK:
        torch.load, _package.pickle = safe_load, _NoPickle  # type: ignore[assignment]
        torch._C._pickle_load_obj = no_obj
        try:
            yield
        finally:
            torch.load, _package.pickle = original_load, original_pickle  # type: ignore[assignment]
            torch._C._pickle_load_obj = original_obj


def load_archive(path: Path, extra_files: dict[str, Any], *, trust: bool) -> Any:
    """``torch.export.load`` after :func:`validate_archive` (both skipped checks only with ``trust``)."""
    import logging

    import torch

    if trust:
        return torch.export.load(str(path), extra_files=extra_files)
    validate_archive(path)
    export_log = logging.getLogger("torch.export.pt2_archive._package")
    serde_log = logging.getLogger("torch._export.serde.serialize")
    levels = export_log.level, serde_log.level
    export_log.setLevel(logging.CRITICAL)  # torch logs a traceback before its legacy fallback
    serde_log.setLevel(logging.CRITICAL)
    try:
        with weights_only_loading():
            return torch.export.load(str(path), extra_files=extra_files)
    finally:
        export_log.setLevel(levels[0])
        serde_log.setLevel(levels[1])
