"""Loading and saving models: the one module that touches checkpoint files.

Formats are detected from the file's *content*, never its name:

========================  ==========================================================
format                    how it is recognised / loaded
========================  ==========================================================
``torch.export``          zip archive with ``models/model.json`` (``torch.export.save``)
``torchscript``           zip archive with ``code/`` and ``constants.pkl``
``state_dict``            ``torch.save`` archive loaded with ``weights_only=True``,
                          plus an architecture (``module:Class`` or a YAML spec)
``safetensors``           8-byte header length + JSON header, plus an architecture
``onnx``                  protobuf ``ModelProto`` (optional extra ``lipcert[onnx]``)
``pickle``                anything ``weights_only`` refuses: only with ``trust=True``
========================  ==========================================================

Every loaded model is put in eval mode and takes inputs in *pixel space*: if the
metadata says normalisation is not part of the stored model, it is prepended
here, so that ε is always measured on the raw input.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import io
import json
import math
import os
import struct
import warnings
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from ..errors import BadInputError, UnsafeCheckpointError, short_repr
from ..threat import NORMS

METADATA_FILE = "lipcert.json"
STATE_DICT_FORMAT_KEY = "lipcert_format"
STATE_DICT_FORMAT_VERSION = 1

#: ``per-logit``: every logit y_k is C-Lipschitz; ``vector``: the whole logit
#: vector is C-Lipschitz (norm → same norm).
LIPSCHITZ_KINDS = ("per-logit", "vector")


@dataclass(frozen=True)
class LipschitzClaim:
    """A Lipschitz property declared for a model (not yet verified)."""

    norm: str
    kind: str
    constant: float = 1.0

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise BadInputError(f"Lipschitz claim: expected norm in {NORMS}, got {self.norm!r}")
        if self.kind not in LIPSCHITZ_KINDS:
            raise BadInputError(
                f"Lipschitz claim: expected kind in {LIPSCHITZ_KINDS}, got {self.kind!r}"
            )
        if not (self.constant > 0 and self.constant < float("inf")):
            raise BadInputError(
                f"Lipschitz claim: expected a positive finite constant, got {self.constant!r}"
            )


@dataclass(frozen=True)
class ModelMetadata:
    """What lipcert knows about a model besides its weights."""

    input_shape: tuple[int, ...] | None = None  #: one example, without the batch dimension
    bounds: tuple[float, float] = (0.0, 1.0)  #: valid input range in pixel space
    mean: tuple[float, ...] | None = None  #: per-channel normalisation mean
    std: tuple[float, ...] | None = None  #: per-channel normalisation std
    #: True when the stored model already applies (x - mean) / std itself.
    normalization_in_model: bool = True
    dataset: str | None = None
    num_classes: int | None = None
    class_names: tuple[str, ...] | None = None
    lipschitz: LipschitzClaim | None = None
    description: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | None) -> "ModelMetadata":
        if not raw:
            return cls()
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise BadInputError(
                f"model metadata: unknown keys {unknown}; valid keys are {sorted(known)}"
            )
        kw: dict[str, Any] = dict(raw)
        try:
            for key in ("input_shape", "bounds", "mean", "std", "class_names"):
                if kw.get(key) is not None:
                    if not isinstance(kw[key], (list, tuple)):
                        raise TypeError(f"'{key}' must be a list, got {short_repr(kw[key], 40)}")
                    kw[key] = tuple(kw[key])
            if kw.get("lipschitz") is not None:
                if not isinstance(kw["lipschitz"], Mapping):
                    raise TypeError(f"'lipschitz' must be an object, got {short_repr(kw['lipschitz'], 40)}")
                kw["lipschitz"] = LipschitzClaim(**kw["lipschitz"])
            meta = cls(**kw)
            _check_metadata(meta)
        except (TypeError, ValueError) as err:
            if isinstance(err, BadInputError):
                raise
            raise BadInputError(f"model metadata: {short_repr(str(err), 120)[1:-1]}; fix the checkpoint's "
                                "lipcert.json or pass --arch with a spec that sets metadata") from err
        return meta


def _check_metadata(meta: ModelMetadata) -> None:
    """Types and ranges of metadata read from a file."""
    def numbers(values: Any) -> bool:
        return all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)

    if meta.input_shape is not None and not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v < 2**20
                                                for v in meta.input_shape):
        raise BadInputError(f"model metadata: input_shape must be positive integers, got {short_repr(meta.input_shape)}")
    if len(meta.bounds) != 2 or not numbers(meta.bounds) or not meta.bounds[0] < meta.bounds[1]:
        raise BadInputError(f"model metadata: expected bounds [lo, hi] with lo < hi, got {short_repr(meta.bounds)}")
    for key in ("mean", "std"):
        value = getattr(meta, key)
        if value is not None and not numbers(value):
            raise BadInputError(f"model metadata: {key} must be finite numbers, got {short_repr(value)}")
    if meta.num_classes is not None and not (isinstance(meta.num_classes, int) and 0 < meta.num_classes < 2**31):
        raise BadInputError(f"model metadata: num_classes must be a positive integer, got {short_repr(meta.num_classes)}")


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to evaluate: eval mode, pixel-space inputs."""

    module: nn.Module
    format: str
    path: str
    sha256: str
    metadata: ModelMetadata
    #: The torch.export program when the checkpoint was one (the Lipschitz
    #: analyser reads its graph); None otherwise.
    exported: Any = field(default=None, repr=False, compare=False)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)

    @property
    def info(self) -> dict[str, str]:
        return {"path": self.path, "sha256": self.sha256, "format": self.format}


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, prepended so ε lives in pixel space."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        if any(s <= 0 for s in std):
            raise BadInputError(f"normalisation std must be positive, got {std}")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32, device="cpu").view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32, device="cpu").view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:  # flat inputs: one channel
            return (x - self.mean.flatten()[0]) / self.std.flatten()[0]
        return (x - self.mean) / self.std


# --------------------------------------------------------------------------- helpers


def sha256_of(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_file(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    if not p.exists():
        raise BadInputError(f"checkpoint {str(p)!r} does not exist; check the path")
    if p.is_dir():
        raise BadInputError(f"checkpoint {str(p)!r} is a directory; expected a model file")
    if p.stat().st_size == 0:
        raise BadInputError(f"checkpoint {str(p)!r} is empty; re-save the model")
    return p


def detect_format(path: str | os.PathLike[str]) -> str:
    """Return the checkpoint format from the file's bytes (see module docs)."""
    p = _check_file(path)
    with open(p, "rb") as f:
        head = f.read(16)
    if zipfile.is_zipfile(p):
        try:
            names = zipfile.ZipFile(p).namelist()
        except (zipfile.BadZipFile, OSError) as err:
            raise BadInputError(f"checkpoint {str(p)!r} is a damaged zip archive ({err}); re-save it") from err
        if any(n.endswith("models/model.json") or n.endswith("/archive_format") for n in names):
            return "torch.export"
        if any("/code/" in n for n in names) and any(n.endswith("constants.pkl") for n in names):
            return "torchscript"
        if any(n.endswith("data.pkl") for n in names):
            return "torch.save"
        raise BadInputError(
            f"checkpoint {str(p)!r} is a zip archive but not a torch.export, TorchScript or torch.save file"
        )
    if len(head) >= 9:
        (n,) = struct.unpack("<Q", head[:8])
        if 2 <= n < 100_000_000 and head[8:9] == b"{":
            return "safetensors"
    if head[:1] == b"\x80":  # pickle protocol marker: legacy torch.save or raw pickle
        return "torch.save"
    if _looks_like_onnx(p):
        return "onnx"
    raise BadInputError(
        f"checkpoint {str(p)!r} has an unknown format; expected torch.export (.pt2), TorchScript, "
        "a torch.save state_dict, safetensors or ONNX"
    )


def _looks_like_onnx(p: Path) -> bool:
    # ModelProto starts with field 1 (ir_version, varint: tag 0x08) in practice.
    with open(p, "rb") as f:
        head = f.read(2)
    return head[:1] == b"\x08" and len(head) == 2 and head[1] < 0x20


#: Modules whose nn.Module classes a *file* may name as its architecture (the zoo, and its
#: old names, which files still carry).  Others must be named by the user (``--trust-module``).
BUILTIN_ARCH_MODULES = ("certify.models", "certify.layers", "certify.zoo.models", "certify.zoo.layers")


def resolve_class(spec: str, *, trusted_modules: tuple[str, ...] | None = None) -> type[nn.Module]:
    """Import ``package.module:Class``, which must be an ``nn.Module`` subclass.

    ``trusted_modules=None``: the user named the class (``--arch``), any module may be
    imported.  Otherwise the spec came from a file and may only name a module in
    :data:`BUILTIN_ARCH_MODULES` or in ``trusted_modules``: nothing else is imported.
    """
    if not isinstance(spec, str) or ":" not in spec:
        raise BadInputError(f"architecture: expected 'module:Class', got {short_repr(spec)}")
    mod_name, _, cls_name = spec.partition(":")
    if trusted_modules is not None and mod_name not in BUILTIN_ARCH_MODULES + tuple(trusted_modules):
        raise UnsafeCheckpointError(
            f"the checkpoint names architecture {short_repr(spec)}, outside lipcert's own models "
            f"({', '.join(BUILTIN_ARCH_MODULES[:2])}); lipcert imports nothing a file names. If you trust that "
            f"code, pass --trust-module {short_repr(mod_name, 40)[1:-1]} or --arch {short_repr(spec, 60)[1:-1]}"
        )
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as err:
        raise BadInputError(
            f"architecture: cannot import module {mod_name!r} ({err}); is it on PYTHONPATH?"
        ) from err
    except Exception as err:  # a module that fails while importing
        raise BadInputError(f"architecture: importing {mod_name!r} failed ({_short(err)})") from err
    obj: Any = mod
    for part in cls_name.split("."):
        if not part or part.startswith("__") or not hasattr(obj, part):
            raise BadInputError(f"architecture: {mod_name!r} has no attribute {short_repr(cls_name, 60)}")
        obj = getattr(obj, part)
    if mod_name in ("certify.models", "certify.zoo.models") and obj in _family_builders():
        return obj  # lipcert's own family builders (functions returning an nn.Module)
    if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
        raise BadInputError(f"architecture: {short_repr(spec)} is not an nn.Module subclass; "
                            "name a class like mypkg.nets:Net")
    return obj


def _family_builders() -> list[Any]:
    from ..zoo.models import FAMILIES

    return [b for fam in FAMILIES.values() for b in fam.builders.values()]


@dataclass(frozen=True)
class Architecture:
    """How to build the module a state_dict belongs to."""

    cls: str | None = None  #: ``module:Class``
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    layers: tuple[Any, ...] | None = None  #: a sequential spec from YAML
    metadata: Mapping[str, Any] | None = None

    #: None: named by the user; a tuple: named by a file, so only lipcert's own
    #: modules and these may be imported (see :func:`resolve_class`).
    trusted_modules: tuple[str, ...] | None = None

    def build(self, device: str | torch.device | None = None) -> nn.Module:
        """Build the module (on ``device``; ``"meta"`` allocates nothing)."""
        with torch.device(device) if device is not None else contextlib.nullcontext():
            if self.layers is not None:
                return _build_sequential(self.layers)
            if self.cls is None:
                raise BadInputError("architecture: give 'class: module:Class' or 'layers: [...]'")
            if not isinstance(self.kwargs, Mapping) or not all(isinstance(k, str) for k in self.kwargs):
                raise BadInputError(f"architecture {short_repr(self.cls)}: kwargs must be a mapping of names")
            factory = resolve_class(self.cls, trusted_modules=self.trusted_modules)
            try:
                return factory(**dict(self.kwargs))
            except (TypeError, ValueError, RuntimeError, OverflowError) as err:
                raise BadInputError(f"architecture {short_repr(self.cls)}: bad keyword arguments "
                                    f"({_short(err)})") from err

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.cls is not None:
            out["class"] = self.cls
            out["kwargs"] = dict(self.kwargs)
        if self.layers is not None:
            out["layers"] = list(self.layers)
        return out


def _build_sequential(layers: tuple[Any, ...]) -> nn.Module:
    """Build ``nn.Sequential`` from ``[{Conv2d: [1, 16, 3]}, "ReLU", {Linear: {in_features: 4, ...}}]``.

    Names are looked up in ``torch.nn`` and in lipcert's own layers
    (:mod:`certify.zoo.layers`, when present).
    """
    mods: list[nn.Module] = []
    for i, item in enumerate(layers):
        if isinstance(item, str):
            name, args = item, []
        elif isinstance(item, Mapping) and len(item) == 1:
            ((name, args),) = item.items()
        else:
            raise BadInputError(f"model spec: layers[{i}] must be 'Name' or {{Name: args}}, got {short_repr(item)}")
        cls = _layer_class(name, i)
        try:
            if isinstance(args, Mapping):
                mods.append(cls(**args))
            elif isinstance(args, (list, tuple)):
                mods.append(cls(*args))
            else:
                mods.append(cls(args))
        except (TypeError, ValueError, RuntimeError, OverflowError) as err:
            raise BadInputError(f"model spec: layers[{i}] {name}: {_short(err)}") from err
    return nn.Sequential(*mods)


def _layer_class(name: Any, i: int) -> Any:
    from ..zoo import layers as layers_mod

    for mod in (nn, layers_mod):
        obj = getattr(mod, name, None) if isinstance(name, str) and not name.startswith("_") else None
        if isinstance(obj, type) and issubclass(obj, nn.Module):
            return obj
    raise BadInputError(f"model spec: layers[{i}]: unknown layer {short_repr(name)} "
                        "(an nn.Module class of torch.nn or certify.layers)")


def load_architecture(spec: str | os.PathLike[str] | None, kwargs: Mapping[str, Any] | None = None) -> Architecture | None:
    """``module:Class`` (with kwargs) or the path of a YAML model spec."""
    if spec is None:
        return None
    spec = str(spec)
    if spec.endswith((".yaml", ".yml")) or (os.path.exists(spec) and ":" not in spec):
        from ..io import load_yaml_file

        raw = load_yaml_file(spec)
        if not isinstance(raw, Mapping):
            raise BadInputError(f"model spec {spec!r}: expected a mapping with 'class' or 'layers'")
        valid = {"class", "kwargs", "layers", "metadata"}
        unknown = sorted(set(raw) - valid)
        if unknown:
            raise BadInputError(f"model spec {spec!r}: unknown keys {unknown}; valid keys are {sorted(valid)}")
        return Architecture(
            cls=raw.get("class"),
            kwargs=dict(raw.get("kwargs") or {}),
            layers=tuple(raw["layers"]) if raw.get("layers") is not None else None,
            metadata=raw.get("metadata"),
        )
    return Architecture(cls=spec, kwargs=dict(kwargs or {}))


# --------------------------------------------------------------------------- loading


def load_model(
    path: str | os.PathLike[str],
    *,
    arch: Architecture | None = None,
    trust_checkpoint: bool = False,
    trusted_modules: tuple[str, ...] = (),
    metadata_overrides: Mapping[str, Any] | None = None,
    device: str | torch.device = "cpu",
) -> LoadedModel:
    """Load a checkpoint safely (see the module docs for formats and docs/security.md).

    Raises :class:`BadInputError` for anything unusable and
    :class:`UnsafeCheckpointError` for anything that could run code when
    ``trust_checkpoint`` is False.  An architecture named *inside* the file may
    only come from lipcert's own modules or ``trusted_modules``.
    """
    p = _check_file(path)
    fmt = detect_format(p)
    exported = None
    meta_raw: dict[str, Any] = {}
    file_trust = None if trust_checkpoint else tuple(trusted_modules)
    if fmt == "torch.export":
        module, meta_raw, exported = _load_export(p, trust_checkpoint)
    elif fmt == "torchscript":
        check_zip_integrity(p)
        module, meta_raw = _load_torchscript(p)
    elif fmt == "safetensors":
        module, meta_raw = _load_safetensors(p, arch, file_trust)
    elif fmt == "onnx":
        module = _load_onnx(p)
    else:
        if zipfile.is_zipfile(p):
            check_zip_integrity(p)
        module, meta_raw, fmt = _load_torch_save(p, arch, trust_checkpoint, file_trust)
    check_finite_weights(module, str(p))
    if arch is not None and arch.metadata:
        meta_raw = {**meta_raw, **dict(arch.metadata)}
    if metadata_overrides:
        meta_raw = {**meta_raw, **dict(metadata_overrides)}
    metadata = ModelMetadata.from_dict(meta_raw)
    if exported is not None:
        moved = _program_to(exported, device)
        if moved is not exported:
            exported, module = moved, moved.module()
    module = _finalize(module, metadata, exported is not None, device)
    if not metadata.normalization_in_model:
        metadata = dataclasses.replace(metadata, normalization_in_model=True)
    return LoadedModel(module=module, format=fmt, path=str(p), sha256=sha256_of(p),
                       metadata=metadata, exported=exported)


def _program_to(ep: Any, device: Any) -> Any:
    """The exported program on ``device``: weights, constants and the devices written into its graph
    (``module.to`` would move the weights only), so the analyser and the model run on one device."""
    dev = torch.device(device)
    tensors = list(ep.state_dict.values()) + list(ep.constants.values())
    if all(t.device == dev for t in tensors if isinstance(t, torch.Tensor)) and dev.type == "cpu":
        return ep
    from torch.export.passes import move_to_device_pass

    try:
        return move_to_device_pass(ep, dev)
    except Exception as err:  # noqa: BLE001
        raise BadInputError(f"cannot move the exported program to {dev}: {_short(err)}") from err


def _finalize(module: nn.Module, metadata: ModelMetadata, is_export: bool, device: Any) -> nn.Module:
    if not is_export:
        module.eval()
    else:
        _export_eval(module)
    if not metadata.normalization_in_model and metadata.mean is not None:
        if metadata.std is None:
            raise BadInputError("model metadata gives 'mean' without 'std'")
        module = nn.Sequential(Normalize(metadata.mean, metadata.std), module)
        if is_export:
            _export_eval(module[0])
        else:
            module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    try:
        module.to(device)
    except RuntimeError as err:  # e.g. exported programs with fixed device
        raise BadInputError(f"cannot move model to {device}: {err}") from err
    return module


def _export_eval(module: nn.Module) -> None:
    # ExportedProgram.module() refuses .eval() in some torch versions: it is
    # traced in eval mode when saved by lipcert; try, and ignore refusal.
    try:
        module.eval()
    except (NotImplementedError, RuntimeError):
        pass


def _read_meta_json(raw: str, where: str) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as err:
        raise BadInputError(f"{where}: lipcert.json metadata is not valid JSON ({err})") from err
    if not isinstance(data, dict):
        raise BadInputError(f"{where}: lipcert.json metadata must be a JSON object")
    return data


def check_zip_integrity(p: Path) -> None:
    """Every member of a zip checkpoint must pass its CRC check (torch's reader does not check)."""
    try:
        with zipfile.ZipFile(p) as zf:
            bad = zf.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, zlib.error) as err:
        raise BadInputError(f"checkpoint {str(p)!r} is a damaged zip archive ({_short(err)}); re-save it") from err
    if bad is not None:
        raise BadInputError(f"checkpoint {str(p)!r}: member {short_repr(bad, 80)} fails its CRC check; "
                            "the file is damaged, copy or re-save it")


def check_finite_weights(module: nn.Module, where: str) -> None:
    """Refuse NaN or Inf in any parameter or buffer, naming the first bad tensor."""
    for name, t in list(module.named_parameters()) + list(module.named_buffers()):
        if t.is_floating_point() and t.device.type != "meta" and not torch.isfinite(t).all():
            raise BadInputError(f"checkpoint {where!r}: tensor {name!r} has NaN or Inf values; "
                                "the model is broken, retrain or re-save it")


def _load_export(p: Path, trust: bool) -> tuple[nn.Module, dict[str, Any], Any]:
    from .safe_export import load_archive

    extra = {METADATA_FILE: ""}
    try:
        ep = load_archive(p, extra, trust=trust)
    except BadInputError:
        raise
    except Exception as err:  # damaged archives raise many types
        if _is_unpickling_refusal(err) or "disabled while loading" in str(err):
            raise UnsafeCheckpointError(
                f"torch.export archive {str(p)!r} holds a pickle the safe loader refuses (it could run code); "
                "re-export the model, or pass --trust-checkpoint if you trust its source") from None
        raise BadInputError(f"cannot read torch.export program {str(p)!r}: {_short(err)}") from err
    return ep.module(), _read_meta_json(extra[METADATA_FILE], str(p)), ep


def _load_torchscript(p: Path) -> tuple[nn.Module, dict[str, Any]]:
    extra = {METADATA_FILE: ""}
    try:
        with warnings.catch_warnings():  # TorchScript is deprecated upstream but still a format users have
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(p), map_location="cpu", _extra_files=extra)
    except Exception as err:
        raise BadInputError(f"cannot read TorchScript archive {str(p)!r}: {_short(err)}") from err
    return module, _read_meta_json(extra[METADATA_FILE], str(p))


def _load_torch_save(p: Path, arch: Architecture | None, trust: bool,
                     file_trust: tuple[str, ...] | None) -> tuple[nn.Module, dict[str, Any], str]:
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as err:
        if not _is_unpickling_refusal(err):
            raise BadInputError(f"cannot read checkpoint {str(p)!r}: {_short(err)}; is it truncated?") from err
        if not trust:
            raise UnsafeCheckpointError(
                f"checkpoint {str(p)!r} is an arbitrary pickle that could run code when loaded; "
                "re-save it as a state_dict, TorchScript or torch.export program, or pass "
                "--trust-checkpoint if you trust its source"
            ) from None
        obj = torch.load(str(p), map_location="cpu", weights_only=False)  # user opted in
        if isinstance(obj, nn.Module):
            return obj, {}, "pickle"
    return _module_from_state(obj, arch, str(p), file_trust) + ("state_dict",)


def _is_unpickling_refusal(err: Exception) -> bool:
    import pickle

    return isinstance(err, pickle.UnpicklingError) or "Weights only load failed" in str(err)


def _file_architecture(a: Any, where: str, file_trust: tuple[str, ...] | None) -> Architecture:
    """The architecture a checkpoint names for itself (untrusted unless ``file_trust`` is None)."""
    if not isinstance(a, Mapping) or set(a) - {"class", "kwargs", "layers"}:
        raise BadInputError(f"checkpoint {where!r}: its architecture must be an object with 'class' and "
                            f"'kwargs' or 'layers', got {short_repr(a)}; pass --arch instead")
    layers = a.get("layers")
    if layers is not None and not isinstance(layers, (list, tuple)):
        raise BadInputError(f"checkpoint {where!r}: architecture 'layers' must be a list, got {short_repr(layers)}")
    kwargs = a.get("kwargs") or {}
    if not isinstance(kwargs, Mapping):
        raise BadInputError(f"checkpoint {where!r}: architecture 'kwargs' must be an object, got {short_repr(kwargs)}")
    return Architecture(cls=a.get("class"), kwargs=kwargs, layers=tuple(layers) if layers else None,
                        trusted_modules=file_trust)


def _module_from_state(obj: Any, arch: Architecture | None, where: str,
                       file_trust: tuple[str, ...] | None = ()) -> tuple[nn.Module, dict[str, Any]]:
    meta: dict[str, Any] = {}
    if isinstance(obj, Mapping) and STATE_DICT_FORMAT_KEY in obj:
        meta = obj.get("metadata") or {}
        if not isinstance(meta, Mapping):
            raise BadInputError(f"checkpoint {where!r}: 'metadata' must be an object, got {short_repr(meta)}")
        meta = dict(meta)
        if arch is None and obj.get("architecture"):
            arch = _file_architecture(obj["architecture"], where, file_trust)
        state = obj.get("state_dict")
    else:
        state = obj
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BadInputError(f"checkpoint {where!r}: expected a state_dict (a mapping of names to tensors)")
    if arch is None:
        raise BadInputError(
            f"checkpoint {where!r} is a state_dict without an architecture; pass --arch module:Class "
            "(with --arch-kwargs) or --arch spec.yaml"
        )
    module = _build_checked(arch, state, where)
    _load_state(module, state, where)
    return module, meta


def _build_checked(arch: Architecture, state: Mapping[str, torch.Tensor], where: str) -> nn.Module:
    """Build on the meta device first and compare shapes, so a hostile size allocates nothing."""
    try:
        meta_module = arch.build("meta")
    except NotImplementedError as err:  # an __init__ that computes on its weights: no meta check possible
        if arch.trusted_modules is not None:  # named by the file: do not allocate unchecked sizes
            raise BadInputError(f"checkpoint {where!r}: its architecture cannot be checked on the meta device "
                                f"({_short(err)}); pass --arch to name it yourself") from err
        return arch.build()
    expected = {k: tuple(v.shape) for k, v in meta_module.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if expected != got:
        diff = sorted(set(expected) ^ set(got)) or [k for k in expected if expected[k] != got[k]]
        name = diff[0]
        raise BadInputError(
            f"checkpoint {where!r} does not match the architecture: tensor {short_repr(name, 60)} is "
            f"{got.get(name, 'missing')} in the file and {expected.get(name, 'absent')} in the architecture")
    return arch.build()


def _load_state(module: nn.Module, state: Mapping[str, torch.Tensor], where: str) -> None:
    for name, t in state.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise BadInputError(f"checkpoint {where!r}: tensor {name!r} has NaN or Inf values")
    try:
        module.load_state_dict(dict(state), strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])
        raise BadInputError(
            f"checkpoint {where!r} does not match the architecture: {detail[:300]}"
        ) from err


def _load_safetensors(p: Path, arch: Architecture | None,
                      file_trust: tuple[str, ...] | None) -> tuple[nn.Module, dict[str, Any]]:
    try:
        from safetensors import safe_open
    except ImportError as err:
        raise BadInputError("safetensors checkpoints need 'pip install lipcert[safetensors]'") from err
    try:
        with safe_open(str(p), framework="pt") as f:
            raw_meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:
        raise BadInputError(f"cannot read safetensors file {str(p)!r}: {_short(err)}") from err
    meta = _read_meta_json(raw_meta.get(METADATA_FILE, ""), str(p))
    if arch is None and raw_meta.get("lipcert_architecture"):
        try:
            a = json.loads(raw_meta["lipcert_architecture"])
        except (json.JSONDecodeError, TypeError) as err:
            raise BadInputError(f"safetensors file {str(p)!r}: header 'lipcert_architecture' is not valid JSON "
                                f"({err}); pass --arch instead") from err
        arch = _file_architecture(a, str(p), file_trust)
    if arch is None:
        raise BadInputError(
            f"safetensors file {str(p)!r} has no architecture; pass --arch module:Class or --arch spec.yaml"
        )
    module = _build_checked(arch, state, str(p))
    _load_state(module, state, str(p))
    return module, meta


def _load_onnx(p: Path) -> nn.Module:
    try:
        import onnx
        from onnx2torch import convert
    except ImportError as err:
        raise BadInputError(
            f"{str(p)!r} looks like ONNX; install the optional extra: pip install 'lipcert[onnx]'"
        ) from err
    try:
        return convert(onnx.load(str(p)))
    except Exception as err:
        raise BadInputError(f"cannot convert ONNX model {str(p)!r}: {_short(err)}") from err


def _short(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:200]


# --------------------------------------------------------------------------- saving


def save_model(
    module: nn.Module,
    path: str | os.PathLike[str],
    metadata: ModelMetadata,
    *,
    format: str = "torch.export",
    example_input: torch.Tensor | None = None,
    architecture: Architecture | None = None,
) -> Path:
    """Save ``module`` with its metadata in one of lipcert's formats.

    ``torch.export`` and ``torchscript`` need ``example_input`` (one batch);
    ``state_dict`` needs ``architecture`` so it can be rebuilt.  The file is
    written atomically.
    """
    from ..io import atomic_path

    module = module.eval()
    meta_json = json.dumps(metadata.to_dict())
    with atomic_path(path) as tmp:
        if format == "torch.export":
            if example_input is None:
                raise BadInputError("save_model: torch.export needs example_input")
            batch = torch.export.Dim("batch", min=1)
            ep = torch.export.export(module, (example_input.clone(),), dynamic_shapes=({0: batch},))
            torch.export.save(ep, str(tmp), extra_files={METADATA_FILE: meta_json})
        elif format == "torchscript":
            scripted = (torch.jit.trace(module, example_input.clone()) if example_input is not None
                        else torch.jit.script(module))
            torch.jit.save(scripted, str(tmp), _extra_files={METADATA_FILE: meta_json})
        elif format == "state_dict":
            if architecture is None:
                raise BadInputError("save_model: state_dict needs an architecture")
            payload = {
                STATE_DICT_FORMAT_KEY: STATE_DICT_FORMAT_VERSION,
                "state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()},
                "metadata": metadata.to_dict(),
                "architecture": architecture.to_dict(),
            }
            buf = io.BytesIO()
            torch.save(payload, buf)
            tmp.write_bytes(buf.getvalue())
        else:
            raise BadInputError(f"save_model: unknown format {format!r}")
    return Path(path)
