"""Saving a model in one of lipcert's formats, with its metadata (written atomically).

``torch.export`` (the default, and what the certifier reads best), ``torchscript``, or a lipcert
``state_dict``: a ``torch.save`` dict of plain tensors and JSON values, so
``torch.load(weights_only=True)`` reads it back, with the architecture to rebuild the module.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..errors import BadInputError
from .architecture import Architecture
from .formats import STATE_DICT_FORMAT_KEY, STATE_DICT_FORMAT_VERSION
from .metadata import METADATA_FILE, ModelMetadata


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

    writer = _WRITERS.get(format)
    if writer is None:
        raise BadInputError(f"save_model: unknown format {format!r}", param="format")
    module = module.eval()
    with atomic_path(path) as tmp:
        writer(module, tmp, metadata, example_input, architecture)
    return Path(path)


def _write_export(module: nn.Module, tmp: Path, metadata: ModelMetadata, example_input: torch.Tensor | None,
                  _architecture: Architecture | None) -> None:
    if example_input is None:
        raise BadInputError("save_model: torch.export needs example_input", param="example_input")
    batch = torch.export.Dim("batch", min=1)
    ep = torch.export.export(module, (example_input.clone(),), dynamic_shapes=({0: batch},))
    torch.export.save(ep, str(tmp), extra_files={METADATA_FILE: json.dumps(metadata.to_dict())})


def _write_torchscript(module: nn.Module, tmp: Path, metadata: ModelMetadata, example_input: torch.Tensor | None,
                       _architecture: Architecture | None) -> None:
    scripted = (torch.jit.trace(module, example_input.clone()) if example_input is not None
                else torch.jit.script(module))
    torch.jit.save(scripted, str(tmp), _extra_files={METADATA_FILE: json.dumps(metadata.to_dict())})


def _write_state_dict(module: nn.Module, tmp: Path, metadata: ModelMetadata, _example_input: torch.Tensor | None,
                      architecture: Architecture | None) -> None:
    if architecture is None:
        raise BadInputError("save_model: state_dict needs an architecture", param="architecture")
    payload = {
        STATE_DICT_FORMAT_KEY: STATE_DICT_FORMAT_VERSION,
        "state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()},
        "metadata": metadata.to_dict(),
        "architecture": architecture.to_dict(),
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    tmp.write_bytes(buf.getvalue())


_WRITERS: dict[str, Callable[..., None]] = {
    "torch.export": _write_export, "torchscript": _write_torchscript, "state_dict": _write_state_dict}
