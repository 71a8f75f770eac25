"""The graphs to analyse: the one that runs, at the batch sizes that run.

- A torch.export program with a dynamic batch dimension is one graph for every batch size:
  it is analysed once, and the analyser proves it keeps examples apart.
- ``nn.Module`` models are exported with a dynamic batch dimension; when the code specialises
  on the batch size, they are exported once per batch size used instead.
- TorchScript models can branch on ``x.shape[0]``: they are converted once per batch size used.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any, Iterable

import torch

from ..checkpoints import LoadedModel, Normalize
from ..errors import BadInputError
from ..threat import Norm
from .analyser import ANALYSIS_BATCH


@dataclass(frozen=True)
class Graph:
    program: Any  #: torch.export.ExportedProgram
    source: str
    batch: int  #: the batch size it is analysed at
    dynamic: bool = False  #: one graph for every batch size


class GraphError(Exception):
    """No graph could be obtained (the message says why)."""


def example_shape(model: LoadedModel, input_shape: tuple[int, ...] | None) -> tuple[int, ...]:
    shape = input_shape or model.metadata.input_shape
    if shape is None and model.exported is not None:
        shape = _shape_from_program(model.exported)
    if shape is None:
        raise BadInputError("the Lipschitz analysis needs the input shape: give data or set input_shape "
                            "in the model metadata")
    return tuple(int(s) for s in shape)


def _user_input_node(ep: Any) -> Any:
    for spec in ep.graph_signature.input_specs:
        if spec.kind.name == "USER_INPUT":
            return next(n for n in ep.graph.nodes if n.name == spec.arg.name)
    return None


def _shape_from_program(ep: Any) -> tuple[int, ...] | None:
    node = _user_input_node(ep)
    val = node.meta.get("val") if node is not None else None
    if val is not None and all(isinstance(s, int) for s in val.shape[1:]):
        return tuple(int(s) for s in val.shape[1:])
    return None


def dynamic_batch(ep: Any) -> bool:
    node = _user_input_node(ep)
    val = node.meta.get("val") if node is not None else None
    return val is not None and val.dim() >= 1 and not isinstance(val.shape[0], int)


def static_batch(ep: Any) -> int | None:
    node = _user_input_node(ep)
    val = node.meta.get("val") if node is not None else None
    if val is not None and val.dim() >= 1 and isinstance(val.shape[0], int):
        return int(val.shape[0])
    return None


def program_device(ep: Any) -> torch.device:
    for t in list(ep.state_dict.values()) + list(ep.constants.values()):
        if isinstance(t, torch.Tensor):
            return t.device
    return torch.device("cpu")


def input_dtype(ep: Any) -> torch.dtype:
    """The dtype the graph was traced with for its input (float32 unless it says otherwise)."""
    node = _user_input_node(ep)
    val = node.meta.get("val") if node is not None else None
    dtype = getattr(val, "dtype", None)
    return dtype if isinstance(dtype, torch.dtype) and dtype.is_floating_point else torch.float32


def graphs(model: LoadedModel, shape: tuple[int, ...], batch_sizes: Iterable[int] | None = None) -> list[Graph]:
    """The graphs to analyse (see the module docs).  ``batch_sizes``: the sizes a run will use."""
    sizes = sorted({int(b) for b in (batch_sizes or ()) if int(b) >= 1}) or [ANALYSIS_BATCH]
    module = model.module
    prefixed = isinstance(module, torch.nn.Sequential) and len(module) and isinstance(module[0], Normalize)
    if model.exported is not None and not prefixed:
        ep = model.exported
        if dynamic_batch(ep):
            return [Graph(ep, "torch.export", ANALYSIS_BATCH, dynamic=True)]
        fixed = static_batch(ep)
        return [Graph(ep, "torch.export", fixed if fixed is not None else ANALYSIS_BATCH)]
    device = _module_device(module)
    if isinstance(module, torch.jit.ScriptModule):
        return [Graph(_convert(module, _zeros(shape, b, device)), "torchscript→torch.export", b) for b in sizes]
    example = _zeros(shape, ANALYSIS_BATCH, device)
    try:
        ep = torch.export.export(module, (example,), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
        return [Graph(ep, "nn.Module→torch.export", ANALYSIS_BATCH, dynamic=True)]
    except Exception:  # noqa: BLE001 - the code specialises on the batch size: one graph per size
        return [Graph(_export_static(module, _zeros(shape, b, device)), "nn.Module→torch.export", b) for b in sizes]


def _zeros(shape: tuple[int, ...], batch: int, device: torch.device) -> torch.Tensor:
    return torch.zeros((batch,) + shape, device=device)


def _module_device(module: torch.nn.Module) -> torch.device:
    for t in list(module.parameters()) + list(module.buffers()):
        return t.device
    return torch.device("cpu")


def _convert(module: Any, example: torch.Tensor) -> Any:
    from torch._export.converter import TS2EPConverter

    try:
        return TS2EPConverter(module, (example,)).convert()
    except Exception as err:  # noqa: BLE001 - any conversion failure means no graph
        raise GraphError(f"cannot convert the TorchScript model: {_first_line(err)}") from err


def _export_static(module: torch.nn.Module, example: torch.Tensor) -> Any:
    try:
        return torch.export.export(module, (example,))
    except Exception as err:  # noqa: BLE001
        raise GraphError(f"cannot export the model: {_first_line(err)}") from err


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return (lines[0] if lines else type(err).__name__)[:160]


def analysis_inputs(ep: Any, bounds: tuple[float, float], shape: tuple[int, ...], batch: int,
                    device: torch.device | str | None = None) -> tuple[dict[str, Any], str]:
    """Values of the program's placeholders: parameters, buffers, constants and the example batch
    (row 0 the centre of the input box, the others random in it), all on ``device``
    (default: the program's device)."""
    user = [s for s in ep.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
    if len(user) != 1:
        raise GraphError(f"the graph takes {len(user)} user inputs; expected 1")
    device = torch.device(device) if device is not None else program_device(ep)
    dtype = input_dtype(ep)
    lo, hi = bounds
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = lo + (hi - lo) * torch.rand((batch,) + shape, generator=gen, dtype=torch.float64, device="cpu")
    x[0] = (lo + hi) / 2.0
    example = x.to(device=device, dtype=dtype)
    values: dict[str, Any] = {}
    for spec in ep.graph_signature.input_specs:
        if spec.kind.name == "USER_INPUT":
            values[spec.arg.name] = example
        else:
            value = ep.state_dict[spec.target] if spec.target in ep.state_dict else ep.constants[spec.target]
            values[spec.arg.name] = value.to(device) if isinstance(value, torch.Tensor) else value
    return values, user[0].arg.name


def box_radius(bounds: tuple[float, float], shape: tuple[int, ...], norm: Norm) -> float:
    """sup over the input box of ‖x − centre‖ in ``norm``."""
    half = (bounds[1] - bounds[0]) / 2.0
    return half * norm.ones(math.prod(shape))


def content_hash(ep: Any) -> str:
    """sha256 of the graph's code and every tensor it holds (so a changed weight changes it)."""
    h = hashlib.sha256(ep.graph_module.code.encode())
    for name, t in sorted(list(ep.state_dict.items()) + list(ep.constants.items()), key=lambda kv: kv[0]):
        h.update(name.encode())
        if isinstance(t, torch.Tensor):
            data = t.detach().to("cpu").contiguous()
            h.update(f"{data.dtype}{tuple(data.shape)}".encode())
            h.update(data.reshape(-1).view(torch.uint8).numpy().tobytes() if data.numel() else b"")
        else:
            h.update(repr(type(t)).encode())
    return h.hexdigest()
