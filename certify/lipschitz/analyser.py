"""The analyser: walks a torch.export graph and bounds every input-dependent node.

For every node that depends on the input, a :class:`Var` holds

- ``lip``: a guaranteed bound on its Lipschitz constant with respect to the
  model input, per example, in one norm (L2→L2 or ℓ∞→ℓ∞);
- ``err``: a symbolic bound (:mod:`.fperror`) on the norm of its floating-point
  error (the computed value minus the exact one) on a ball around an example,
  evaluated per example from norms measured in the forward pass.  Each op adds
  its own rounding (:mod:`.rounding`) to the errors of its inputs propagated
  with the op's Lipschitz factor; at the logits this becomes the certificate's
  floating-point allowance (``docs/soundness.md``).

The graph is evaluated on a small batch (:data:`ANALYSIS_BATCH` examples, the
first one the centre of the input box).  A node is *separable* when row i of
its value depends only on example i; every rule says when its op keeps that
(:mod:`.registry`), and an op that mixes examples across the batch makes the
model unverifiable.  Nodes that do not depend on the input are constants and
are simply evaluated (weights computed from parameters become concrete).

Tags record exact symbolic forms that the rules for [L2NNN] Lemma 4 need
(``c·z`` and ``c·relu(±z)``).  Only ops proven to preserve a form keep its
tag; every other op drops it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from ..threat import Norm
from . import rounding
from .fperror import INF, ZERO, Err, Key
from .registry import RULES, Bound, NoRule, bind, op_key, short_name

#: Examples the graph is evaluated on: the centre of the input box and two random points.
ANALYSIS_BATCH = 3

#: Ops whose outputs are shapes, strides or assertions: they do not carry the input's values.
SHAPE_QUERIES = {"aten.sym_size.int", "aten.sym_numel.default", "aten.sym_stride.int",
                 "aten.sym_storage_offset.default", "aten._assert_tensor_metadata.default",
                 "aten._assert_scalar.default", "aten.sym_constrain_range_for_size.default"}


@dataclass(frozen=True)
class Tag:
    """An exact form of a node: ``coef·z`` (kind ``scaled``) or ``coef·relu(sign·z)`` (kind ``relu``).

    In floating point the node is the form applied to the computed z, plus ``extra``: the rounding
    of the ops between z and the node (so its error is |coef|·E_z + extra).
    """

    kind: str
    z: Any
    coef: float
    sign: int = 1
    extra: Err = field(default_factory=lambda: ZERO)


@dataclass
class Var:
    """What is known about an input-dependent node."""

    lip: float
    err: Err = ZERO
    kind: str = "var"  #: var | sq (a non-negative combination of squares) | tuple | opaque
    #: kind "sq": the node is A(h²)+c with A ≥ 0; its root has Lipschitz √q, error √(Σ m·E²) + rel·|out|
    q: float = 0.0
    qerr: tuple[tuple[Err, float], ...] = ()
    qrel: float = 0.0
    tag: Tag | None = None
    #: (W, L_h) when the node is W h + const along its last dimension (the logits' rows)
    affine: tuple[torch.Tensor, float] | None = None
    items: tuple[Any, ...] = ()


@dataclass(frozen=True)
class LayerRecord:
    name: str
    op: str
    bound: float
    estimate: float | None
    method: str | None = None
    reused: bool = False


@dataclass
class Analyser:
    norm: Norm
    radius: float  #: sup over the input box of ‖x − centre‖ in ``norm``
    batch: int = ANALYSIS_BATCH
    env: dict[Any, Any] = field(default_factory=dict)
    info: dict[Any, Var] = field(default_factory=dict)
    layers: list[LayerRecord] = field(default_factory=list)
    unverifiable: list[str] = field(default_factory=list)
    #: ``progress(done, total)`` over the graph's nodes (see :data:`certify.data.ProgressFn`)
    progress: Any = None

    def __post_init__(self) -> None:
        self.norm = Norm.parse(self.norm)  # the rules ask the Norm object; a name would fail them

    # ------------------------------------------------------------------ main loop

    def run(self, gm: torch.fx.GraphModule, inputs: dict[str, Any], user: str) -> Any:
        out_node = None
        total = len(gm.graph.nodes)
        for done, node in enumerate(gm.graph.nodes, 1):
            if self.progress is not None:
                self.progress(done - 1, total)
            if node.op == "placeholder":
                self.env[node] = inputs[node.name]
                if node.name == user:
                    self.info[node] = Var(1.0)
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
        if self.progress is not None:
            self.progress(total, total)
        return out_node

    def fail(self, node: Any, what: str | None = None) -> None:
        self.unverifiable.append(f"{what or short_name(node.target)} ({node.name})")
        self.info[node] = Var(math.inf, INF, kind="opaque")

    def step(self, node: Any) -> None:
        args, kwargs = self.value(node.args), self.value(node.kwargs)
        value = node.target(*args, **kwargs)
        self.env[node] = value
        deps = [self.info[n] for n in node.all_input_nodes if n in self.info]
        if not deps:
            return  # a constant: weights computed from parameters are evaluated here, once
        if any(d.kind == "opaque" for d in deps):
            self.info[node] = Var(math.inf, INF, kind="opaque")
            return
        key = op_key(node.target)
        if key in SHAPE_QUERIES and not isinstance(value, torch.Tensor):
            return
        rule = RULES.get(key)
        if rule is None:
            self.fail(node)
            return
        try:
            self.info[node] = self._apply(rule, node, value)
        except NoRule as err:
            detail = str(err)
            self.fail(node, f"{short_name(node.target)}: {detail}" if detail else None)

    def _apply(self, rule: Any, node: Any, value: Any) -> Var:
        raw, values = bind(node, self.value)
        for name, check in rule.args.items():
            if check.__name__ != "VAR" and self.depends(raw[name]):
                raise NoRule(f"argument {name} depends on the input")
            try:
                check(values[name])
            except NoRule as err:
                raise NoRule(f"argument {name}: {err}") from None
        b = Bound(node, raw, values, value)
        if not rule.batch(self, b):
            raise NoRule("mixes examples across the batch dimension")
        out = rule.fn(self, b)
        if out.kind == "var" and (not math.isfinite(out.lip) or out.err.infinite):
            raise NoRule("a bound is not finite (non-finite weights?)")
        return out

    def const(self, raw: Any) -> Any:
        """The concrete value of a constant argument."""
        return self.env[raw] if isinstance(raw, torch.fx.Node) else raw

    # ------------------------------------------------------------------ helpers for rules

    def value(self, a: Any) -> Any:
        return torch.fx.node.map_arg(a, lambda n: self.env[n])

    def var(self, a: Any) -> Var | None:
        return self.info.get(a) if isinstance(a, torch.fx.Node) else None

    def depends(self, a: Any) -> bool:
        found: list[bool] = []
        torch.fx.node.map_arg(a, lambda n: found.append(n in self.info))
        return any(found)

    def only(self, b: Bound, name: str = "self", kinds: tuple[str, ...] = ("var",)) -> Var:
        """The Var of argument ``name``; refuse when any other argument depends on the input."""
        for other, raw in b.raw.items():
            if other != name and self.depends(raw):
                raise NoRule(f"argument {other} depends on the input")
        v = self.var(b.raw[name])
        if v is None or v.kind not in kinds:
            raise NoRule(f"argument {name} is not a tensor of the input")
        return v

    def unit(self, t: Any) -> float:
        return rounding.unit_roundoff(t)

    def norm_of(self, t: Any) -> float:
        """Per-example norm (row 0: the centre of the input box) in the analysis norm, float64."""
        if not isinstance(t, torch.Tensor):
            return abs(float(t))
        row = t[0] if t.dim() > 0 and t.shape[0] == self.batch else t
        return rounding.vector_norm(row, self.norm)

    def const_norm(self, t: Any, like: torch.Tensor) -> float:
        """Norm of a constant broadcast to one example of ``like``'s shape (biases, means)."""
        if not isinstance(t, torch.Tensor):
            return abs(float(t)) * self.norm.ones(like[0].numel())
        full = torch.broadcast_to(t.detach(), like.shape) if t.dim() else t.detach().expand(like.shape)
        return self.norm_of(full)

    def mag(self, raw: Any, v: Var | None = None, weight: float = 1.0) -> tuple[Key, float, float, Err]:
        """A magnitude term w·(N̂ + L·r + 2E) of an input node (see :mod:`.fperror`)."""
        if v is None:
            v = self.var(raw)
        assert v is not None, "magnitudes are measured on nodes of the input"
        return ((raw, None), weight, v.lip, v.err)

    def expansion(self, raw: Any, out: torch.Tensor) -> float:
        """Copy factor when ``raw`` is broadcast to ``out``'s shape: √k in L2, 1 in ℓ∞."""
        k = out.numel() / max(self.env[raw].numel(), 1)
        return self.norm.ones(k) if k > 1 else 1.0

    def record(self, node: Any, factor: float, estimate: float | None = None, method: str | None = None,
               reused: bool = False) -> None:
        self.layers.append(LayerRecord(node.name, short_name(node.target), float(factor), estimate, method,
                                       reused))

    # error terms --------------------------------------------------------------

    def out_key(self, b: Bound) -> Key:
        return (b.node, 0 if isinstance(b.out, (tuple, list)) else None)

    def rounded(self, b: Bound, lip: float, err: Err, k: float = 1.0) -> Err:
        """Rounding of a result computed with k correctly rounded steps: ≤ k·u·|out| per entry.
        With |out| ≤ N̂ + L·r + 2(E + D): D = ρ/(1 − 2ρ)·(N̂ + L·r + 2E), ρ = k·u."""
        rho = k * self.unit(b.out)
        return Err.rounding(rho / max(1.0 - 2.0 * rho, 0.5), [(self.out_key(b), 1.0, lip, err)])

    def transcendental(self, b: Bound, v: Var, lip: float, err: Err, ulps: float = 0.0) -> Err:
        """Library functions: ≤ k·u·(|out| + |in|) per entry (absolute near cancellation)."""
        rho = (ulps or rounding.TRANSCENDENTAL_ULPS) * self.unit(b.out)
        rho = rho / max(1.0 - 2.0 * rho, 0.5)
        return Err.rounding(rho, [(self.out_key(b), 1.0, lip, err), self.mag(b.raw["self"], v)])

    def accumulated(self, b: Bound, n: int, abs_norm: float, src: Any, v: Var, offset: float) -> Err:
        """Dot products of length n: ≤ γ_n·(‖|W|‖·M_in + ‖|b|‖) (Higham, Thm 3.5), any summation order."""
        gamma = rounding.gamma(n + 1, self.unit(b.out))
        return Err.rounding(gamma, [self.mag(src, v, abs_norm)], offset)

    # building outputs -----------------------------------------------------------

    def combine(self, terms: list[tuple[Var, float]], mode: Norm | str) -> tuple[float, Err]:
        """(lip, err) of several input-dependent terms with factors, added up (``"sum"``) or combined in
        a norm (``Norm.L2``: √Σ, ``Norm.LINF``: max); see :meth:`Err.combine`."""
        lips = [v.lip * f for v, f in terms]
        err = Err.combine([(v.err, f) for v, f in terms], mode)
        if mode == "sum":
            return sum(lips), err
        if Norm.parse(mode) is Norm.L2:
            return math.sqrt(sum(x * x for x in lips)), err
        return max(lips), err

    def batch_leading(self, t: Any) -> bool:
        return isinstance(t, torch.Tensor) and t.dim() >= 1 and t.shape[0] == self.batch

    def separable_dims(self, dims: Any, ndim: int) -> bool:
        """True when ``dims`` (an int, a list, or None for all) leaves the batch dimension alone."""
        if dims is None:
            return False
        ds = [dims] if isinstance(dims, int) else list(dims)
        if not ds:
            return False  # an empty dim list means "all dims" for reductions
        return all(int(d) % max(ndim, 1) != 0 for d in ds)
