"""The forward pass behind a certificate: the analysed graph, with its per-example error bound.

:class:`CertifiedForward` runs exactly the graph the analyser bounded: the nodes that depend on
the input (values or shape) run per batch with the eager ATen kernels; the constants, weights
computed from parameters included, are the values the analysis used, computed once.  While it
runs it measures, per example, the norms the floating-point bound needs (:mod:`.fperror`), and
returns with the logits the bound a + b·r on every logit's error over the ball of radius r.
"""

from __future__ import annotations

from typing import Any

import torch

from ..threat import Norm
from .fperror import Err, Key, evaluate, row_norms


def conv2d_gemm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride: Any = 1,
                padding: Any = 0, dilation: Any = 1, groups: int = 1) -> torch.Tensor | None:
    """A direct 2-D convolution as one batched GEMM over the unfolded input (None when not applicable).

    It computes the same dot products, one per output, as a direct convolution, so the floating-point bound
    holds (it does not depend on the summation order).  On CUDA, with cuDNN off (its algorithm choice may
    include Winograd or FFT, which the bound does not cover), ATen's fallback runs one example at a time;
    this runs the batch at once.
    """
    if groups != 1 or isinstance(padding, str) or x.dim() != 4 or weight.dim() != 4:
        return None
    two = lambda v: tuple(v) * (2 // len(v)) if isinstance(v, (tuple, list)) else (int(v), int(v))  # noqa: E731
    (sh, sw), (ph, pw), (dh, dw) = two(stride), two(padding), two(dilation)
    n, _, h, w = x.shape
    cout, _, kh, kw = weight.shape
    oh, ow = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    cols = torch.nn.functional.unfold(x, (kh, kw), dilation=(dh, dw), padding=(ph, pw), stride=(sh, sw))
    out = torch.matmul(weight.reshape(cout, -1), cols).view(n, cout, oh, ow)
    return out if bias is None else out + bias.view(1, -1, 1, 1)


_CONV2D = {torch.ops.aten.conv2d.default}


class CertifiedForward:
    #: run 2-D convolutions as one GEMM (:func:`conv2d_gemm`): None → on CUDA only
    gemm_conv: bool | None = None

    def __init__(self, gm: torch.fx.GraphModule, env: dict[Any, Any], user: str, err: Err, norm: Norm):
        graph = gm.graph
        self.norm = norm
        self.err = err
        self.keys: dict[Any, list[Key]] = {}
        for key in err.keys:
            self.keys.setdefault(key[0], []).append(key)
        placeholder = next(n for n in graph.nodes if n.op == "placeholder" and n.name == user)
        dynamic = {placeholder}
        order: list[Any] = []
        for node in graph.nodes:
            if node.op == "call_function" and any(n in dynamic for n in node.all_input_nodes):
                dynamic.add(node)
                order.append(node)
        self.placeholder = placeholder
        self.order = order
        self.output = next(n for n in graph.nodes if n.op == "output")
        #: constants the dynamic nodes read (weights, derived weights), as the analysis computed them
        self.constants = {n: env[n] for node in order + [self.output] for n in node.all_input_nodes
                          if n not in dynamic}
        last_use: dict[Any, Any] = {}
        for node in order + [self.output]:
            for n in node.all_input_nodes:
                if n in dynamic:
                    last_use[n] = node
        self.release: dict[Any, list[Any]] = {}
        for n, user_node in last_use.items():
            self.release.setdefault(user_node, []).append(n)

    def to(self, device: torch.device | str) -> "CertifiedForward":
        self.constants = {n: v.to(device) if isinstance(v, torch.Tensor) else v for n, v in self.constants.items()}
        return self

    @property
    def device(self) -> torch.device:
        for v in self.constants.values():
            if isinstance(v, torch.Tensor):
                return v.device
        return torch.device("cpu")

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(logits, a, b): float64 a, b per example, each logit's error ≤ a + b·r on B(x, r) ∩ box."""
        env: dict[Any, Any] = dict(self.constants)
        env[self.placeholder] = x
        norms: dict[Key, torch.Tensor] = {}
        self._measure(self.placeholder, x, norms)

        def value(n: Any) -> Any:
            return env[n]

        for node in self.order:
            args = torch.fx.node.map_arg(node.args, value)
            kwargs = torch.fx.node.map_arg(node.kwargs, value)
            if isinstance(kwargs.get("device"), torch.device):  # a factory traced on another device
                kwargs = {**kwargs, "device": x.device}
            out = None
            if node.target in _CONV2D and (self.gemm_conv if self.gemm_conv is not None else x.is_cuda):
                out = conv2d_gemm(*args, **kwargs)
            if out is None:
                out = node.target(*args, **kwargs)
            env[node] = out
            if node in self.keys:
                self._measure(node, out, norms)
            for n in self.release.get(node, ()):
                if n not in self.constants and n is not node:
                    env.pop(n, None)
        result = torch.fx.node.map_arg(self.output.args[0], value)
        logits = result[0] if isinstance(result, (tuple, list)) else result
        a, b = evaluate(self.err, norms.__getitem__, int(x.shape[0]), x.device)
        return logits, a, b

    def _measure(self, node: Any, out: Any, norms: dict[Key, torch.Tensor]) -> None:
        for key in self.keys.get(node, ()):
            t = out if key[1] is None else out[key[1]]
            norms[key] = row_norms(t, self.norm)


class ForwardSet:
    """One :class:`CertifiedForward` per analysed batch size (graphs that may change with it), or one for all."""

    def __init__(self, forwards: dict[int | None, CertifiedForward]):
        self.forwards = forwards

    def for_batch(self, size: int) -> CertifiedForward | None:
        return self.forwards.get(None) or self.forwards.get(size)

    def to(self, device: torch.device | str) -> "ForwardSet":
        for f in self.forwards.values():
            f.to(device)
        return self
