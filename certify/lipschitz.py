"""Sound Lipschitz analysis of torch.export graphs, and certificate verification (SCIENCE §2).

How the analyser works
----------------------
The model is turned into a torch.export graph (the checkpoint's own program,
``torch.export.export`` of an ``nn.Module``, or ``TS2EPConverter`` for
TorchScript) and every node is evaluated on one example input (batch 1).
Nodes that do not depend on the input placeholder are constants: they are
simply evaluated, so weights computed from parameters (L2NNN's W/√b(W),
weight normalisation written with aten ops) become concrete tensors.  Every
input-dependent node carries a guaranteed bound on its Lipschitz constant
with respect to the input, in one norm (L2→L2 or ℓ∞→ℓ∞), propagated with
the per-op rules of SCIENCE §2 (see ``_RULES``).  A node whose op has no
rule makes the model *unverifiable*; the report names the op and the node.
An unknown op is never treated as 1-Lipschitz.

Patterns handled across nodes: two-sided ReLU ``cat(relu(z), relu(-z))``
(and ``relu(z) - z``), norm pooling ``sqrt(A(x²))`` for any non-negative
linear A (sum, mean, average pooling, positive scaling), and ℓ∞-distance
neurons (``sub``, ``abs``, ``amax``, ``add``), which come out at exactly 1
in ℓ∞.  When the output is an affine map of a node h (linear, addmm, mm),
per-logit bounds ‖W_k‖·L_h and pairwise bounds ‖W_i − W_j‖·L_h are
computed (dual norm ‖·‖₁ in ℓ∞); otherwise they follow from the global
bound (per-logit ≤ L, pairs ≤ √2·L in L2 and 2·L in ℓ∞).

Certificate decision (``verify_certificate``)
---------------------------------------------
- A named or declared rule (l2-multi, l2-single, linf-dist) is checked
  against the computed bound: l2-multi needs every per-logit L2 bound ≤ C,
  l2-single the global L2 bound ≤ C, linf-dist the global ℓ∞ bound ≤ C, with
  C the ``--lipschitz-constant``, else the declared constant, else 1 (a
  relative tolerance of ``LIPSCHITZ_CLAIM_TOLERANCE`` absorbs the rounding
  allowance of the bounds).  When it holds, the rule's own formula is used
  with C (so a verified claim gives exactly the radii it declares) and
  ``lipschitz_verified=True``.  Using C rather than the smaller computed bound
  is deliberate: the computed bound is sound too, but the radius then
  reproduces the declared property; ``auto`` without a claim already uses
  the computed bounds.
- When it fails, certification is refused (``LipschitzUnverifiedError``,
  exit 2) with the reason, unless ``assume_lipschitz``; then the plan rests
  on C with ``lipschitz_verified=False``.
- ``auto`` without a declared claim uses the computed bounds: the pairwise
  radius min_j (y_i − y_j)/L_ij, never smaller than the global-bound radius.
  An unverifiable model is refused, naming the op (there is no constant to
  assume).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F

from . import operator_norms as on
from .checkpoint import LoadedModel, Normalize
from .defaults import LIPSCHITZ_CLAIM_TOLERANCE
from .errors import BadInputError, LipschitzUnverifiedError

NORMS = ("l2", "linf")


@dataclass(frozen=True)
class LayerBound:
    """One analysed node: its own Lipschitz factor and a power-iteration estimate (None if not computed)."""

    name: str
    op: str
    bound: float
    estimate: float | None = None


@dataclass(frozen=True)
class LipschitzReport:
    norm: str
    verified: bool
    unverifiable_ops: tuple[str, ...]  #: ``op (node name)`` for each op without a rule
    global_bound: float  #: inf when unverifiable
    per_logit_bounds: tuple[float, ...]
    pair_bounds: tuple[tuple[float, ...], ...]  #: K×K, 0 on the diagonal
    layers: tuple[LayerBound, ...]
    source: str = "torch.export"  #: where the graph came from

    @property
    def reason(self) -> str:
        if self.verified:
            return f"{self.norm} bound {self.global_bound:.6g} computed from the weights"
        return "unverifiable: " + ", ".join(self.unverifiable_ops)


# --------------------------------------------------------------------------- graph acquisition


class _NoRule(Exception):
    """The op has no sound rule for these arguments."""


def _example_shape(model: LoadedModel, input_shape: tuple[int, ...] | None) -> tuple[int, ...]:
    shape = input_shape or model.metadata.input_shape
    if shape is None and model.exported is not None:
        shape = _shape_from_program(model.exported)
    if shape is None:
        raise BadInputError("the Lipschitz analysis needs the input shape: give --data or set "
                            "input_shape in the model metadata")
    return tuple(int(s) for s in shape)


def _shape_from_program(ep: Any) -> tuple[int, ...] | None:
    for spec in ep.graph_signature.input_specs:
        if spec.kind.name == "USER_INPUT":
            node = next(n for n in ep.graph.nodes if n.name == spec.arg.name)
            val = node.meta.get("val")
            if val is not None and all(isinstance(s, int) for s in val.shape[1:]):
                return tuple(int(s) for s in val.shape[1:])
    return None


def exported_program(model: LoadedModel, example: torch.Tensor) -> tuple[Any, str]:
    """The torch.export program to analyse and where it came from."""
    module = model.module
    prefixed = isinstance(module, torch.nn.Sequential) and len(module) and isinstance(module[0], Normalize)
    if model.exported is not None and not prefixed:
        return model.exported, "torch.export"
    if isinstance(module, torch.jit.ScriptModule):
        from torch._export.converter import TS2EPConverter

        return TS2EPConverter(module, (example,)).convert(), "torchscript→torch.export"
    return torch.export.export(module, (example,)), "nn.Module→torch.export"


def _program_inputs(ep: Any, example: torch.Tensor) -> tuple[dict[str, Any], str]:
    values: dict[str, Any] = {}
    user = [s for s in ep.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
    if len(user) != 1:
        raise _NoRule(f"the graph takes {len(user)} user inputs; expected 1")
    for spec in ep.graph_signature.input_specs:
        if spec.kind.name == "USER_INPUT":
            values[spec.arg.name] = example
        elif spec.target in ep.state_dict:
            values[spec.arg.name] = ep.state_dict[spec.target]
        else:
            values[spec.arg.name] = ep.constants[spec.target]
    return values, user[0].arg.name


# --------------------------------------------------------------------------- node information


@dataclass
class _Var:
    """What is known about an input-dependent node."""

    lip: float
    kind: str = "var"  #: var | sq (non-negative combination of squares) | tuple | opaque
    #: for kind "sq": the bound² of sqrt(·) of this node
    q: float = 0.0
    relu_of: Any = None  #: node z when this node is ±relu(z)
    negrelu_of: Any = None  #: node z when this node is ±relu(-z)
    neg_of: Any = None  #: node z when this node is -z
    affine: tuple[torch.Tensor, float] | None = None  #: (W, L_h) when this node is W h + const
    items: list[Any] = field(default_factory=list)


def _op_name(target: Any) -> str:
    packet = getattr(target, "_overloadpacket", None)
    if packet is not None:
        return packet.__name__
    return getattr(target, "__name__", str(target))


class _Analyser:
    def __init__(self, norm: str):
        self.norm = norm
        self.env: dict[Any, Any] = {}
        self.info: dict[Any, _Var] = {}
        self.layers: list[LayerBound] = []
        self.unverifiable: list[str] = []

    # helpers used by the rules ---------------------------------------------
    def var(self, a: Any) -> _Var | None:
        return self.info.get(a) if isinstance(a, torch.fx.Node) else None

    def value(self, a: Any) -> Any:
        return torch.fx.node.map_arg(a, lambda n: self.env[n])

    def expansion(self, a: Any, out: torch.Tensor) -> float:
        """Copy factor when ``a`` is broadcast to ``out``'s shape: √k in L2, 1 in ℓ∞."""
        k = out.numel() / max(self.env[a].numel(), 1)
        return math.sqrt(k) if self.norm == "l2" and k > 1 else 1.0

    def record(self, node: Any, factor: float, estimate: float | None = None) -> None:
        self.layers.append(LayerBound(node.name, _op_name(node.target), float(factor), estimate))

    # main loop -------------------------------------------------------------
    def run(self, gm: torch.fx.GraphModule, inputs: dict[str, Any], user: str) -> Any:
        out_node = None
        for node in gm.graph.nodes:
            if node.op == "placeholder":
                self.env[node] = inputs[node.name]
                if node.name == user:
                    self.info[node] = _Var(1.0)
            elif node.op == "get_attr":
                obj: Any = gm
                for part in node.target.split("."):
                    obj = getattr(obj, part)
                self.env[node] = obj
            elif node.op == "call_function":
                self.step(node)
            elif node.op == "output":
                out_node = node
            else:
                self.fail(node, f"{node.op} {node.target}")
        return out_node

    def fail(self, node: Any, what: str | None = None) -> None:
        self.unverifiable.append(f"{what or _op_name(node.target)} ({node.name})")
        self.info[node] = _Var(math.inf, kind="opaque")

    def step(self, node: Any) -> None:
        args, kwargs = self.value(node.args), self.value(node.kwargs)
        value = node.target(*args, **kwargs)
        self.env[node] = value
        deps = [self.info[n] for n in node.all_input_nodes if n in self.info]
        if not deps:
            return
        if any(d.kind == "opaque" for d in deps):
            self.info[node] = _Var(math.inf, kind="opaque")
            return
        if not isinstance(value, (torch.Tensor, tuple, list)) or _op_name(node.target) in _SHAPE_OPS:
            return  # shape queries and assertions: not tensors of the input
        rule = _RULES.get(_op_name(node.target))
        try:
            if rule is None:
                raise _NoRule
            self.info[node] = rule(self, node, value)
        except _NoRule:
            self.fail(node)


# --------------------------------------------------------------------------- rules

Rule = Callable[[_Analyser, Any, Any], _Var]
_RULES: dict[str, Rule] = {}
_SHAPE_OPS = {"sym_size", "sym_numel", "sym_stride", "sym_storage_offset", "_assert_tensor_metadata",
              "_assert_scalar", "sym_constrain_range_for_size", "eq", "ne", "lt", "le", "gt", "ge"}


def _rule(*names: str) -> Callable[[Rule], Rule]:
    def deco(fn: Rule) -> Rule:
        for n in names:
            _RULES[n] = fn
        return fn
    return deco


def _only_var(a: _Analyser, node: Any, pos: int = 0) -> _Var:
    """The single input-dependent argument must be at ``pos``; refuse otherwise."""
    for i, arg in enumerate(node.args):
        if i != pos and _depends(a, arg):
            raise _NoRule
    for arg in node.kwargs.values():
        if _depends(a, arg):
            raise _NoRule
    v = a.var(node.args[pos])
    if v is None or v.kind not in ("var",):
        raise _NoRule
    return v


def _depends(a: _Analyser, arg: Any) -> bool:
    found = []
    torch.fx.node.map_arg(arg, lambda n: found.append(n in a.info))
    return any(found)


_FREE = ("view", "reshape", "_unsafe_view", "flatten", "unflatten", "permute", "transpose", "t", "squeeze",
         "unsqueeze", "contiguous", "clone", "alias", "detach", "lift_fresh_copy", "_to_copy", "to",
         "type_as", "view_as", "reshape_as", "flip", "roll", "movedim", "slice", "select", "narrow",
         "constant_pad_nd", "pad", "identity", "pixel_shuffle", "pixel_unshuffle", "channel_shuffle",
         "zero_pad2d", "view_copy", "permute_copy", "transpose_copy", "squeeze_copy", "unsqueeze_copy",
         "slice_copy", "select_copy", "clone_copy", "_unsafe_view_copy")


@_rule(*_FREE)
def _free(a: _Analyser, node: Any, value: Any) -> _Var:
    v = _only_var(a, node)
    keep = isinstance(value, torch.Tensor) and value.shape == a.env[node.args[0]].shape
    return _Var(v.lip, relu_of=v.relu_of if keep else None, negrelu_of=v.negrelu_of if keep else None,
                affine=v.affine if keep else None)


@_rule("dropout", "feature_dropout", "alpha_dropout")
def _dropout(a: _Analyser, node: Any, value: Any) -> _Var:
    train = node.args[2] if len(node.args) > 2 else node.kwargs.get("train", False)
    if train:
        raise _NoRule
    return _Var(_only_var(a, node).lip)


@_rule("split", "split_with_sizes", "chunk", "unbind", "tensor_split")
def _split(a: _Analyser, node: Any, value: Any) -> _Var:
    v = _only_var(a, node)
    return _Var(v.lip, kind="tuple", items=[_Var(v.lip) for _ in value])


@_rule("getitem")
def _getitem(a: _Analyser, node: Any, value: Any) -> _Var:
    v = a.var(node.args[0])
    if v is None or v.kind != "tuple":
        raise _NoRule
    item = v.items[node.args[1]]
    if item is None:
        return _Var(math.inf, kind="opaque")
    return item


# elementwise activations: factor = sup |f'|
_ACTIVATIONS: dict[str, float] = {
    "relu": 1.0, "relu6": 1.0, "hardtanh": 1.0, "clamp": 1.0, "clip": 1.0, "clamp_min": 1.0, "clamp_max": 1.0,
    "tanh": 1.0, "abs": 1.0, "softplus": 1.0, "log_sigmoid": 1.0, "softsign": 1.0, "tanhshrink": 1.0,
    "softshrink": 1.0, "sin": 1.0, "cos": 1.0, "atan": 1.0, "celu": 1.0,
    "sigmoid": 0.25, "hardsigmoid": 1.0 / 6.0, "hardswish": 1.5, "gelu": 1.13, "silu": 1.1, "mish": 1.1,
    "erf": 2.0 / math.sqrt(math.pi), "selu": 1.0507009873554805 * 1.6732632423543772,
}


@_rule(*_ACTIVATIONS)
def _activation(a: _Analyser, node: Any, value: Any) -> _Var:
    v = _only_var(a, node)
    factor = _ACTIVATIONS[_op_name(node.target)]
    out = _Var(v.lip * factor)
    if _op_name(node.target) == "relu":
        src = a.var(node.args[0])
        if src is not None and src.neg_of is not None:
            out.negrelu_of = src.neg_of
        else:
            out.relu_of = node.args[0]
    a.record(node, factor)
    return out


@_rule("leaky_relu", "elu")
def _leaky(a: _Analyser, node: Any, value: Any) -> _Var:
    v = _only_var(a, node)
    rest = a.value(node.args[1:])
    if _op_name(node.target) == "leaky_relu":
        factor = max(1.0, abs(float(rest[0]))) if rest else 1.0
    else:
        alpha, scale, in_scale = (list(rest) + [1.0, 1.0, 1.0])[:3]
        factor = abs(float(scale)) * max(1.0, abs(float(alpha))) * abs(float(in_scale))
    a.record(node, factor)
    return _Var(v.lip * factor)


@_rule("neg")
def _neg(a: _Analyser, node: Any, value: Any) -> _Var:
    v = _only_var(a, node)
    return _Var(v.lip, neg_of=node.args[0], relu_of=v.relu_of, negrelu_of=v.negrelu_of)


def _const_abs_max(x: Any, invert: bool = False) -> float:
    t = torch.as_tensor(x, dtype=torch.float64)
    if invert:
        if (t == 0).any():
            raise _NoRule
        t = 1.0 / t
    return float(t.abs().max()) if t.numel() else 0.0


def _const_min(x: Any) -> float:
    t = torch.as_tensor(x, dtype=torch.float64)
    return float(t.min()) if t.numel() else 0.0


@_rule("add", "sub", "rsub")
def _add(a: _Analyser, node: Any, value: torch.Tensor) -> _Var:
    name = _op_name(node.target)
    x, y = node.args[0], node.args[1]
    alpha = float(a.value(node.kwargs.get("alpha", node.args[2] if len(node.args) > 2 else 1)))
    if name == "rsub":  # y - alpha * x
        x, y, sx, sy = y, x, 1.0, -alpha
    else:
        sx, sy = 1.0, (alpha if name == "add" else -alpha)
    vx, vy = a.var(x), a.var(y)
    if vx is not None and vx.kind == "sq" or vy is not None and vy.kind == "sq":
        return _add_squares(a, x, y, sx, sy, vx, vy, value.shape)
    terms = [(v, s, n) for v, s, n in ((vx, sx, x), (vy, sy, y)) if v is not None]
    if any(v.kind != "var" for v, _, _ in terms):
        raise _NoRule
    if len(terms) == 1:
        v, s, n = terms[0]
        e = a.expansion(n, value)
        out = _Var(v.lip * abs(s) * e)
        if e == 1.0 and s == 1.0:
            out.affine, out.relu_of, out.negrelu_of = v.affine, v.relu_of, v.negrelu_of
        if s == -1.0 and e == 1.0:
            out.neg_of = n
        return out
    # relu(z) - z == -relu(-z)  ([L2NNN] Lemma 4)
    if sx == 1.0 and sy == -1.0 and vx.relu_of is y and value.shape == a.env[y].shape:
        return _Var(vy.lip, negrelu_of=y)
    if sx == 1.0 and sy == -1.0 and vy.relu_of is x and value.shape == a.env[x].shape:  # z - relu(z) = -relu(-z)
        return _Var(vx.lip, negrelu_of=x)
    lip = sum(v.lip * abs(s) * a.expansion(n, value) for v, s, n in terms)
    a.record(node, lip / max(max(v.lip for v, _, _ in terms), 1e-300))
    return _Var(lip)


def _add_squares(a: _Analyser, x: Any, y: Any, sx: float, sy: float, vx: _Var | None, vy: _Var | None,
                 out_shape: torch.Size) -> _Var:
    """A(x²) + c with c ≥ 0, or a sum of two such terms with non-negative signs."""
    q = 0.0
    for v, s, n in ((vx, sx, x), (vy, sy, y)):
        if v is None:
            if s * _const_min(a.value(n)) < 0:
                raise _NoRule  # a negative constant under a square root
        elif v.kind == "sq" and s > 0:
            if a.env[n].shape != out_shape:
                raise _NoRule  # broadcasting a sum of squares: not handled
            q += v.q * s
        else:
            raise _NoRule
    return _Var(math.sqrt(q), kind="sq", q=q)


@_rule("mul", "div")
def _mul(a: _Analyser, node: Any, value: torch.Tensor) -> _Var:
    name = _op_name(node.target)
    x, y = node.args[0], node.args[1]
    vx, vy = a.var(x), a.var(y)
    if node.kwargs.get("rounding_mode") is not None:
        raise _NoRule
    if vx is not None and vy is not None:
        if name == "mul" and x is y and vx.kind == "var":
            return _Var(vx.lip, kind="sq", q=vx.lip ** 2)
        raise _NoRule
    if vx is None:
        if name == "div":
            raise _NoRule
        x, y, vx = y, x, vy
    c = a.value(y)
    assert vx is not None
    if vx.kind == "sq":
        if _const_min(c) < 0:
            raise _NoRule
        factor = _const_abs_max(c, invert=name == "div")
        if a.env[x].shape != value.shape:
            raise _NoRule
        return _Var(math.sqrt(vx.q * factor), kind="sq", q=vx.q * factor)
    if vx.kind != "var":
        raise _NoRule
    factor = _const_abs_max(c, invert=name == "div")
    out = _Var(vx.lip * factor * a.expansion(x, value))
    scalar = torch.as_tensor(c).numel() == 1
    if scalar and float(torch.as_tensor(c)) == -1.0 and name == "mul":
        out.neg_of, out.relu_of, out.negrelu_of = x, vx.relu_of, vx.negrelu_of
    elif scalar and float(torch.as_tensor(c)) > 0:
        out.relu_of, out.negrelu_of = vx.relu_of, vx.negrelu_of
    if factor != 1.0:
        a.record(node, factor)
    return out


@_rule("square")
def _square(a: _Analyser, node: Any, value: Any) -> _Var:
    v = _only_var(a, node)
    return _Var(v.lip, kind="sq", q=v.lip ** 2)


@_rule("pow")
def _pow(a: _Analyser, node: Any, value: Any) -> _Var:
    v = a.var(node.args[0])
    e = node.args[1]
    if v is None or isinstance(e, torch.fx.Node):
        raise _NoRule
    if v.kind == "var" and e == 2:
        return _Var(v.lip, kind="sq", q=v.lip ** 2)
    if v.kind == "var" and e == 1:
        return _Var(v.lip)
    if v.kind == "sq" and e == 0.5:
        return _sqrt_of(a, node, v)
    raise _NoRule


@_rule("sqrt")
def _sqrt(a: _Analyser, node: Any, value: Any) -> _Var:
    v = a.var(node.args[0])
    if v is None or v.kind != "sq":
        raise _NoRule
    return _sqrt_of(a, node, v)


def _sqrt_of(a: _Analyser, node: Any, v: _Var) -> _Var:
    """sqrt(A x² + c) with A ≥ 0: L2 factor √(max column sum), ℓ∞ √(max row sum) (norm pooling)."""
    lip = math.sqrt(v.q)
    a.record(node, lip)
    return _Var(lip)


def _nonneg_map_factors(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> tuple[float, float]:
    """(max row sum, max column sum) of a linear map with non-negative coefficients."""
    ones = torch.ones_like(x, dtype=torch.float64).requires_grad_(True)
    with torch.enable_grad():
        out = fn(ones)
        (col,) = torch.autograd.grad(out, ones, torch.ones_like(out))
    return float(out.detach().max()), float(col.max())


def _nonneg_linear(a: _Analyser, node: Any, value: Any) -> _Var:
    v = a.var(node.args[0])
    if v is None or v.kind not in ("var", "sq"):
        raise _NoRule
    _only_var_any(a, node)
    rest_args, kwargs = a.value(node.args[1:]), a.value(node.kwargs)
    if "dtype" in kwargs:
        kwargs = {k: val for k, val in kwargs.items() if k != "dtype"}
    row, col = _nonneg_map_factors(lambda t: node.target(t, *rest_args, **kwargs), a.env[node.args[0]])
    row *= 1 + 1e-12
    col *= 1 + 1e-12
    if v.kind == "sq":
        q = v.q * (col if a.norm == "l2" else row)
        return _Var(math.sqrt(q), kind="sq", q=q)
    factor = math.sqrt(row * col) if a.norm == "l2" else row
    a.record(node, factor)
    return _Var(v.lip * factor)


def _only_var_any(a: _Analyser, node: Any) -> None:
    for arg in list(node.args[1:]) + list(node.kwargs.values()):
        if _depends(a, arg):
            raise _NoRule


_rule("sum", "mean", "avg_pool1d", "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d", "adaptive_avg_pool2d",
      "_adaptive_avg_pool2d", "upsample_nearest2d", "upsample_bilinear2d", "upsample_nearest1d")(_nonneg_linear)


@_rule("expand", "expand_copy", "repeat", "broadcast_to", "expand_as", "repeat_interleave", "index_select", "tile")
def _copies(a: _Analyser, node: Any, value: torch.Tensor) -> _Var:
    v = _only_var(a, node)
    x = a.env[node.args[0]]
    if _op_name(node.target) == "index_select":
        idx = a.value(node.args[2])
        k = float(torch.bincount(idx.flatten()).max()) if idx.numel() else 0.0
    else:
        k = value.numel() / max(x.numel(), 1)
    factor = math.sqrt(k) if a.norm == "l2" else (1.0 if k > 0 else 0.0)
    a.record(node, factor)
    return _Var(v.lip * factor)


def _pool_incidence(x: torch.Tensor, kernel, stride, padding, dilation, ceil_mode: bool) -> float:  # type: ignore[no-untyped-def]
    """Largest number of pooling windows that share one input entry."""
    ones = torch.ones((1, 1) + tuple(x.shape[-2:]), dtype=torch.float64)
    if ceil_mode:  # extra windows at the far end: count on a grid padded by the stride
        ones = F.pad(ones, (0, stride[1], 0, stride[0]))
    cols = F.unfold(ones, kernel, dilation, padding, stride)
    counts = F.fold(cols, ones.shape[-2:], kernel, dilation, padding, stride)
    return float(counts.max())


def _pair(v: Any, n: int = 2) -> tuple[int, ...]:
    if isinstance(v, int):
        return (v,) * n
    v = tuple(v)
    return v * n if len(v) == 1 else v


@_rule("max_pool2d", "max_pool2d_with_indices", "max_pool1d", "max_pool1d_with_indices")
def _max_pool(a: _Analyser, node: Any, value: Any) -> _Var:
    v = _only_var(a, node)
    args = list(a.value(node.args[1:]))
    one_d = _op_name(node.target).startswith("max_pool1d")
    k = args[0]
    s = args[1] if len(args) > 1 and args[1] else k
    p = args[2] if len(args) > 2 else 0
    d = args[3] if len(args) > 3 else 1
    ceil = bool(args[4]) if len(args) > 4 else False
    to2 = (lambda t: (1,) + _pair(t, 1)) if one_d else _pair
    x = a.env[node.args[0]]
    x2 = x.unsqueeze(-2) if one_d else x
    count = _pool_incidence(x2, to2(k), to2(s), (0,) + _pair(p, 1) if one_d else _pair(p), to2(d), ceil)
    factor = math.sqrt(count) if a.norm == "l2" else 1.0
    a.record(node, factor)
    out = _Var(v.lip * factor)
    if isinstance(value, tuple):
        return _Var(out.lip, kind="tuple", items=[out, None])
    return out


@_rule("adaptive_max_pool2d", "adaptive_max_pool1d")
def _adaptive_max(a: _Analyser, node: Any, value: Any) -> _Var:
    v = _only_var(a, node)
    x = a.env[node.args[0]]
    size = a.value(node.args[1])
    avg = F.adaptive_avg_pool2d if _op_name(node.target).endswith("2d") else F.adaptive_avg_pool1d
    _, col = _nonneg_map_factors(lambda t: avg(t, size), x)
    dims = x.shape[-len(_pair(size, 1)):] if not isinstance(size, int) else x.shape[-1:]
    sizes = _pair(size, len(dims))
    window = math.prod(math.ceil(n / o) + 1 for n, o in zip(dims, sizes))
    count = col * window
    factor = math.sqrt(count) if a.norm == "l2" else 1.0
    a.record(node, factor)
    out = _Var(v.lip * factor)
    return _Var(out.lip, kind="tuple", items=[out, None]) if isinstance(value, tuple) else out


@_rule("amax", "amin", "max", "min", "logsumexp")
def _reduce_max(a: _Analyser, node: Any, value: Any) -> _Var:
    if len(node.args) > 1 and _depends(a, node.args[1]):  # elementwise maximum(x, y)
        return _maximum(a, node, value)
    v = _only_var(a, node)
    a.record(node, 1.0)
    if isinstance(value, tuple):  # (values, indices)
        return _Var(v.lip, kind="tuple", items=[_Var(v.lip), None])
    return _Var(v.lip)


@_rule("maximum", "minimum", "fmax", "fmin")
def _maximum(a: _Analyser, node: Any, value: Any) -> _Var:
    x, y = node.args[0], node.args[1]
    terms = [(a.var(n), n) for n in (x, y) if a.var(n) is not None]
    if any(v.kind != "var" for v, _ in terms):
        raise _NoRule
    lips = [v.lip * a.expansion(n, value) for v, n in terms]
    lip = math.sqrt(sum(t * t for t in lips)) if a.norm == "l2" else max(lips)
    return _Var(lip)


@_rule("where")
def _where(a: _Analyser, node: Any, value: Any) -> _Var:
    if _depends(a, node.args[0]):
        raise _NoRule
    return _maximum(a, type("N", (), {"args": node.args[1:], "target": node.target})(), value)


@_rule("linalg_vector_norm", "norm")
def _vector_norm(a: _Analyser, node: Any, value: Any) -> _Var:
    v = _only_var(a, node)
    args = list(a.value(node.args[1:]))
    kw = a.value(node.kwargs)
    p = float(kw.get("ord", kw.get("p", args[0] if args else 2)) or 2)
    dim = kw.get("dim", args[1] if len(args) > 1 else None)
    x = a.env[node.args[0]]
    m = x.numel() / max(value.numel(), 1) if dim is not None else x.numel()
    if p <= 0 or p != p:
        raise _NoRule
    if a.norm == "linf":
        factor = 1.0 if math.isinf(p) else m ** (1.0 / p)
    else:
        factor = 1.0 if p >= 2 else m ** (1.0 / p - 0.5)
    a.record(node, factor)
    return _Var(v.lip * factor)


@_rule("cdist", "_cdist_forward")
def _cdist(a: _Analyser, node: Any, value: Any) -> _Var:
    """ℓp distances to constant rows w_j (ℓ∞-dist neurons): |‖x−w‖_p − ‖x'−w‖_p| ≤ ‖x−x'‖_p.

    ℓ∞ network norm: ‖·‖_p ≤ d^{1/p}‖·‖_∞ per output, so the factor is d^{1/p} (exactly 1 at p = ∞).
    L2: each of the m outputs moves by ≤ c‖Δ‖₂ with c = d^{1/p−1/2} for p < 2 (else 1), so √m·c.
    """
    v = _only_var(a, node, 0)
    args = list(a.value(node.args[2:]))
    p = float(a.value(node.kwargs).get("p", args[0] if args else 2.0))
    if not p >= 1:
        raise _NoRule
    d = a.env[node.args[0]].shape[-1]
    m = value.shape[-1]
    if a.norm == "linf":
        factor = 1.0 if math.isinf(p) else d ** (1.0 / p)
    else:
        factor = math.sqrt(m) * (d ** (1.0 / p - 0.5) if p < 2 else 1.0)
    a.record(node, factor)
    return _Var(v.lip * factor)


@_rule("cat", "stack", "concat", "concatenate", "hstack", "vstack")
def _cat(a: _Analyser, node: Any, value: Any) -> _Var:
    for arg in node.args[1:]:
        if _depends(a, arg):
            raise _NoRule
    items = [(n, a.var(n)) for n in node.args[0] if a.var(n) is not None]
    if any(v.kind != "var" for _, v in items):
        raise _NoRule
    if a.norm == "linf":
        return _Var(max(v.lip for _, v in items))
    paired: set[int] = set()
    total = 0.0
    for i, (_, vi) in enumerate(items):  # [relu(z), relu(-z)] is as Lipschitz as z ([L2NNN] Lemma 4)
        for j, (_, vj) in enumerate(items):
            if i < j and i not in paired and j not in paired and _two_sided(vi, vj):
                z = vi.relu_of if vi.relu_of is not None else vi.negrelu_of
                total += a.info[z].lip ** 2
                paired |= {i, j}
    total += sum(v.lip ** 2 for k, (_, v) in enumerate(items) if k not in paired)
    return _Var(math.sqrt(total))


def _two_sided(u: _Var, w: _Var) -> bool:
    return (u.relu_of is not None and u.relu_of is w.negrelu_of) or (
        u.negrelu_of is not None and u.negrelu_of is w.relu_of)


@_rule("batch_norm", "_native_batch_norm_legit_no_training", "native_batch_norm", "_batch_norm_impl_index")
def _batch_norm(a: _Analyser, node: Any, value: Any) -> _Var:
    v = _only_var(a, node)
    name = _op_name(node.target)
    args = list(a.value(node.args))
    weight, running_var = args[1], args[4]
    if name == "_native_batch_norm_legit_no_training":
        eps = args[6]
    else:
        if bool(args[5]):
            raise _NoRule  # training mode: batch statistics couple the examples
        eps = args[7]
    scale = 1.0 / torch.sqrt(running_var.double() + float(eps))
    if weight is not None:
        scale = scale * weight.double()
    factor = float(scale.abs().max()) * (1 + 1e-12)
    a.record(node, factor)
    out = _Var(v.lip * factor)
    if isinstance(value, tuple):
        return _Var(out.lip, kind="tuple", items=[out] + [None] * (len(value) - 1))
    return out


# linear maps ---------------------------------------------------------------


def _matrix_factor(a: _Analyser, node: Any, m: torch.Tensor) -> float:
    if a.norm == "linf":
        bound = on.linf_matrix_norm(m)
        a.record(node, bound, bound)
        return bound
    bound = on.gram_bound(m)
    a.record(node, bound, on.matrix_power_estimate(m))
    return bound


def _affine_out(a: _Analyser, node: Any, v: _Var, m: torch.Tensor, value: torch.Tensor) -> _Var:
    factor = _matrix_factor(a, node, m)
    out = _Var(v.lip * factor)
    if value.dim() == 2 and value.shape[0] == 1:
        out.affine = (m.detach().double(), v.lip)
    return out


@_rule("linear")
def _linear(a: _Analyser, node: Any, value: Any) -> _Var:
    v = _only_var(a, node)
    w = a.value(node.args[1])
    if not torch.is_tensor(w) or w.dim() != 2:
        raise _NoRule
    return _affine_out(a, node, v, w, value)


@_rule("addmm", "mm", "matmul")
def _matmul(a: _Analyser, node: Any, value: Any) -> _Var:
    first = 1 if _op_name(node.target) == "addmm" else 0
    x, m = node.args[first], node.args[first + 1]
    if _op_name(node.target) == "addmm" and (_depends(a, node.args[0]) or node.kwargs):
        raise _NoRule
    vx, vm = a.var(x), a.var(m)
    if vx is not None and vm is None:
        mat = a.value(m)
        if not torch.is_tensor(mat) or mat.dim() != 2:
            raise _NoRule
        return _affine_out(a, node, vx, mat.T, value)  # x ↦ x M acts with Mᵀ
    if vm is not None and vx is None and _op_name(node.target) != "addmm" and vm.kind == "var":
        mat = a.value(x)
        if not torch.is_tensor(mat) or mat.dim() != 2:
            raise _NoRule
        return _Var(vm.lip * _matrix_factor(a, node, mat))
    raise _NoRule


@_rule("conv1d", "conv2d", "convolution", "_convolution")
def _conv(a: _Analyser, node: Any, value: Any) -> _Var:
    v = _only_var(a, node)
    args = list(a.value(node.args))
    kw = a.value(node.kwargs)
    name = _op_name(node.target)
    weight = args[1]
    names = ["input", "weight", "bias", "stride", "padding", "dilation"]
    if name in ("convolution", "_convolution"):
        names += ["transposed", "output_padding", "groups"]
    else:
        names += ["groups"]
    p = dict(zip(names, args))
    p.update(kw)
    if p.get("transposed"):
        raise _NoRule
    spec = _conv_spec(weight, p.get("stride", 1), p.get("padding", 0), p.get("dilation", 1),
                      int(p.get("groups", 1)), a.env[node.args[0]])
    if a.norm == "linf":
        bound = on.conv_linf_bound(spec)
        a.record(node, bound, bound)
    else:
        est = on.conv_power_estimate(spec)
        bound = on.conv_l2_bound(spec, est)
        a.record(node, bound, est)
    return _Var(v.lip * bound)


def _conv_spec(weight: torch.Tensor, stride, padding, dilation, groups: int, x: torch.Tensor) -> on.ConvSpec:  # type: ignore[no-untyped-def]
    nd = weight.dim() - 2
    if nd not in (1, 2):
        raise _NoRule
    stride, dilation = _pair(stride, nd), _pair(dilation, nd)
    if isinstance(padding, str):
        ks = weight.shape[2:]
        padding = tuple(0 if padding == "valid" else math.ceil(d * (k - 1) / 2) for d, k in zip(dilation, ks))
    padding = _pair(padding, nd)
    if nd == 1:  # view a 1-D convolution as 2-D with height 1
        return on.ConvSpec(weight.unsqueeze(-2), (1,) + stride, (0,) + padding, (1,) + dilation, groups,
                           (x.shape[1], 1, x.shape[2]))
    return on.ConvSpec(weight, stride, padding, dilation, groups, tuple(x.shape[1:]))


# --------------------------------------------------------------------------- public API


_CACHE: dict[tuple[Any, ...], LipschitzReport] = {}


def analyse(model: LoadedModel, *, norm: str = "l2", input_shape: tuple[int, ...] | None = None) -> LipschitzReport:
    """Guaranteed Lipschitz bounds of ``model`` in ``norm`` (see the module docs).

    Results are cached per loaded model, norm and input shape: certify, attack
    and analyze on the same model analyse its weights once.
    """
    if norm not in NORMS:
        raise BadInputError(f"expected norm l2 or linf, got {norm!r}")
    shape = _example_shape(model, input_shape)
    key = (id(model.module), model.sha256, norm, shape)
    if key not in _CACHE:
        if len(_CACHE) >= 8:  # keep memory bounded
            _CACHE.clear()
        _CACHE[key] = _analyse(model, norm, shape)
    return _CACHE[key]


def _analyse(model: LoadedModel, norm: str, shape: tuple[int, ...]) -> LipschitzReport:
    lo, hi = model.metadata.bounds
    example = lo + (hi - lo) * torch.rand((1,) + shape, generator=torch.Generator().manual_seed(0))
    try:
        ep, source = exported_program(model, example)
    except Exception as err:  # noqa: BLE001 - any tracing failure means no graph
        msg = str(err).strip().splitlines()
        return _unverifiable_report(norm, f"<graph> (cannot export the model: {msg[0][:160] if msg else err})")
    analyser = _Analyser(norm)
    try:
        inputs, user = _program_inputs(ep, example)
        with torch.no_grad():
            out_node = analyser.run(ep.graph_module, inputs, user)
    except _NoRule as err:
        return _unverifiable_report(norm, f"<graph> ({err})")
    return _finish(analyser, out_node, ep, norm, source)


def _unverifiable_report(norm: str, what: str) -> LipschitzReport:
    return LipschitzReport(norm, False, (what,), math.inf, (), (), ())


def _finish(an: _Analyser, out_node: Any, ep: Any, norm: str, source: str) -> LipschitzReport:
    outs = out_node.args[0]
    first = outs[0] if isinstance(outs, (tuple, list)) else outs
    value = an.env[first]
    info = an.info.get(first)
    k = int(value.numel())
    if info is None:
        info = _Var(0.0)  # the output does not depend on the input
    if info.kind != "var" or an.unverifiable:
        if not an.unverifiable:
            an.unverifiable.append(f"output ({first.name})")
        return LipschitzReport(norm, False, tuple(an.unverifiable), math.inf, (), (), tuple(an.layers), source)
    per_logit, pairs = _logit_bounds(info, norm, k)
    return LipschitzReport(norm, True, (), float(info.lip), per_logit, pairs, tuple(an.layers), source)


def _logit_bounds(info: _Var, norm: str, k: int) -> tuple[tuple[float, ...], tuple[tuple[float, ...], ...]]:
    g = info.lip
    c = math.sqrt(2.0) if norm == "l2" else 2.0
    per = torch.full((k,), g, dtype=torch.float64)
    pair = torch.full((k, k), c * g, dtype=torch.float64)
    if info.affine is not None and info.affine[0].shape[0] == k:
        w, lh = info.affine
        q = 2 if norm == "l2" else 1
        slack = 1 + on.ROUNDING_SLACK
        per = torch.minimum(per, torch.linalg.vector_norm(w, ord=q, dim=1) * lh * slack)
        diff = torch.linalg.vector_norm(w.unsqueeze(1) - w.unsqueeze(0), ord=q, dim=2) * lh * slack
        pair = torch.minimum(pair, diff)
    pair.fill_diagonal_(0.0)
    return tuple(per.tolist()), tuple(tuple(r) for r in pair.tolist())


# --------------------------------------------------------------------------- certificates


def _relevant_bound(report: LipschitzReport, certificate: str) -> tuple[float, str]:
    """The computed bound a certificate rule depends on, and its name."""
    if certificate == "l2-multi":
        worst = max(report.per_logit_bounds) if report.per_logit_bounds else report.global_bound
        return worst, "largest per-logit L2 bound"
    return report.global_bound, f"global {report.norm} bound"


def _claim_holds(report: LipschitzReport, certificate: str, constant: float) -> tuple[bool, str, float]:
    """(holds, why, L to certify with): L = max(constant, computed bound), so never below the truth."""
    limit = constant * (1 + LIPSCHITZ_CLAIM_TOLERANCE)
    if not report.verified:
        return False, report.reason, constant
    worst, what = _relevant_bound(report, certificate)
    if worst <= constant:
        return True, f"{what} {worst:.6g} ≤ {constant:g}, computed from the weights", constant
    if worst <= limit:
        return True, (f"{what} {worst:.7g} computed from the weights is within float tolerance of the declared "
                      f"{constant:g}; certifying with L = {worst:.7g}"), worst
    return False, f"the {what} computed from the weights is {worst:.6g} > {constant:g}", constant


def verify_certificate(model: LoadedModel, *, norm: str, certificate: str, requested: str,
                       lipschitz_constant: float | None, assume_lipschitz: bool, input_dim: int,
                       input_shape: tuple[int, ...] | None = None):  # type: ignore[no-untyped-def]
    """The certificate plan, verified from the weights where possible (see the module docs)."""
    from .certificates import CertificatePlan, declared_plan
    from .margins import CERTIFICATES, norm_conversion_factor

    if certificate == "auto":
        report = analyse(model, norm=norm, input_shape=input_shape)
        if not report.verified:
            raise LipschitzUnverifiedError(
                f"--certificate auto: no sound Lipschitz bound ({report.reason}); name a property with "
                "--certificate l2-multi, l2-single or linf-dist and pass --assume-lipschitz to certify under it")
        pairs = torch.tensor(report.pair_bounds, dtype=torch.float64).clamp_min(1e-300)
        return CertificatePlan(certificate="pairwise", certificate_norm=norm, norm=norm, divisor=1.0,
                               lipschitz_constant=max(report.global_bound, 1e-300), lipschitz_verified=True,
                               basis="verified", reason=report.reason + "; pairwise radii min_j (y_i−y_j)/L_ij",
                               pair_constants=pairs)
    kind = CERTIFICATES[certificate]
    claim = model.metadata.lipschitz
    declared = claim is not None and claim.norm == kind.norm and claim.kind in kind.implied_by
    constant = lipschitz_constant if lipschitz_constant is not None else (
        claim.constant if declared and claim is not None else 1.0)
    report = analyse(model, norm=kind.norm, input_shape=input_shape)
    ok, why, verified_constant = _claim_holds(report, certificate, constant)
    if ok:
        constant = verified_constant
        bound, _ = _relevant_bound(report, certificate)
        if lipschitz_constant is None and bound < constant:  # a tighter verified constant: larger, still sound radii
            why += f"; certifying with the verified L = {bound:.6g}"
            constant = bound
        return CertificatePlan(certificate=certificate, certificate_norm=kind.norm, norm=norm, divisor=kind.divisor,
                               lipschitz_constant=float(constant), lipschitz_verified=True, basis="verified",
                               reason=why, norm_factor=norm_conversion_factor(kind.norm, norm, input_dim))
    if not assume_lipschitz:
        raise LipschitzUnverifiedError(
            f"certificate {certificate} needs {kind.description.split(':')[0]} with L = {constant:g}, which "
            f"could not be verified ({why}); pass --assume-lipschitz to certify under that assumption")
    return declared_plan(model, norm=norm, certificate=certificate, lipschitz_constant=lipschitz_constant,
                         assume_lipschitz=True, input_dim=input_dim, reason_unverified=why)


__all__ = ["LayerBound", "LipschitzReport", "analyse", "exported_program", "verify_certificate"]
