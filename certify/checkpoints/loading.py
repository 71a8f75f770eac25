"""Loading a model: a checkpoint file → a :class:`LoadedModel`, safely (docs/security.md).

:func:`load_model` detects the format from the file's content
(:mod:`certify.checkpoints.formats`), reads it with the reader of that format
(:mod:`certify.checkpoints.readers`: nothing a file holds runs unless ``trust_checkpoint`` is set,
and an architecture a file names comes only from lipcert's zoo or ``trusted_modules``), then
checks the weights and the metadata.

Every loaded model is put in eval mode and takes inputs in *pixel space*: if the
metadata says normalisation is not part of the stored model, it is prepended
here, so that ε is always measured on the raw input.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
from torch import nn

from ..errors import BadInputError, short_repr
from .architecture import Architecture
from .formats import check_file, detect_format, first_line, sha256_of
from .metadata import ModelMetadata
from .readers import check_finite_weights, read_checkpoint


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


def load_model(
    path: str | os.PathLike[str],
    *,
    arch: Architecture | None = None,
    trust_checkpoint: bool = False,
    trusted_modules: tuple[str, ...] = (),
    metadata_overrides: Mapping[str, Any] | None = None,
    device: str | torch.device = "cpu",
    input_shape: tuple[int, ...] | None = None,
) -> LoadedModel:
    """Load a checkpoint safely (formats in :mod:`certify.checkpoints.formats`; docs/security.md).

    Raises :class:`BadInputError` for anything unusable and
    :class:`UnsafeCheckpointError` for anything that could run code when
    ``trust_checkpoint`` is False.  An architecture named *inside* the file may
    only come from lipcert's own modules or ``trusted_modules``.

    ``input_shape`` (one example, no batch dimension) is recorded as the model's input shape; for
    an ONNX model it also says how examples map onto the declared input (reshaped row-major when
    the element counts agree; :mod:`certify.onnx.convert`).  Without it, an ONNX model takes any
    example shape with its input's element count.
    """
    p = check_file(path)
    if input_shape is not None:
        input_shape = _checked_shape(input_shape)
    module, meta_raw, fmt, exported = read_checkpoint(p, detect_format(p), arch, trust_checkpoint,
                                                      tuple(trusted_modules), input_shape)
    check_finite_weights(module, str(p))
    if arch is not None and arch.metadata:
        meta_raw = {**meta_raw, **dict(arch.metadata)}
    if metadata_overrides:
        meta_raw = {**meta_raw, **dict(metadata_overrides)}
    if input_shape is not None:
        meta_raw = {**meta_raw, "input_shape": list(input_shape)}
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


def _checked_shape(shape: Any) -> tuple[int, ...]:
    try:
        dims = tuple(shape)
    except TypeError:
        dims = ()
    if not dims or not all(isinstance(d, int) and not isinstance(d, bool) and 0 < d < 2**20 for d in dims):
        raise BadInputError(f"input_shape must be positive integers (one example, without the batch dimension), "
                            f"got {short_repr(shape)}", param="input_shape")
    return dims


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
        raise BadInputError(f"cannot move the exported program to {dev}: {first_line(err)}") from err


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

