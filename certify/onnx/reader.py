"""Reading an ONNX file into plain values, refusing what lipcert does not run (docs/security.md).

The file is parsed with the ``onnx`` package's protobuf classes (``ModelProto.ParseFromString``):
parsing protobuf builds messages and runs no code from the file.  ``onnx.load`` is *not* used,
because it follows external-data paths written in the file and would read any file they name.

Refused, each with one :class:`~certify.errors.BadInputError` line naming what was found:

- tensors stored outside the file (external data), string or complex tensors, tensors whose
  declared size disagrees with the bytes they hold, or that declare more than
  :data:`MAX_TENSOR_ELEMENTS` elements (so a hostile size allocates nothing);
- operator sets other than the default domain (``""`` / ``ai.onnx``) or outside
  :data:`OPSET_RANGE`, model-local functions, subgraph attributes, training info;
- graphs with other than one (float32) data input and one output, and input dimensions above
  :data:`MAX_DIM` or examples above :data:`MAX_INPUT_ELEMENTS` elements.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BadInputError, short_repr

#: The opsets whose operator semantics :mod:`certify.onnx.ops` implements (both ends included).
OPSET_RANGE = (7, 28)
#: The most elements one stored tensor may declare.
MAX_TENSOR_ELEMENTS = 1 << 28
#: The largest size of one input dimension.
MAX_DIM = 1 << 20
#: The most elements one example of the input may have.
MAX_INPUT_ELEMENTS = 1 << 26
#: The largest ONNX file read (protobuf's own limit is 2 GiB).
MAX_FILE_BYTES = (1 << 31) - 1


@dataclass(frozen=True)
class Node:
    """One graph node: its op, name, input and output value names, and attributes as plain values."""

    op: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: dict[str, Any]


@dataclass(frozen=True)
class OnnxGraph:
    """An ONNX classifier as plain values: what :mod:`certify.onnx.convert` builds a module from."""

    path: str
    opset: int
    input_name: str
    #: the declared input shape; a symbolic dimension is its name (a str)
    input_shape: tuple[int | str, ...]
    output_name: str
    initializers: dict[str, np.ndarray]
    nodes: tuple[Node, ...]


def read_onnx(path: str | os.PathLike[str]) -> OnnxGraph:
    """Parse and check an ONNX file (see the module docs); no code from the file runs."""
    mp = _parse(Path(path))
    where = str(path)
    opset = _opset(mp, where)
    if len(mp.functions):
        raise BadInputError(f"ONNX model {where!r} defines local functions "
                            f"({short_repr(mp.functions[0].name, 40)}); lipcert reads plain graphs only")
    if len(mp.training_info):
        raise BadInputError(f"ONNX model {where!r} holds training info; export it for inference")
    g = mp.graph
    inits = {t.name: tensor_array(t, where) for t in g.initializer}
    if len(g.sparse_initializer):
        raise BadInputError(f"ONNX model {where!r} has sparse initializers; lipcert reads dense tensors only")
    name, shape = _data_input(g, inits, where)
    if len(g.output) != 1:
        raise BadInputError(f"ONNX model {where!r} has {len(g.output)} outputs; expected one (the logits)")
    nodes = tuple(_node(n, where) for n in g.node)
    return OnnxGraph(path=where, opset=opset, input_name=name, input_shape=shape, output_name=g.output[0].name,
                     initializers=inits, nodes=nodes)


def _parse(p: Path) -> Any:
    try:
        import onnx
    except ImportError as err:
        raise BadInputError(f"{str(p)!r} looks like an ONNX model; reading it needs the onnx package: "
                            "pip install onnx (or pip install 'lipcert[onnx]')") from err
    size = p.stat().st_size
    if size > MAX_FILE_BYTES:
        raise BadInputError(f"ONNX model {str(p)!r} is {size} bytes, over protobuf's 2 GiB limit")
    mp = onnx.ModelProto()
    try:
        mp.ParseFromString(p.read_bytes())
    except Exception as err:  # noqa: BLE001 - protobuf raises DecodeError and others on damaged bytes
        raise BadInputError(f"cannot read ONNX model {str(p)!r}: it is not a valid ModelProto ({type(err).__name__})"
                            ) from err
    if not mp.HasField("graph"):
        raise BadInputError(f"ONNX model {str(p)!r} has no graph")
    return mp


def _opset(mp: Any, where: str) -> int:
    version = None
    for imp in mp.opset_import:
        if imp.domain not in ("", "ai.onnx"):
            raise BadInputError(f"ONNX model {where!r} imports operator set domain {short_repr(imp.domain, 60)}; "
                                "lipcert supports the default ONNX domain only")
        version = int(imp.version)
    if version is None:
        raise BadInputError(f"ONNX model {where!r} imports no operator set")
    lo, hi = OPSET_RANGE
    if not lo <= version <= hi:
        raise BadInputError(f"ONNX model {where!r} uses opset {version}; lipcert supports opsets {lo} to {hi}")
    return version


def _data_input(g: Any, inits: dict[str, np.ndarray], where: str) -> tuple[str, tuple[int | str, ...]]:
    """The one graph input that is not an initializer (old IR versions also list initializers as inputs)."""
    data = [i for i in g.input if i.name not in inits]
    if len(data) != 1:
        raise BadInputError(f"ONNX model {where!r} takes {len(data)} data inputs; expected one")
    vi = data[0]
    tt = vi.type.tensor_type if vi.type.HasField("tensor_type") else None
    if tt is None or tt.elem_type != 1:  # TensorProto.FLOAT
        raise BadInputError(f"ONNX model {where!r}: input {short_repr(vi.name, 40)} must be a float32 tensor")
    if not tt.HasField("shape"):
        raise BadInputError(f"ONNX model {where!r}: input {short_repr(vi.name, 40)} has no declared shape")
    dims: list[int | str] = []
    for d in tt.shape.dim:
        if d.HasField("dim_value"):
            if not 0 < d.dim_value <= MAX_DIM:
                raise BadInputError(f"ONNX model {where!r}: input dimension {d.dim_value} is outside 1..{MAX_DIM}")
            dims.append(int(d.dim_value))
        else:
            dims.append(str(d.dim_param) or "?")
    if len(dims) < 2:
        raise BadInputError(f"ONNX model {where!r}: input shape {tuple(dims)} has no batch dimension; "
                            "expected (batch, ...)")
    if any(isinstance(d, str) for d in dims[1:]):
        raise BadInputError(f"ONNX model {where!r}: input shape {tuple(dims)} is symbolic beyond the batch "
                            "dimension; export the model with a fixed example shape")
    if math.prod(dims[1:]) > MAX_INPUT_ELEMENTS:  # type: ignore[arg-type]
        raise BadInputError(f"ONNX model {where!r}: input shape {tuple(dims)} has over {MAX_INPUT_ELEMENTS} "
                            "elements per example")
    if isinstance(dims[0], int) and dims[0] != 1:
        raise BadInputError(f"ONNX model {where!r}: input has a fixed batch of {dims[0]}; export it with batch 1 "
                            "or a symbolic batch dimension")
    return vi.name, tuple(dims)


_DTYPES = {1: np.float32, 6: np.int32, 7: np.int64, 11: np.float64, 9: np.bool_}
_FIELDS = {1: "float_data", 6: "int32_data", 7: "int64_data", 11: "double_data", 9: "int32_data"}


def tensor_array(t: Any, where: str) -> np.ndarray:
    """A TensorProto → a numpy array, checked: dtype, no external data, size matches the bytes."""
    label = short_repr(t.name or "<constant>", 60)
    if t.data_location == 1 or len(t.external_data):
        raise BadInputError(f"ONNX model {where!r}: tensor {label} is stored in an external file; lipcert reads "
                            "self-contained models only (save it without external data)")
    if t.data_type not in _DTYPES:
        raise BadInputError(f"ONNX model {where!r}: tensor {label} has data type {t.data_type}; "
                            "expected float32, float64, int32, int64 or bool")
    dims = tuple(int(d) for d in t.dims)
    if any(d < 0 for d in dims) or math.prod(dims) > MAX_TENSOR_ELEMENTS:
        raise BadInputError(f"ONNX model {where!r}: tensor {label} declares shape {short_repr(dims, 60)}, "
                            f"over {MAX_TENSOR_ELEMENTS} elements or negative")
    dtype = np.dtype(_DTYPES[t.data_type])
    n = math.prod(dims)
    if t.HasField("raw_data"):
        if len(t.raw_data) != n * dtype.itemsize:
            raise BadInputError(f"ONNX model {where!r}: tensor {label} declares {n} elements but holds "
                                f"{len(t.raw_data)} bytes")
        arr = np.frombuffer(t.raw_data, dtype=dtype.newbyteorder("<")).astype(dtype)
    else:
        values = getattr(t, _FIELDS[t.data_type])
        if len(values) != n:
            raise BadInputError(f"ONNX model {where!r}: tensor {label} declares {n} elements but holds {len(values)}")
        arr = np.asarray(values, dtype=dtype)
    return arr.reshape(dims).copy()


_ATTR_KINDS = {1: "f", 2: "i", 3: "s", 4: "t", 6: "floats", 7: "ints"}


def _node(n: Any, where: str) -> Node:
    if n.domain not in ("", "ai.onnx"):
        raise BadInputError(f"ONNX model {where!r}: node {short_repr(n.name, 60)} uses operator domain "
                            f"{short_repr(n.domain, 60)}; lipcert supports the default ONNX domain only")
    attrs: dict[str, Any] = {}
    for a in n.attribute:
        if a.type not in _ATTR_KINDS:
            raise BadInputError(f"ONNX model {where!r}: node {short_repr(n.name, 60)} ({n.op_type}) has attribute "
                                f"{short_repr(a.name, 40)} of a kind lipcert does not read (graphs, sparse tensors "
                                "or strings lists)")
        if a.ref_attr_name:
            raise BadInputError(f"ONNX model {where!r}: node {short_repr(n.name, 60)} refers to a function attribute")
        kind = _ATTR_KINDS[a.type]
        if kind == "t":
            attrs[a.name] = tensor_array(a.t, where)
        elif kind in ("floats", "ints"):
            attrs[a.name] = tuple(getattr(a, kind))
        elif kind == "s":
            attrs[a.name] = a.s.decode("utf-8", "replace")
        else:
            attrs[a.name] = getattr(a, kind)
    return Node(op=str(n.op_type), name=str(n.name), inputs=tuple(n.input), outputs=tuple(n.output), attrs=attrs)
