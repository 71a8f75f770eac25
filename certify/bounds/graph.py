"""From a model to a :class:`~.layers.Network`: the model is exported with torch.export and its ATen graph
is read op by op, in its (topological) order, into a DAG of layers: a value may feed several layers, and
residual sums, differences of two branches and concatenations join them.  Any op without a rule here, or
an argument outside a rule's preconditions, makes the model ``unverifiable: <op>`` — nothing is
approximated.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import BadInputError, LipschitzUnverifiedError
from .layers import Activation, Affine, Concat, Layer, Network, Sum
from .pooling import MaxPool

EXPORT_BATCH = 2


class UnverifiableOpError(LipschitzUnverifiedError):
    """The model contains an op bound propagation has no sound rule for; the message names it."""


def network_from_module(module: Any, input_shape: tuple[int, ...]) -> Network:
    """Export ``module`` (eval mode) at a small batch and read its graph."""
    example = torch.zeros(EXPORT_BATCH, *input_shape, dtype=_dtype(module), device=_device(module))
    try:
        ep = torch.export.export(module, (example,))
    except Exception as err:
        raise UnverifiableOpError(f"unverifiable: the model could not be exported to a graph "
                                  f"({str(err).splitlines()[0][:160]})") from err
    return network_from_program(ep, input_shape)


def _dtype(module: Any) -> torch.dtype:
    for p in list(module.parameters()) + list(module.buffers()):
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def _device(module: Any) -> torch.device:
    for p in list(module.parameters()) + list(module.buffers()):
        return p.device
    return torch.device("cpu")


def _constants(ep: Any) -> dict[str, torch.Tensor]:
    out = {}
    for spec in ep.graph_signature.input_specs:
        if spec.kind.name in ("PARAMETER", "BUFFER"):
            out[spec.arg.name] = ep.state_dict[spec.target] if spec.target in ep.state_dict else ep.constants[spec.target]
        elif spec.kind.name == "CONSTANT_TENSOR":
            out[spec.arg.name] = ep.constants[spec.target]
    return out


def network_from_program(ep: Any, input_shape: tuple[int, ...]) -> Network:
    consts = _constants(ep)
    user = [s.arg.name for s in ep.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
    if len(user) != 1:
        raise UnverifiableOpError(f"unverifiable: the graph takes {len(user)} inputs, not one")
    value = {user[0]: 0}  # node name → value index (0 the input, k + 1 the output of layer k)
    layers: list[Layer] = []
    sources: list[tuple[int, ...]] = []
    unit = None
    for node in ep.graph.nodes:
        if node.op != "call_function":
            continue
        op = str(node.target)
        dep = [a for a in _node_args(node) if a.name not in consts]
        if not dep:  # constants only (e.g. a normalisation's mean picked out of a buffer): fold it
            consts[node.name] = _fold(node, consts)
            continue
        if op not in RULES or any(a.name not in value for a in dep):
            raise UnverifiableOpError(f"unverifiable: {op} (no bound-propagation rule)")
        layer = _layer(node, op, consts, dep)
        if layer is None:  # an identity
            value[node.name] = value[dep[0].name]
            continue
        layers.append(layer)
        sources.append(tuple(value[a.name] for a in dep))
        value[node.name] = len(layers)
        unit = unit or _unit(node)
    out = next(n for n in ep.graph.nodes if n.op == "output").args[0]
    if len(out) != 1 or not hasattr(out[0], "name") or value.get(out[0].name) != len(layers):
        raise UnverifiableOpError("unverifiable: the graph's output is not its last layer's value")
    logits = _shape(out[0])
    if len(logits) != 1:
        raise BadInputError(f"the model must return logits of shape batch×classes, got per-example shape {logits}")
    return Network(tuple(layers), tuple(input_shape), int(logits[0]), unit or 2.0 ** -24, tuple(sources))


def _fold(node: Any, consts: dict[str, torch.Tensor]) -> torch.Tensor:
    """Evaluate an ATen op on constant tensors (no user code runs: the target is an ATen overload)."""
    if not isinstance(node.target, torch._ops.OpOverload):
        raise UnverifiableOpError(f"unverifiable: {node.target} (not an ATen op)")
    args = [[consts[b.name] for b in a] if isinstance(a, (list, tuple)) and a and all(hasattr(b, "name") for b in a)
            else consts[a.name] if hasattr(a, "name") else a for a in node.args]
    kwargs = {k: consts[v.name] if hasattr(v, "name") else v for k, v in node.kwargs.items()}
    out = node.target(*args, **kwargs)
    if not isinstance(out, torch.Tensor):
        raise UnverifiableOpError(f"unverifiable: {node.target} on constants returns {type(out).__name__}")
    return out


def _node_args(node: Any) -> list[Any]:
    import torch.fx

    flat: list[Any] = []
    for a in list(node.args) + list(node.kwargs.values()):
        flat.extend(a if isinstance(a, (list, tuple)) else [a])
    return [a for a in flat if isinstance(a, torch.fx.Node)]


def _shape(node: Any) -> tuple[int, ...]:
    val = node.meta.get("val")
    if val is None or val.dim() < 1 or val.shape[0] != EXPORT_BATCH:
        raise UnverifiableOpError(f"unverifiable: {node.target} (its output does not keep the batch dimension)")
    return tuple(int(s) for s in val.shape[1:])


def _unit(node: Any) -> float | None:
    val = node.meta.get("val")
    return torch.finfo(val.dtype).eps / 2 if val is not None and val.is_floating_point() else None


def _f64(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to(torch.float64)


def _layer(node: Any, op: str, consts: dict[str, torch.Tensor], dep: list[Any]) -> Layer | None:
    if op == "aten.cat.default":
        return _cat(node, consts, dep)
    if len(dep) > 1:
        if op not in ("aten.add.Tensor", "aten.sub.Tensor"):
            raise UnverifiableOpError(f"unverifiable: {op} of two network values (only sums, differences and "
                                      f"concatenations join branches)")
        return _sum(node, op, dep)
    first = node.args[0] if node.args else None
    if op not in EITHER_SIDE and getattr(first, "name", None) != dep[0].name:
        # e.g. linear(constant, weight=network value): every other rule reads its constants from args 1…
        raise UnverifiableOpError(f"unverifiable: {op} with the network's value as an argument other than its "
                                  f"first")
    return RULES[op](node, consts, _shape(dep[0]), _shape(node))


def _sum(node: Any, op: str, dep: list[Any]) -> Layer:
    """x + α·y, x − α·y of two network values of the same shape (no broadcasting)."""
    shapes = {_shape(a) for a in dep} | {_shape(node)}
    alpha = float(node.kwargs.get("alpha", 1.0))
    if len(shapes) != 1 or not math.isfinite(alpha):
        raise UnverifiableOpError(f"unverifiable: {op} of network values of shapes {sorted(shapes)} "
                                  f"(broadcasting between branches), alpha={alpha}")
    return Sum(op, (1.0, -alpha if op.startswith("aten.sub") else alpha), _shape(node))


def _cat(node: Any, consts: dict, dep: list[Any]) -> Layer:
    pieces = list(node.args[0])
    dim = int(node.args[1]) if len(node.args) > 1 else int(node.kwargs.get("dim", 0))
    ndim = len(_shape(node)) + 1
    dim = dim + ndim if dim < 0 else dim
    if len(pieces) != len(dep) or any(not hasattr(p, "name") or p.name in consts for p in pieces) or dim == 0:
        raise UnverifiableOpError("unverifiable: aten.cat.default (of constants, or along the batch dimension)")
    return Concat("aten.cat", dim, tuple(_shape(p)[dim - 1] for p in pieces))


def _max_pool(node: Any, consts: dict, s_in: tuple, s_out: tuple) -> Layer:
    kernel = _pair(_const(node, consts, 1))
    stride, padding, dilation, ceil = (_const(node, consts, i, d) for i, d in ((2, []), (3, 0), (4, 1), (5, False)))
    stride = _pair(stride) if stride else kernel
    if _pair(dilation) != (1, 1) or ceil or len(s_in) != 3:
        raise UnverifiableOpError(f"unverifiable: aten.max_pool2d with dilation={dilation}, ceil_mode={ceil} on "
                                  f"shape {s_in} (only dilation 1, ceil_mode False, batch×C×H×W)")
    return MaxPool("aten.max_pool2d", kernel, stride, _pair(padding), s_in, s_out)


def _const(node: Any, consts: dict[str, torch.Tensor], i: int, default: Any = None) -> Any:
    args = list(node.args)
    if i >= len(args):
        return default
    a = args[i]
    return consts[a.name] if hasattr(a, "name") and a.name in consts else a


def _linear(node: Any, consts: dict, s_in: tuple, s_out: tuple) -> Layer:
    w, b = _f64(_const(node, consts, 1)), _const(node, consts, 2)
    wa = w.abs()
    return Affine("aten.linear", lambda x: x @ w.T, lambda x: x @ wa.T, None if b is None else _f64(b).view(1, -1),
                  s_in, s_out, roundings=w.shape[1] + 1, matrix=w)


def _matmul(node: Any, consts: dict, s_in: tuple, s_out: tuple) -> Layer:
    """x @ W with a constant 2-D W on the right (ONNX MatMul and Gemm convert to this)."""
    op = str(node.target)
    w = _const(node, consts, 1)
    if not isinstance(w, torch.Tensor) or w.dim() != 2 or not s_in or s_in[-1] != w.shape[0]:
        what = tuple(w.shape) if isinstance(w, torch.Tensor) else type(w).__name__
        raise UnverifiableOpError(f"unverifiable: {op} of shape {s_in} by {what} (only a network value times a "
                                  f"constant matrix)")
    w = _f64(w)
    wa = w.abs()
    return Affine("aten.matmul", lambda x: x @ w, lambda x: x @ wa, None, s_in, s_out, roundings=w.shape[0] + 1,
                  matrix=w.T.contiguous())


def _conv(node: Any, consts: dict, s_in: tuple, s_out: tuple) -> Layer:
    w, b = _f64(_const(node, consts, 1)), _const(node, consts, 2)
    stride, padding, dilation, groups = (_const(node, consts, i, d) for i, d in ((3, 1), (4, 0), (5, 1), (6, 1)))
    if isinstance(padding, str) or len(s_in) != 3:
        raise UnverifiableOpError(f"unverifiable: aten.conv2d with padding={padding!r} on shape {s_in}")
    kw = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
    wa = w.abs()
    return Affine("aten.conv2d", lambda x: F.conv2d(x, w, None, **kw), lambda x: F.conv2d(x, wa, None, **kw),
                  None if b is None else _f64(b).view(1, -1, 1, 1), s_in, s_out,
                  roundings=int(w[0].numel()) + 1)


def _batch_norm(node: Any, consts: dict, s_in: tuple, s_out: tuple) -> Layer:
    w, b, mean, var = (_const(node, consts, i) for i in (1, 2, 3, 4))
    training, eps = _const(node, consts, 5), _const(node, consts, 7)
    if training or mean is None or var is None:
        raise UnverifiableOpError("unverifiable: aten.batch_norm in training mode (batch statistics)")
    shape = (1, -1) + (1,) * (len(s_in) - 1)
    mean, var = _f64(mean).view(shape), _f64(var).view(shape)
    gam = torch.ones_like(mean) if w is None else _f64(w).view(shape)
    beta = torch.zeros_like(mean) if b is None else _f64(b).view(shape)
    s = gam / torch.sqrt(var + float(eps))
    return Affine("aten.batch_norm", lambda x: x * s, lambda x: x * s.abs(), beta - s * mean, s_in, s_out,
                  roundings=12, extra=s.abs() * mean.abs() + beta.abs(), structure="diagonal")


def _avg_pool(node: Any, consts: dict, s_in: tuple, s_out: tuple) -> Layer:
    kernel = _const(node, consts, 1)
    stride, padding, ceil, include, div = (_const(node, consts, i, d) for i, d in
                                           ((2, []), (3, 0), (4, False), (5, True), (6, None)))
    kw = {"kernel_size": kernel, "stride": stride or None, "padding": padding, "ceil_mode": ceil,
          "count_include_pad": include, "divisor_override": div}
    fn = lambda x: F.avg_pool2d(x, **kw)
    return Affine("aten.avg_pool2d", fn, fn, None, s_in, s_out, roundings=math.prod(_pair(kernel)) + 1)


def _pair(k: Any) -> tuple[int, int]:
    k = list(k) if isinstance(k, (list, tuple)) else [k]
    return (int(k[0]), int(k[-1]))


def _reshape(node: Any, consts: dict, s_in: tuple, s_out: tuple) -> Layer:
    return Affine(str(node.target), lambda x: x.reshape(x.shape[0], *s_out), lambda x: x.reshape(x.shape[0], *s_out),
                  None, s_in, s_out, roundings=0, structure="reshape")


def _identity(node: Any, consts: dict, s_in: tuple, s_out: tuple) -> Layer | None:
    if str(node.target) == "aten.dropout.default" and _const(node, consts, 2):
        raise UnverifiableOpError("unverifiable: aten.dropout.default in training mode")
    return None


def _relu(node: Any, consts: dict, s_in: tuple, s_out: tuple) -> Layer:
    return Activation("aten.relu", 0.0, s_in)


def _leaky(node: Any, consts: dict, s_in: tuple, s_out: tuple) -> Layer:
    slope = float(_const(node, consts, 1, 0.01))
    if not 0.0 <= slope < 1.0:
        raise UnverifiableOpError(f"unverifiable: aten.leaky_relu with negative_slope={slope} (only 0 ≤ slope < 1)")
    return Activation("aten.leaky_relu", slope, s_in)


def _elementwise(kind: str) -> Callable[..., Layer]:
    """x + c, x − c, c − x, x·c, c·x, x / c with a constant c that does not change the shape."""

    def rule(node: Any, consts: dict, s_in: tuple, s_out: tuple) -> Layer:
        op = str(node.target)
        args = list(node.args)
        first_is_x = hasattr(args[0], "name") and args[0].name not in consts
        other = args[1] if first_is_x else args[0]
        c = consts[other.name] if hasattr(other, "name") else torch.tensor(float(other), dtype=torch.float64, device="cpu")
        alpha = float(node.kwargs.get("alpha", 1.0))
        if s_in != s_out or c.dim() > len(s_in) + 1 or (c.dim() == len(s_in) + 1 and c.shape[0] != 1):
            raise UnverifiableOpError(f"unverifiable: {op} with a constant of shape {tuple(c.shape)} on shape {s_in}")
        c = _f64(c)
        c = c.view(1, *c.shape) if c.dim() <= len(s_in) else c
        if kind in ("add", "sub"):
            neg = -1.0 if kind == "sub" else 1.0
            scale, bias = (1.0, neg * alpha * c) if first_is_x else (neg * alpha, c)
            return Affine(op, lambda x: scale * x, lambda x: abs(scale) * x, bias, s_in, s_out, roundings=1,
                          structure="diagonal")
        if kind == "div":
            if not first_is_x or bool((c == 0).any()):
                raise UnverifiableOpError(f"unverifiable: {op} (division by the network's value, or by zero)")
            return Affine(op, lambda x: x / c, lambda x: x / c.abs(), None, s_in, s_out, roundings=1,
                          structure="diagonal")
        return Affine(op, lambda x: x * c, lambda x: x * c.abs(), None, s_in, s_out, roundings=1,
                          structure="diagonal")

    return rule


#: ops whose network value may be either argument (the constant is the other one)
EITHER_SIDE = frozenset({"aten.add.Tensor", "aten.sub.Tensor", "aten.mul.Tensor", "aten.div.Tensor"})

RULES: dict[str, Callable[..., Layer | None]] = {
    "aten.linear.default": _linear,
    "aten.matmul.default": _matmul,
    "aten.mm.default": _matmul,
    "aten.conv2d.default": _conv,
    "aten.batch_norm.default": _batch_norm,
    "aten.avg_pool2d.default": _avg_pool,
    "aten.relu.default": _relu,
    "aten.relu_.default": _relu,
    "aten.leaky_relu.default": _leaky,
    "aten.flatten.using_ints": _reshape,
    "aten.view.default": _reshape,
    "aten.reshape.default": _reshape,
    "aten._unsafe_view.default": _reshape,
    "aten.unflatten.int": _reshape,
    "aten.dropout.default": _identity,
    "aten.max_pool2d.default": _max_pool,
    "aten.cat.default": _reshape,  # handled by _cat
    "aten.add.Tensor": _elementwise("add"),
    "aten.add.Scalar": _elementwise("add"),
    "aten.sub.Tensor": _elementwise("sub"),
    "aten.sub.Scalar": _elementwise("sub"),
    "aten.mul.Tensor": _elementwise("mul"),
    "aten.mul.Scalar": _elementwise("mul"),
    "aten.div.Tensor": _elementwise("div"),
    "aten.div.Scalar": _elementwise("div"),
}
