"""Symbolic bounds on floating-point error, evaluated per example (``docs/soundness.md``).

For a node h and an example x, ``Err`` bounds ‖ĥ(x') − h(x')‖ (computed minus exact, in the
analysis norm) for every x' in the ball B(x, r) ∩ input box, as a(x) + b(x)·r.  Its leaves
are rounding terms ρ·(Σ wⱼ·Mⱼ + c) where Mⱼ bounds the magnitude of a node over the ball:

    Mⱼ = N̂ⱼ(x) + Lⱼ·r + 2·Eⱼ,

with N̂ⱼ(x) the norm of node j *measured* in the forward pass at x (one number per example),
Lⱼ its Lipschitz bound and Eⱼ its own error bound (‖h(x')‖ ≤ ‖ĥ(x)‖ + E + L·r, and the
computed value adds E once more).  Errors propagate through an op like a perturbation of its
inputs, with the op's Lipschitz factor; sums of errors add, concatenations combine in the
analysis norm (√Σ in L2, max in ℓ∞; affine in r by Minkowski's inequality).

Every ``Err`` is created after its parts, so evaluating in creation order is a topological
order (no recursion, however deep the network).
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Callable, Iterable

import torch

from ..threat import Norm

_ids = itertools.count()

#: A measured quantity: (fx node, tuple item index or None).
Key = tuple[Any, Any]


class Err:
    __slots__ = ("id", "kind", "parts", "const", "rho", "mags")

    def __init__(self, kind: str | Norm, parts: tuple[tuple["Err", float], ...] = (), const: float = 0.0,
                 rho: float = 0.0, mags: tuple[tuple[Key, float, float, "Err"], ...] = ()):
        self.id = next(_ids)
        self.kind = kind  #: zero | lin | round, or a Norm: the parts combined in it (√Σ in L2, max in ℓ∞)
        self.parts = parts
        self.const = const
        self.rho = rho
        self.mags = mags

    # construction ------------------------------------------------------------

    @staticmethod
    def lin(parts: Iterable[tuple["Err", float]], const: float = 0.0) -> "Err":
        kept = tuple((e, float(f)) for e, f in parts if f != 0.0 and e.kind != "zero")
        if not kept and const == 0.0:
            return ZERO
        if len(kept) == 1 and const == 0.0 and kept[0][1] == 1.0:
            return kept[0][0]
        return Err("lin", kept, float(const))

    @staticmethod
    def combine(parts: Iterable[tuple["Err", float]], mode: Norm | str) -> "Err":
        """Scaled parts added up (``"sum"``), or combined in a norm: ``Norm.L2`` (√Σ of the parts) or
        ``Norm.LINF`` (their max).  ``"sum"`` stays a string: it is the ℓ1 combination (the triangle
        inequality), and ℓ1 is no norm of the threat model."""
        if mode == "sum":
            return Err.lin(parts)
        mode = Norm.parse(mode, param="mode")
        kept = tuple((e, abs(float(f))) for e, f in parts if f != 0.0 and e.kind != "zero")
        if not kept:
            return ZERO
        if len(kept) == 1:
            return Err.lin(kept)
        return Err(mode, kept)

    @staticmethod
    def rounding(rho: float, mags: Iterable[tuple[Key, float, float, "Err"]], const: float = 0.0) -> "Err":
        """ρ·(Σ w·(N̂ + L·r + 2E) + c)."""
        m = tuple((k, float(w), float(lip), e) for k, w, lip, e in mags if w != 0.0)
        if rho == 0.0 or (not m and const == 0.0):
            return ZERO
        return Err("round", (), float(const), float(rho), m)

    @staticmethod
    def constant(value: float) -> "Err":
        return ZERO if value == 0.0 else Err("lin", (), float(value))

    def __mul__(self, factor: float) -> "Err":
        return Err.lin([(self, factor)])

    __rmul__ = __mul__

    def __add__(self, other: "Err") -> "Err":
        return Err.lin([(self, 1.0), (other, 1.0)])

    @property
    def keys(self) -> set[Key]:
        """Every measured quantity this bound needs."""
        return {k for e in _reachable(self) if e.kind == "round" for k, _, _, _ in e.mags}

    @property
    def infinite(self) -> bool:
        return any(not math.isfinite(e.const) or not math.isfinite(e.rho) or
                   any(not math.isfinite(f) for _, f in e.parts) for e in _reachable(self))


ZERO = Err("zero")
INF = Err("lin", (), math.inf)


def _reachable(root: Err) -> list[Err]:
    seen: dict[int, Err] = {}
    stack = [root]
    while stack:
        e = stack.pop()
        if e.id in seen:
            continue
        seen[e.id] = e
        stack.extend(p for p, _ in e.parts)
        stack.extend(m[3] for m in e.mags)
    return sorted(seen.values(), key=lambda e: e.id)


def evaluate(root: Err, norms: Callable[[Key], torch.Tensor], n: int,
             device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(a, b), float64 tensors of length n: the bound is a + b·r for each example."""
    values: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    zero = torch.zeros(n, dtype=torch.float64, device=device)
    for e in _reachable(root):
        if e.kind == "zero":
            values[e.id] = (zero, zero)
        elif e.kind == "lin":
            a = zero + e.const
            b = zero
            for p, f in e.parts:
                pa, pb = values[p.id]
                a, b = a + f * pa, b + f * pb
            values[e.id] = (a, b)
        elif e.kind is Norm.L2:
            a2, b2 = zero, zero
            for p, f in e.parts:
                pa, pb = values[p.id]
                a2, b2 = a2 + (f * pa) ** 2, b2 + (f * pb) ** 2
            values[e.id] = (a2.sqrt(), b2.sqrt())
        elif e.kind is Norm.LINF:
            parts = [(f * values[p.id][0], f * values[p.id][1]) for p, f in e.parts]
            values[e.id] = (torch.stack([p[0] for p in parts]).amax(0), torch.stack([p[1] for p in parts]).amax(0))
        else:  # round
            a = zero + e.const
            b = zero
            for key, w, lip, err in e.mags:
                ea, eb = values[err.id]
                a = a + w * (norms(key) + 2.0 * ea)
                b = b + w * (lip + 2.0 * eb)
            values[e.id] = (e.rho * a, e.rho * b)
    return values[root.id]


def row_norms(t: torch.Tensor, norm: Norm) -> torch.Tensor:
    """Per-example norms of a batched tensor, float64, rounded up."""
    rows = t.detach().reshape(t.shape[0], -1)
    if rows.shape[1] == 0:
        return torch.zeros(t.shape[0], dtype=torch.float64, device=t.device)
    if norm is Norm.LINF:
        out = rows.abs().amax(dim=1).to(torch.float64)
    else:
        out = torch.linalg.vector_norm(rows, dim=1, dtype=torch.float64)
    return out * (1 + 1e-12)
