"""One reader per checkpoint format: the file's bytes → a module and its raw metadata, safely.

Nothing read here runs code from the file unless the caller trusts it (docs/security.md):

* ``torch.save`` files are read with ``torch.load(weights_only=True)``; anything that needs a full
  unpickle is an :class:`~certify.errors.UnsafeCheckpointError` unless ``trust`` is set;
* ``.pt2`` archives go through :mod:`certify.checkpoints.safe_export`;
* a state_dict is loaded into an architecture built on the meta device first and compared by
  shape, so a hostile size allocates nothing; NaN or Inf weights are refused.

:func:`read_checkpoint` picks the reader for a detected format;
:func:`certify.checkpoints.load_model` is the public entry point.
"""

from __future__ import annotations

import json
import warnings
import zipfile
from pathlib import Path
from typing import Any, Mapping, NamedTuple

import torch
from torch import nn

from ..errors import BadInputError, UnsafeCheckpointError, short_repr
from .architecture import Architecture, file_architecture
from .formats import STATE_DICT_FORMAT_KEY, check_zip_integrity, first_line
from .metadata import METADATA_FILE, read_meta_json

#: The advice of every refusal that trusting the file would lift (``param`` names the switch).
_TRUST_ADVICE = "or load it with trust_checkpoint if you trust its source"


class Read(NamedTuple):
    """What a reader found: the module, the raw metadata dict, the format and the torch.export program."""

    module: nn.Module
    metadata: dict[str, Any]
    format: str
    exported: Any = None


def read_checkpoint(p: Path, fmt: str, arch: Architecture | None, trust: bool,
                    trusted_modules: tuple[str, ...], input_shape: tuple[int, ...] | None = None) -> Read:
    """Read ``p`` in its detected format (``"torch.save"`` becomes ``"state_dict"`` or ``"pickle"``).

    ``input_shape`` (one example) lays a dataset's examples onto an ONNX model's declared input
    (:mod:`certify.onnx.convert`); other formats ignore it here (the caller records it as metadata).
    """
    file_trust = None if trust else tuple(trusted_modules)
    if fmt == "torch.export":
        return _load_export(p, trust)
    if fmt == "torchscript":
        check_zip_integrity(p)
        return _load_torchscript(p)
    if fmt == "safetensors":
        return _load_safetensors(p, arch, file_trust)
    if fmt == "onnx":
        return _load_onnx(p, input_shape)
    if zipfile.is_zipfile(p):
        check_zip_integrity(p)
    return _load_torch_save(p, arch, trust, file_trust)


def check_finite_weights(module: nn.Module, where: str) -> None:
    """Refuse NaN or Inf in any parameter or buffer, naming the first bad tensor."""
    for name, t in list(module.named_parameters()) + list(module.named_buffers()):
        if t.is_floating_point() and t.device.type != "meta" and not torch.isfinite(t).all():
            raise BadInputError(f"checkpoint {where!r}: tensor {name!r} has NaN or Inf values; "
                                "the model is broken, retrain or re-save it")


def _load_export(p: Path, trust: bool) -> Read:
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
                f"re-export the model, {_TRUST_ADVICE}", param="trust_checkpoint") from None
        raise BadInputError(f"cannot read torch.export program {str(p)!r}: {first_line(err)}") from err
    return Read(ep.module(), read_meta_json(extra[METADATA_FILE], str(p)), "torch.export", ep)


def _load_torchscript(p: Path) -> Read:
    extra = {METADATA_FILE: ""}
    try:
        with warnings.catch_warnings():  # TorchScript is deprecated upstream but still a format users have
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(p), map_location="cpu", _extra_files=extra)
    except Exception as err:
        raise BadInputError(f"cannot read TorchScript archive {str(p)!r}: {first_line(err)}") from err
    return Read(module, read_meta_json(extra[METADATA_FILE], str(p)), "torchscript")


def _load_torch_save(p: Path, arch: Architecture | None, trust: bool,
                     file_trust: tuple[str, ...] | None) -> Read:
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as err:
        if not _is_unpickling_refusal(err):
            raise BadInputError(f"cannot read checkpoint {str(p)!r}: {first_line(err)}; is it truncated?") from err
        if not trust:
            raise UnsafeCheckpointError(
                f"checkpoint {str(p)!r} is an arbitrary pickle that could run code when loaded; "
                f"re-save it as a state_dict, TorchScript or torch.export program, {_TRUST_ADVICE}",
                param="trust_checkpoint") from None
        obj = torch.load(str(p), map_location="cpu", weights_only=False)  # user opted in
        if isinstance(obj, nn.Module):
            return Read(obj, {}, "pickle")
    module, meta = module_from_state(obj, arch, str(p), file_trust)
    return Read(module, meta, "state_dict")


def _is_unpickling_refusal(err: Exception) -> bool:
    import pickle

    return isinstance(err, pickle.UnpicklingError) or "Weights only load failed" in str(err)


def module_from_state(obj: Any, arch: Architecture | None, where: str,
                      file_trust: tuple[str, ...] | None = ()) -> tuple[nn.Module, dict[str, Any]]:
    """A plain state_dict, or a lipcert one (state_dict, metadata, architecture) → (module, raw metadata)."""
    meta: dict[str, Any] = {}
    if isinstance(obj, Mapping) and STATE_DICT_FORMAT_KEY in obj:
        meta = obj.get("metadata") or {}
        if not isinstance(meta, Mapping):
            raise BadInputError(f"checkpoint {where!r}: 'metadata' must be an object, got {short_repr(meta)}")
        meta = dict(meta)
        if arch is None and obj.get("architecture"):
            arch = file_architecture(obj["architecture"], where, file_trust)
        state = obj.get("state_dict")
    else:
        state = obj
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BadInputError(f"checkpoint {where!r}: expected a state_dict (a mapping of names to tensors)")
    if arch is None:
        raise BadInputError(f"checkpoint {where!r} is a state_dict without an architecture; "
                            "pass arch (module:Class with its keyword arguments, or a YAML spec)", param="arch")
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
                                f"({first_line(err)}); name it yourself with arch", param="arch") from err
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


def _load_safetensors(p: Path, arch: Architecture | None, file_trust: tuple[str, ...] | None) -> Read:
    try:
        from safetensors import safe_open
    except ImportError as err:
        raise BadInputError("safetensors checkpoints need 'pip install lipcert[safetensors]'") from err
    try:
        with safe_open(str(p), framework="pt") as f:
            raw_meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:
        raise BadInputError(f"cannot read safetensors file {str(p)!r}: {first_line(err)}") from err
    meta = read_meta_json(raw_meta.get(METADATA_FILE, ""), str(p))
    if arch is None and raw_meta.get("lipcert_architecture"):
        arch = file_architecture(_header_json(raw_meta["lipcert_architecture"], p), str(p), file_trust)
    if arch is None:
        raise BadInputError(f"safetensors file {str(p)!r} has no architecture; "
                            "pass arch (module:Class with its keyword arguments, or a YAML spec)", param="arch")
    module = _build_checked(arch, state, str(p))
    _load_state(module, state, str(p))
    return Read(module, meta, "safetensors")


def _header_json(text: Any, p: Path) -> Any:
    try:
        return json.loads(text)
    except (json.JSONDecodeError, TypeError) as err:
        raise BadInputError(f"safetensors file {str(p)!r}: header 'lipcert_architecture' is not valid JSON "
                            f"({err}); name the architecture with arch instead", param="arch") from err


def _load_onnx(p: Path, input_shape: tuple[int, ...] | None) -> Read:
    """ONNX through lipcert's own converter (:mod:`certify.onnx`): needs only the ``onnx`` package."""
    from ..onnx import load_onnx

    meta = {"input_shape": list(input_shape)} if input_shape is not None else {}
    return Read(load_onnx(p, input_shape), meta, "onnx")
