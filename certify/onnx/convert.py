"""An :class:`~certify.onnx.reader.OnnxGraph` → a torch ``nn.Module`` (and a torch.export program).

The module keeps every float32 initializer and float Constant as a buffer and runs the nodes in
order with the op functions of :mod:`certify.onnx.ops`.  ``torch.export`` traces it into an ATen
graph, which the Lipschitz analyser, the bound propagation and the attacks all read.

**Input layout.** The module takes a batch of examples of ``feed_shape`` (default: the ONNX
input's declared shape without its batch dimension).  A batch whose examples have another shape
with the same number of elements is reshaped (row-major) to the declared shape first, so a
(N, 1, 28, 28) MNIST batch feeds a model declared as (N, 784) or (N, 784, 1).  Any other count is
refused; pass ``input_shape`` to state the layout explicitly.

**Batch.** ONNX models exported at a fixed batch of 1 often reshape to a literal ``[1, …]``; that
leading 1 is read as the batch.  Because a graph may still mix examples (a transpose that moves the
batch axis, a squeeze of it), :func:`convert` checks the converted module on random inputs: each
row of a batch of 3 must equal the same example run alone.  When it does not, the module runs
the examples one at a time (:class:`PerExample`), which is always the ONNX model's semantics.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from ..device import model_device
from ..errors import BadInputError, short_repr
from .ops import OPS, constant_value
from .reader import OnnxGraph
from .values import Ctx, refuse

#: The op types :func:`convert` accepts (Softmax is converted, and flagged when it ends the model).
SUPPORTED_OPS = tuple(sorted(OPS))


class OnnxModule(nn.Module):
    """An ONNX graph run by torch (see the module docs)."""

    def __init__(self, graph: OnnxGraph, feed_shape: tuple[int, ...] | None = None):
        super().__init__()
        self.declared = tuple(int(d) for d in graph.input_shape[1:])
        self.feed_shape = tuple(feed_shape) if feed_shape is not None else self.declared
        if math.prod(self.feed_shape) != math.prod(self.declared):
            raise BadInputError(f"input_shape {self.feed_shape} has {math.prod(self.feed_shape)} elements but the "
                                f"ONNX model's input {self.declared} has {math.prod(self.declared)}",
                                param="input_shape")
        self.opset, self.path = graph.opset, graph.path
        self.batch_declared_one = graph.input_shape[0] == 1
        self.input_name, self.output_name = graph.input_name, graph.output_name
        self.nodes = graph.nodes
        self._slots: dict[str, str] = {}  # value name → buffer name
        self._consts: dict[str, Any] = {}  # value name → numpy integer constant
        for name, arr in graph.initializers.items():
            self._keep(name, arr)
        for node in graph.nodes:
            if node.op == "Constant":
                self._keep(node.outputs[0], constant_value(node))
        self.ends_in_softmax = _ends_in_softmax(graph)

    def _keep(self, name: str, arr: np.ndarray) -> None:
        if arr.dtype == np.float32:
            slot = f"c{len(self._slots)}"
            self.register_buffer(slot, torch.from_numpy(np.ascontiguousarray(arr)))
            self._slots[name] = slot
        else:
            self._consts[name] = arr

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._layout(x)
        ctx = Ctx(self.opset, self.path, x.shape[0], self.batch_declared_one)
        env: dict[str, Any] = {self.input_name: x}
        for node in self.nodes:
            if node.op == "Constant":
                continue
            fn = OPS.get(node.op)
            if fn is None:  # checked at conversion; kept for modules built by hand
                raise refuse(node, "unsupported op")
            out = fn(ctx, node, [self._value(env, n) if n else None for n in node.inputs])
            env[node.outputs[0]] = out
        y = self._value(env, self.output_name)
        if not isinstance(y, torch.Tensor):
            raise BadInputError(f"ONNX model {self.path!r}: its output is not a tensor")
        return y if y.dim() == 2 else y.reshape(y.shape[0], -1)

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) == self.declared:
            return x
        if math.prod(x.shape[1:]) != math.prod(self.declared):
            raise BadInputError(f"examples of shape {tuple(x.shape[1:])} do not fit the ONNX model's input "
                                f"{self.declared} ({math.prod(self.declared)} elements); give input_shape",
                                param="input_shape")
        return x.reshape((x.shape[0],) + self.declared)

    def _value(self, env: dict[str, Any], name: str) -> Any:
        if name in env:
            return env[name]
        if name in self._slots:
            return getattr(self, self._slots[name])
        if name in self._consts:
            return self._consts[name]
        raise BadInputError(f"ONNX model {self.path!r}: value {short_repr(name, 60)} is used before it is computed "
                            "(the nodes must be in topological order)")


class PerExample(nn.Module):
    """Runs a module on one example at a time (for graphs that mix the batch, see the module docs)."""

    def __init__(self, inner: OnnxModule):
        super().__init__()
        self.inner = inner
        self.ends_in_softmax = inner.ends_in_softmax

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.inner(x[i:i + 1]) for i in range(x.shape[0])])


def _ends_in_softmax(graph: OnnxGraph) -> bool:
    producer = {o: n for n in graph.nodes for o in n.outputs}
    node = producer.get(graph.output_name)
    while node is not None and node.op in ("Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze"):
        node = producer.get(node.inputs[0])
    return node is not None and node.op in ("Softmax", "LogSoftmax")


def check_ops(graph: OnnxGraph) -> None:
    """Refuse the first node whose op has no converter, naming the op and the node."""
    for node in graph.nodes:
        if node.op not in OPS:
            raise BadInputError(f"ONNX model {graph.path!r}: unsupported op {short_repr(node.op, 40)} at node "
                                f"{short_repr(node.name or '<unnamed>', 60)}; lipcert converts "
                                f"{', '.join(SUPPORTED_OPS)}")


def convert(graph: OnnxGraph, input_shape: tuple[int, ...] | None = None) -> nn.Module:
    """The module that runs ``graph`` on batches of ``input_shape`` (see the module docs), checked."""
    check_ops(graph)
    module = OnnxModule(graph, input_shape).eval()
    for t in module.buffers():
        if not torch.isfinite(t).all():
            raise BadInputError(f"ONNX model {graph.path!r}: a weight has NaN or Inf values")
    return module if _rows_independent(module) else PerExample(module).eval()


def _rows_independent(module: OnnxModule) -> bool:
    gen = torch.Generator().manual_seed(0)  # a CPU generator: draw there, then move to the module
    x = torch.rand((3,) + module.feed_shape, generator=gen, device="cpu").to(model_device(module))
    with torch.no_grad():
        try:
            whole = module(x)
        except BadInputError:
            raise
        except Exception:  # noqa: BLE001 - the graph only runs at its declared batch of 1
            whole = None
        try:
            alone = torch.cat([module(x[i:i + 1]) for i in range(3)])
        except BadInputError:
            raise
        except Exception as err:  # noqa: BLE001
            lines = str(err).strip().splitlines()
            raise BadInputError(f"ONNX model {module.path!r} cannot run after conversion: "
                                f"{(lines[0] if lines else type(err).__name__)[:160]}") from err
    if whole is None or whole.shape != alone.shape:
        return False
    scale = float(alone.abs().max()) + 1.0
    return bool(((whole - alone).abs() <= 1e-5 * scale).all())


def export_program(module: nn.Module, input_shape: tuple[int, ...]) -> Any:
    """The torch.export program of a converted module, with a dynamic batch when the graph allows it."""
    example = torch.zeros((2,) + tuple(input_shape), device=model_device(module))
    if isinstance(module, OnnxModule):
        try:
            return torch.export.export(module, (example,), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
        except Exception:  # noqa: BLE001 - the graph specialises on the batch: export at batch 1
            pass
    return torch.export.export(module, (example[:1],))
