"""One torch function per ONNX op of the classifier op set, each checking every attribute.

Every function takes ``(ctx, node, args)`` (``args``: the node's input values, None for an omitted
optional input) and returns the output value.  An attribute the op does not know, or a value it
does not implement exactly (``auto_pad=SAME_*`` on pools, asymmetric pooling pads, a ``ceil_mode``
that changes the output size, ``training_mode=1``, ...), is refused, naming the node; an op not in
:data:`OPS` is refused by :mod:`certify.onnx.convert`.  Semantics follow the ONNX operator
specification for opsets 7 to 28 (Softmax before opset 13 flattens to 2-D; Squeeze and Unsqueeze
take their axes as an attribute before opset 13 and as an input from 13).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .reader import Node
from .values import (
    REQUIRED,
    Ctx,
    ShapeList,
    attributes,
    axis_in,
    ints,
    need,
    refuse,
    spatial_ints,
    symmetric_pads,
    tensor,
)

Op = Callable[[Ctx, Node, list[Any]], Any]
OPS: dict[str, Op] = {}


def op(*names: str) -> Callable[[Op], Op]:
    def register(fn: Op) -> Op:
        for name in names:
            OPS[name] = fn
        return fn
    return register


# --------------------------------------------------------------------------- linear maps


@op("Gemm")
def gemm(ctx: Ctx, node: Node, args: list[Any]) -> torch.Tensor:
    a = attributes(node, {"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 0})
    x, w = tensor(node, args[0], "A"), tensor(node, args[1], "B")
    need(node, x.dim() == 2 and w.dim() == 2, "A and B must be 2-D")
    x = x.t() if a["transA"] else x
    w = w.t() if a["transB"] else w
    y = x @ w
    if a["alpha"] != 1.0:
        y = y * a["alpha"]
    if len(args) > 2 and args[2] is not None:
        c = tensor(node, args[2], "C")
        y = y + (c if a["beta"] == 1.0 else c * a["beta"])
    return y


@op("MatMul")
def matmul(ctx: Ctx, node: Node, args: list[Any]) -> torch.Tensor:
    attributes(node, {})
    return torch.matmul(tensor(node, args[0], "A"), tensor(node, args[1], "B"))


def _conv_setup(node: Node, x: torch.Tensor, w: torch.Tensor, a: dict[str, Any]
                ) -> tuple[torch.Tensor, int, tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    dims = w.dim() - 2
    need(node, dims in (1, 2, 3) and x.dim() == dims + 2, f"expected a 1-D, 2-D or 3-D convolution, got weight rank {w.dim()}")
    if a["kernel_shape"]:
        need(node, tuple(a["kernel_shape"]) == tuple(w.shape[2:]),
             f"kernel_shape {a['kernel_shape']} disagrees with the weight's {tuple(w.shape[2:])}")
    strides = spatial_ints(node, a["strides"], dims, "strides")
    dil = spatial_ints(node, a["dilations"], dims, "dilations")
    if a["auto_pad"] in ("SAME_UPPER", "SAME_LOWER"):
        need(node, not a["pads"], "pads and auto_pad are both given")
        begins, ends = _same_pads(x, w, strides, dil, a["auto_pad"] == "SAME_UPPER")
    else:
        need(node, a["auto_pad"] in ("NOTSET", "VALID"), f"auto_pad {a['auto_pad']!r} is not supported")
        begins, ends = symmetric_pads(node, () if a["auto_pad"] == "VALID" else a["pads"], dims)
    if begins != ends:
        pad = [p for i in reversed(range(dims)) for p in (begins[i], ends[i])]
        x, begins = F.pad(x, pad), (0,) * dims
    return x, dims, strides, dil, begins


def _same_pads(x: torch.Tensor, w: torch.Tensor, strides: tuple[int, ...], dil: tuple[int, ...], upper: bool
               ) -> tuple[tuple[int, ...], tuple[int, ...]]:
    begins, ends = [], []
    for size, k, s, d in zip(x.shape[2:], w.shape[2:], strides, dil):
        total = max((math.ceil(int(size) / s) - 1) * s + (k - 1) * d + 1 - int(size), 0)
        small = total // 2
        begins.append(small if upper else total - small)
        ends.append(total - small if upper else small)
    return tuple(begins), tuple(ends)


_CONV_ATTRS = {"auto_pad": "NOTSET", "dilations": (), "group": 1, "kernel_shape": (), "pads": (), "strides": ()}


@op("Conv")
def conv(ctx: Ctx, node: Node, args: list[Any]) -> torch.Tensor:
    a = attributes(node, _CONV_ATTRS)
    x, w = tensor(node, args[0], "X"), tensor(node, args[1], "W")
    b = tensor(node, args[2], "B") if len(args) > 2 and args[2] is not None else None
    x, dims, strides, dil, pads = _conv_setup(node, x, w, a)
    need(node, a["group"] >= 1 and x.shape[1] == w.shape[1] * a["group"], f"group {a['group']} does not fit "
         f"{x.shape[1]} input channels and weight shape {tuple(w.shape)}")
    fn = (F.conv1d, F.conv2d, F.conv3d)[dims - 1]
    return fn(x, w, b, stride=strides, padding=pads, dilation=dil, groups=a["group"])


@op("ConvTranspose")
def conv_transpose(ctx: Ctx, node: Node, args: list[Any]) -> torch.Tensor:
    a = attributes(node, {**_CONV_ATTRS, "output_padding": (), "output_shape": ()})
    need(node, not a["output_shape"], "output_shape is not supported; give pads instead")
    need(node, a["auto_pad"] in ("NOTSET", "VALID"), f"auto_pad {a['auto_pad']!r} is not supported")
    x, w = tensor(node, args[0], "X"), tensor(node, args[1], "W")
    b = tensor(node, args[2], "B") if len(args) > 2 and args[2] is not None else None
    dims = w.dim() - 2
    need(node, dims in (1, 2, 3) and x.dim() == dims + 2, "expected a 1-D, 2-D or 3-D transposed convolution")
    if a["kernel_shape"]:
        need(node, tuple(a["kernel_shape"]) == tuple(w.shape[2:]), "kernel_shape disagrees with the weight")
    begins, ends = symmetric_pads(node, a["pads"], dims)
    need(node, begins == ends, f"asymmetric pads {a['pads']} are not supported")
    strides = spatial_ints(node, a["strides"], dims, "strides")
    dil = spatial_ints(node, a["dilations"], dims, "dilations")
    outpad = tuple(a["output_padding"]) or (0,) * dims
    need(node, len(outpad) == dims and all(0 <= p < max(s, d) for p, s, d in zip(outpad, strides, dil)),
         f"output_padding {outpad} is not supported")
    fn = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[dims - 1]
    return fn(x, w, b, stride=strides, padding=begins, output_padding=outpad, groups=a["group"], dilation=dil)


# --------------------------------------------------------------------------- elementwise


def _binary(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Op:
    def run(ctx: Ctx, node: Node, args: list[Any]) -> torch.Tensor:
        attributes(node, {})
        return fn(tensor(node, args[0], "A"), tensor(node, args[1], "B"))
    return run


op("Add")(_binary(torch.add))
op("Sub")(_binary(torch.sub))
op("Mul")(_binary(torch.mul))
op("Div")(_binary(torch.div))


def _unary(fn: Callable[[torch.Tensor], torch.Tensor]) -> Op:
    def run(ctx: Ctx, node: Node, args: list[Any]) -> torch.Tensor:
        attributes(node, {})
        return fn(tensor(node, args[0]))
    return run


op("Relu")(_unary(torch.relu))
op("Sigmoid")(_unary(torch.sigmoid))
op("Tanh")(_unary(torch.tanh))


@op("LeakyRelu")
def leaky_relu(ctx: Ctx, node: Node, args: list[Any]) -> torch.Tensor:
    a = attributes(node, {"alpha": 0.01})
    return F.leaky_relu(tensor(node, args[0]), a["alpha"])


@op("Softmax")
def softmax(ctx: Ctx, node: Node, args: list[Any]) -> torch.Tensor:
    a = attributes(node, {"axis": 1 if ctx.opset < 13 else -1})
    x = tensor(node, args[0])
    axis = axis_in(node, a["axis"], x.dim())
    if ctx.opset >= 13:
        return torch.softmax(x, axis)
    flat = x.reshape(math.prod(x.shape[:axis]), -1)  # opset < 13: coerced to 2-D at axis
    return torch.softmax(flat, 1).reshape(x.shape)


@op("BatchNormalization")
def batch_norm(ctx: Ctx, node: Node, args: list[Any]) -> torch.Tensor:
    spec: dict[str, Any] = {"epsilon": 1e-5, "momentum": 0.9}
    spec.update({"spatial": 1} if ctx.opset < 9 else {"training_mode": 0} if ctx.opset >= 14 else {})
    a = attributes(node, spec)
    need(node, a.get("spatial", 1) == 1, "spatial=0 is not supported")
    need(node, a.get("training_mode", 0) == 0, "training_mode=1 is not supported; export the model for inference")
    need(node, len([o for o in node.outputs if o]) == 1, "the running-statistics outputs are not supported")
    x, scale, bias, mean, var = (tensor(node, v, r) for v, r in zip(args, ("X", "scale", "B", "mean", "var")))
    need(node, x.dim() >= 2, "X must have a channel dimension")
    return F.batch_norm(x, mean, var, scale, bias, training=False, eps=float(a["epsilon"]))


# --------------------------------------------------------------------------- pooling


def _pool_setup(node: Node, x: torch.Tensor, a: dict[str, Any]) -> tuple[int, tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    kernel = tuple(a["kernel_shape"])
    dims = len(kernel)
    need(node, dims in (1, 2, 3) and x.dim() == dims + 2, f"kernel_shape {kernel} does not fit input rank {x.dim()}")
    kernel = spatial_ints(node, kernel, dims, "kernel_shape")
    strides = spatial_ints(node, a["strides"], dims, "strides")
    need(node, a["auto_pad"] in ("NOTSET", "VALID"), f"auto_pad {a['auto_pad']!r} is not supported")
    begins, ends = symmetric_pads(node, () if a["auto_pad"] == "VALID" else a["pads"], dims)
    need(node, begins == ends, f"asymmetric pads {a['pads']} are not supported")
    need(node, all(2 * p <= k for p, k in zip(begins, kernel)), f"pads {a['pads']} over half the kernel are not supported")
    if a["ceil_mode"]:
        dil = a.get("dilations") or (1,) * dims
        sizes = [(int(n) + 2 * p - (k - 1) * d - 1) / s for n, p, k, d, s in zip(x.shape[2:], begins, kernel, dil, strides)]
        need(node, all(v == math.floor(v) for v in sizes), "ceil_mode=1 where it changes the output size is not supported")
    return dims, kernel, strides, begins


@op("MaxPool")
def max_pool(ctx: Ctx, node: Node, args: list[Any]) -> torch.Tensor:
    a = attributes(node, {"auto_pad": "NOTSET", "ceil_mode": 0, "dilations": (), "kernel_shape": REQUIRED,
                          "pads": (), "storage_order": 0, "strides": ()})
    need(node, len([o for o in node.outputs if o]) == 1, "the Indices output is not supported")
    x = tensor(node, args[0], "X")
    dims, kernel, strides, pads = _pool_setup(node, x, a)
    dil = spatial_ints(node, a["dilations"], dims, "dilations")
    fn = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[dims - 1]
    return fn(x, kernel, strides, pads, dil)


@op("AveragePool")
def avg_pool(ctx: Ctx, node: Node, args: list[Any]) -> torch.Tensor:
    a = attributes(node, {"auto_pad": "NOTSET", "ceil_mode": 0, "count_include_pad": 0, "dilations": (),
                          "kernel_shape": REQUIRED, "pads": (), "strides": ()})
    x = tensor(node, args[0], "X")
    dims, kernel, strides, pads = _pool_setup(node, x, a)
    need(node, all(d == 1 for d in a["dilations"]), f"dilations {a['dilations']} are not supported")
    fn = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[dims - 1]
    return fn(x, kernel, strides, pads, count_include_pad=bool(a["count_include_pad"]))


@op("GlobalAveragePool")
def global_avg_pool(ctx: Ctx, node: Node, args: list[Any]) -> torch.Tensor:
    attributes(node, {})
    x = tensor(node, args[0], "X")
    need(node, x.dim() >= 3, "X must have spatial dimensions")
    return x.mean(dim=tuple(range(2, x.dim())), keepdim=True)


# --------------------------------------------------------------------------- shapes


@op("Flatten")
def flatten(ctx: Ctx, node: Node, args: list[Any]) -> torch.Tensor:
    a = attributes(node, {"axis": 1})
    x = tensor(node, args[0])
    axis = a["axis"] % x.dim() if a["axis"] < 0 else a["axis"]
    need(node, 0 <= axis <= x.dim(), f"axis {a['axis']} is out of range for rank {x.dim()}")
    if axis == 1:
        return x.flatten(1) if x.dim() > 1 else x.reshape(-1, 1)
    return x.reshape(math.prod(x.shape[:axis]), -1)


@op("Reshape")
def reshape(ctx: Ctx, node: Node, args: list[Any]) -> torch.Tensor:
    a = attributes(node, {"allowzero": 0} if ctx.opset >= 14 else {})
    x = tensor(node, args[0], "data")
    target = list(ints(node, args[1], "shape"))
    need(node, target.count(-1) <= 1 and all(v >= -1 for v in target), f"shape {tuple(target)} is not valid")
    for i, v in enumerate(target):
        if v == 0 and not a.get("allowzero", 0):
            need(node, i < x.dim(), f"shape {tuple(target)} copies a dimension the input lacks")
            target[i] = x.shape[i]
    if target and ctx.batch_declared_one and type(target[0]) is int and target[0] == 1:
        target[0] = ctx.batch  # the model was exported at batch 1; the converter checks rows stay apart
    return x.reshape(target)


@op("Transpose")
def transpose(ctx: Ctx, node: Node, args: list[Any]) -> torch.Tensor:
    x = tensor(node, args[0])
    a = attributes(node, {"perm": tuple(reversed(range(x.dim())))})
    perm = tuple(a["perm"])
    need(node, sorted(perm) == list(range(x.dim())), f"perm {perm} is not a permutation of {x.dim()} axes")
    return x.permute(perm)


@op("Concat")
def concat(ctx: Ctx, node: Node, args: list[Any]) -> Any:
    a = attributes(node, {"axis": REQUIRED})
    if all(not isinstance(v, torch.Tensor) for v in args):  # shape arithmetic
        need(node, a["axis"] in (0, -1), "shape values concatenate along axis 0 only")
        return ShapeList(v for value in args for v in ints(node, value, "input"))
    xs = [tensor(node, v) for v in args]
    return torch.cat(xs, axis_in(node, a["axis"], xs[0].dim()))


@op("Identity")
def identity(ctx: Ctx, node: Node, args: list[Any]) -> Any:
    attributes(node, {})
    return args[0]


@op("Dropout")
def dropout(ctx: Ctx, node: Node, args: list[Any]) -> Any:
    attributes(node, {"seed": 0} if ctx.opset >= 12 else {"ratio": 0.5})
    need(node, len([o for o in node.outputs if o]) == 1, "the mask output is not supported")
    if len(args) > 2 and args[2] is not None:
        need(node, isinstance(args[2], np.ndarray) and not bool(args[2].any()),
             "training_mode must be a constant false")
    return tensor(node, args[0])


def _axes(ctx: Ctx, node: Node, args: list[Any]) -> tuple[int, ...] | None:
    if ctx.opset >= 13:
        attributes(node, {})
        return ints(node, args[1], "axes") if len(args) > 1 and args[1] is not None else None
    axes = attributes(node, {"axes": ()})["axes"]
    return tuple(axes) if axes else None


@op("Squeeze")
def squeeze(ctx: Ctx, node: Node, args: list[Any]) -> torch.Tensor:
    x = tensor(node, args[0], "data")
    axes = _axes(ctx, node, args)
    need(node, axes is not None, "Squeeze without axes is not supported (it would squeeze a batch of 1)")
    dims = sorted({axis_in(node, a, x.dim()) for a in axes})  # type: ignore[union-attr]
    need(node, 0 not in dims, "squeezing the batch dimension is not supported")
    need(node, all(x.shape[d] == 1 for d in dims), f"axes {axes} name dimensions that are not 1")
    return x.squeeze(dims)


@op("Unsqueeze")
def unsqueeze(ctx: Ctx, node: Node, args: list[Any]) -> Any:
    axes = _axes(ctx, node, args)
    need(node, bool(axes), "Unsqueeze needs axes")
    value = args[0]
    if isinstance(value, (int, np.integer, torch.SymInt)) or (isinstance(value, np.ndarray) and value.ndim == 0):
        need(node, tuple(axes) in ((0,), (-1,)), f"a scalar unsqueezes along axis 0 only, got {axes}")  # type: ignore[arg-type]
        return ShapeList((value if isinstance(value, (int, torch.SymInt)) else int(value),))
    x = tensor(node, value, "data")
    rank = x.dim() + len(axes)  # type: ignore[arg-type]
    for d in sorted(axis_in(node, a, rank) for a in axes):  # type: ignore[union-attr]
        x = x.unsqueeze(d)
    return x


# --------------------------------------------------------------------------- constants and shape arithmetic


@op("Shape")
def shape(ctx: Ctx, node: Node, args: list[Any]) -> ShapeList:
    a = attributes(node, {"start": 0, "end": None} if ctx.opset >= 15 else {})
    x = tensor(node, args[0], "data")
    return ShapeList(tuple(x.shape)[a.get("start", 0):a.get("end")])


@op("Gather")
def gather(ctx: Ctx, node: Node, args: list[Any]) -> Any:
    a = attributes(node, {"axis": 0})
    data, idx = args[0], args[1]
    if isinstance(data, torch.Tensor):
        raise refuse(node, "Gather on a tensor is not supported (only on shapes, for reshapes)")
    need(node, a["axis"] == 0 and isinstance(idx, np.ndarray) and idx.dtype.kind in "iu" and idx.ndim <= 1,
         "only constant indices into a shape along axis 0 are supported")
    values = ints(node, data, "data")
    picked = [values[axis_in(node, int(i), len(values), "index")] for i in idx.reshape(-1)]
    return picked[0] if idx.ndim == 0 else ShapeList(picked)


@op("Cast")
def cast(ctx: Ctx, node: Node, args: list[Any]) -> Any:
    a = attributes(node, {"to": REQUIRED, "saturate": 1} if ctx.opset >= 19 else {"to": REQUIRED})
    value = args[0]
    if isinstance(value, torch.Tensor):
        need(node, a["to"] == 1, f"casting float32 data to type {a['to']} is not supported")
        return value
    need(node, a["to"] in (6, 7), f"casting a shape to type {a['to']} is not supported")
    return value


@op("Constant")
def constant(ctx: Ctx, node: Node, args: list[Any]) -> Any:
    return constant_value(node)


def constant_value(node: Node) -> Any:
    """The value of a Constant node (float arrays become buffers in :mod:`.convert`)."""
    a = attributes(node, {"value": None, "value_float": None, "value_floats": None, "value_int": None,
                          "value_ints": None})
    given = [(k, v) for k, v in a.items() if v is not None]
    need(node, len(given) == 1, "exactly one of value, value_float(s), value_int(s) must be given")
    key, value = given[0]
    if key == "value":
        return value
    dtype = np.float32 if "float" in key else np.int64
    return np.asarray(value, dtype=dtype)
