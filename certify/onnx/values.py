"""The values an ONNX graph passes between nodes during conversion, and the attribute checks.

- float32 tensors (the data, weights and float constants) are torch tensors;
- integer constants (shapes, axes, indices) stay numpy arrays, known while the graph is traced;
- ``Shape`` outputs are a :class:`ShapeList` of ints (the batch dimension a symbolic int under
  ``torch.export``), so the ``Shape → Gather → Unsqueeze → Concat → Reshape`` chains that
  exporters write for ``x.view(x.size(0), -1)`` become a plain reshape.

Every op reads its attributes through :func:`attributes`, which refuses any attribute the op does
not know and any value the op does not support, naming the node.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import BadInputError, short_repr
from .reader import Node

#: Marks an attribute without a default.
REQUIRED = object()


class ShapeList(tuple):  # type: ignore[type-arg]
    """A shape computed inside the graph (ints, or symbolic ints for the batch)."""


@dataclass(frozen=True)
class Ctx:
    """What every op may need: the opset, the model's path and the batch size being traced."""

    opset: int
    path: str
    batch: Any  #: x.shape[0] of the traced input (a symbolic int under torch.export)
    batch_declared_one: bool  #: the model declares a fixed batch of 1 (its reshapes may name it)


def refuse(node: Node, what: str) -> BadInputError:
    return BadInputError(f"ONNX node {short_repr(node.name or '<unnamed>', 60)} ({node.op}): {what}")


def attributes(node: Node, spec: dict[str, Any]) -> dict[str, Any]:
    """The node's attributes with the spec's defaults; unknown or missing required ones refused."""
    unknown = sorted(set(node.attrs) - set(spec))
    if unknown:
        raise refuse(node, f"attribute {short_repr(unknown[0], 40)} is not supported "
                           f"(supported: {', '.join(sorted(spec)) or 'none'})")
    out = {}
    for key, default in spec.items():
        if key not in node.attrs and default is REQUIRED:
            raise refuse(node, f"required attribute {key!r} is missing")
        out[key] = node.attrs.get(key, default)
    return out


def need(node: Node, ok: bool, what: str) -> None:
    """Refuse the node unless ``ok`` (``what`` says which attribute value is unsupported)."""
    if not ok:
        raise refuse(node, what)


def tensor(node: Node, value: Any, role: str = "input") -> torch.Tensor:
    """A float32 tensor argument; integer constants and shapes are refused as data."""
    if isinstance(value, torch.Tensor) and value.dtype == torch.float32:
        return value
    kind = "a shape" if isinstance(value, ShapeList) else f"a {getattr(value, 'dtype', type(value).__name__)} value"
    raise refuse(node, f"{role} is {kind}; lipcert converts float32 data flow only")


def ints(node: Node, value: Any, role: str) -> tuple[int, ...]:
    """A constant list of ints (an integer initializer or Constant, or a shape)."""
    if isinstance(value, ShapeList):
        return tuple(value)
    if isinstance(value, np.ndarray) and value.dtype.kind in "iu" and value.ndim <= 1:
        return tuple(int(v) for v in value.reshape(-1))
    if isinstance(value, int):
        return (value,)
    raise refuse(node, f"{role} must be a constant list of integers (an initializer or Constant), "
                       f"got {type(value).__name__}")


def axis_in(node: Node, axis: int, rank: int, what: str = "axis") -> int:
    """``axis`` normalised to 0..rank-1 (refused when out of range)."""
    if not -rank <= axis < rank:
        raise refuse(node, f"{what} {axis} is out of range for rank {rank}")
    return axis % rank


def symmetric_pads(node: Node, pads: Iterable[int], dims: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """ONNX pads (all begins, then all ends) → (begins, ends); negative pads refused."""
    pads = tuple(pads) or (0,) * (2 * dims)
    need(node, len(pads) == 2 * dims, f"pads {pads} must have {2 * dims} entries")
    need(node, all(p >= 0 for p in pads), f"negative pads {pads} are not supported")
    return pads[:dims], pads[dims:]


def spatial_ints(node: Node, values: Iterable[int], dims: int, name: str, default: int = 1) -> tuple[int, ...]:
    values = tuple(values) or (default,) * dims
    need(node, len(values) == dims and all(v >= 1 for v in values),
         f"{name} {values} must be {dims} positive integers")
    return values
