"""Pieces shared by the rule families: batch checks and non-negative linear maps."""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

from ...threat import Norm
from ..analyser import Analyser, Var
from ..registry import Bound, NoRule
from ..rounding import gamma


def leading(a: Analyser, b: Bound) -> bool:
    """Every input tensor and the output keep the batch as their leading dimension."""
    outs = b.out if isinstance(b.out, (tuple, list)) else (b.out,)
    ins = [a.env[n] for n in b.node.all_input_nodes if n in a.info]
    return all(a.batch_leading(t) for t in ins) and all(a.batch_leading(t) for t in outs
                                                         if isinstance(t, torch.Tensor))


def not_dim(name: str) -> Callable[[Analyser, Bound], bool]:
    """The op acts along argument ``name``'s dims, which must leave the batch dimension alone."""

    def check(a: Analyser, b: Bound) -> bool:
        x = a.env[b.raw["self"]] if "self" in b.raw else a.env[b.raw["input"]]
        return leading(a, b) and a.separable_dims(b[name], x.dim())

    return check


def always(a: Analyser, b: Bound) -> bool:
    return True


def in_ndim(*ndims: int) -> Callable[[Analyser, Bound], bool]:
    """Batched inputs of these ranks (N, C, …): the op works per example."""

    def check(a: Analyser, b: Bound) -> bool:
        key = "self" if "self" in b.raw else "input"
        return a.env[b.raw[key]].dim() in ndims and leading(a, b)

    return check


def copy_factor(a: Analyser, k: float) -> float:
    """Each input entry copied at most k times: √k in L2, 1 in ℓ∞ (0 when nothing is copied)."""
    if k <= 0:
        return 0.0
    return a.norm.ones(k)


def nonneg_map(fn: Callable[[torch.Tensor], torch.Tensor], like: torch.Tensor) -> tuple[float, float]:
    """(max row sum, max column sum) of a linear map with non-negative coefficients, in float64."""
    ones = torch.ones(like.shape, dtype=torch.float64, device=like.device, requires_grad=True)
    with torch.enable_grad():
        out = fn(ones)
        (col,) = torch.autograd.grad(out, ones, torch.ones_like(out))
    if bool((out < 0).any()) or bool((col < 0).any()):
        raise NoRule("the map has negative coefficients")
    row = float(out.detach().max()) if out.numel() else 0.0
    return row * (1 + 1e-12), float(col.max()) * (1 + 1e-12)


def nonneg_linear(a: Analyser, b: Bound, fn: Callable[[torch.Tensor], torch.Tensor], terms: int,
                  exact: bool = False) -> Var:
    """A linear map with non-negative coefficients (sums, means, average pooling, interpolation).

    L2 factor √(max row · max column) (Schur's test), ℓ∞ factor the max row sum.  On a sum of
    squares (norm pooling) the squares' multipliers pick up the column (L2) or row (ℓ∞) sum.
    ``terms``: the largest number of inputs one output adds up (for the rounding bound).
    """
    v = a.only(b, _main(b), kinds=("var", "sq"))
    row, col = nonneg_map(fn, a.env[b.raw[_main(b)]])
    u = a.unit(b.out)
    l2 = a.norm is Norm.L2
    if v.kind == "sq":
        mult = col if l2 else row
        return Var(0.0, kind="sq", q=v.q * mult, qerr=tuple((e, m * mult) for e, m in v.qerr),
                   qrel=v.qrel + (0.0 if exact else gamma(terms + 1, u)))
    factor = math.sqrt(row * col) if l2 else row
    a.record(b.node, factor)
    lip, err = v.lip * factor, v.err * factor
    if not exact:
        err = err + a.accumulated(b, terms, factor, b.raw[_main(b)], v, 0.0)
    return Var(lip, err)


def _main(b: Bound) -> str:
    return "self" if "self" in b.raw else "input"


def apply_with(b: Bound, first: str = "self", drop: tuple[str, ...] = ()) -> Callable[[torch.Tensor], torch.Tensor]:
    """The node's op as a function of its first argument, the other arguments fixed."""
    target = b.node.target
    schema = target._schema.arguments

    def fn(t: torch.Tensor) -> torch.Tensor:
        args, kwargs = [], {}
        for arg in schema:
            value = t if arg.name == first else b.values[arg.name]
            if arg.name in drop:
                continue
            if arg.kwarg_only:
                kwargs[arg.name] = value
            else:
                args.append(value)
        out = target(*args, **kwargs)
        return out[0] if isinstance(out, (tuple, list)) else out

    return fn


def tensor_value(x: Any) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(x, dtype=torch.float64, device="cpu")
