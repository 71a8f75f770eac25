"""Looking for a counterexample to a VNN-LIB property, and checking one exactly.

- :func:`violation` is the property's violation objective: for outputs y, the minimum over the
  unsafe clauses of the maximum over their atoms of ``a·y − b``; y is unsafe when it is ≤ 0
  (< 0 for strict atoms).
- :func:`search` runs sign-gradient descent (PGD) on it inside the input box, from the box's
  centre and random starts, and hands every candidate to :func:`recheck`.
- :func:`recheck` is what makes a ``sat`` answer trustworthy: the candidate is a float32 input
  that lies in the property's box exactly (rational comparison), the model is run on it alone,
  and the outputs are checked against the property in exact rational arithmetic; for an ONNX
  model it is also run by onnxruntime (when installed) and must violate the property there too.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import torch

from .parser import Property


@dataclass(frozen=True)
class Counterexample:
    """An input in the box whose outputs lie in the unsafe region, both as exact floats."""

    x: tuple[float, ...]  #: float32 values (exactly representable), flat X_0 … X_{n−1}
    y: tuple[float, ...]  #: the outputs Y_0 … Y_{m−1} the model gives on x (onnxruntime's when it ran)
    checked_by: tuple[str, ...]  #: the runtimes whose outputs were checked ("torch", "onnxruntime")


def atom_tensors(prop: Property) -> tuple[torch.Tensor, torch.Tensor]:
    """The clauses as A (C×M×K) and b (C×M), padded with rows that never bind (b = +inf)."""
    c, m, k = len(prop.clauses), max(len(cl) for cl in prop.clauses), prop.num_outputs
    a = torch.zeros((c, m, k), dtype=torch.float64, device="cpu")  # the runner returns outputs on the CPU
    b = torch.full((c, m), math.inf, dtype=torch.float64, device="cpu")
    for i, clause in enumerate(prop.clauses):
        for j, atom in enumerate(clause):
            b[i, j] = float(atom.bound)
            for idx, coef in atom.coeffs:
                a[i, j, idx] = float(coef)
    return a, b


def violation(y: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """min over clauses of max over atoms of a·y − b, per row of y (≤ 0: in the unsafe region)."""
    lhs = torch.einsum("cmk,nk->ncm", a.to(y), y)
    return (lhs - b.to(y)).amax(dim=2).amin(dim=1)


def float32_box(prop: Property) -> tuple[np.ndarray, np.ndarray] | None:
    """The float32 box inside the exact box (None when a coordinate's range holds no float32)."""
    lo = np.array([_f32_at_least(v) for v in prop.lower], dtype=np.float32)
    hi = np.array([_f32_at_most(v) for v in prop.upper], dtype=np.float32)
    return None if bool((lo > hi).any()) else (lo, hi)


def _f32_at_least(v: Fraction) -> np.float32:
    f = np.float32(float(v))
    return f if Fraction(float(f)) >= v else np.nextafter(f, np.float32(np.inf))


def _f32_at_most(v: Fraction) -> np.float32:
    f = np.float32(float(v))
    return f if Fraction(float(f)) <= v else np.nextafter(f, np.float32(-np.inf))


Runner = Callable[[torch.Tensor], torch.Tensor]  # (B, n) flat float32 inputs → (B, K) outputs
Checker = Callable[[np.ndarray], "np.ndarray | None"]  # one flat input → outputs of another runtime


def recheck(run: Runner, prop: Property, x: np.ndarray, others: dict[str, Checker] | None = None
            ) -> Counterexample | None:
    """The counterexample ``x`` makes, when every check passes (see the module docs)."""
    x = np.asarray(x, dtype=np.float32).reshape(-1)
    if x.shape[0] != prop.num_inputs or not prop.contains(x.tolist()):
        return None
    with torch.no_grad():
        y = run(torch.from_numpy(x.copy()).reshape(1, -1))[0]
    y_list = [float(v) for v in y.to(torch.float64).cpu()]
    if not all(math.isfinite(v) for v in y_list) or not prop.unsafe(y_list):
        return None
    checked = ["torch"]
    for name, other in (others or {}).items():
        y_other = other(x)
        if y_other is None:
            continue
        y_other = [float(v) for v in np.asarray(y_other, dtype=np.float64).reshape(-1)]
        if len(y_other) != len(y_list) or not prop.unsafe(y_other):
            return None
        y_list = y_other
        checked.append(name)
    return Counterexample(x=tuple(float(v) for v in x), y=tuple(y_list), checked_by=tuple(checked))


@dataclass(frozen=True)
class SearchBudget:
    rounds: int = 4  #: rounds of restarts
    restarts: int = 16  #: starts per round (the box centre is the first of round 0)
    steps: int = 60  #: PGD steps per round


DEFAULT_BUDGET = SearchBudget()


def search(run: Runner, prop: Property, budget: SearchBudget, deadline: float, seed: int = 0,
           others: dict[str, Checker] | None = None) -> tuple[Counterexample | None, bool]:
    """PGD on :func:`violation` in the box: (a re-checked counterexample or None, whether time ran out)."""
    box = float32_box(prop)
    if box is None:
        return None, False
    lo, hi = (torch.from_numpy(v) for v in box)
    a, b = atom_tensors(prop)
    gen = torch.Generator().manual_seed(seed)
    for r in range(budget.rounds):
        x = lo + (hi - lo) * torch.rand((budget.restarts, lo.shape[0]), generator=gen, device=lo.device)
        if r == 0:
            x[0] = (lo + hi) / 2
        found = _descend(run, prop, x, lo, hi, a, b, budget.steps, deadline, others)
        if found is not None:
            return found, False
        if time.monotonic() > deadline:
            return None, True
    return None, False


def _descend(run: Runner, prop: Property, x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, a: torch.Tensor,
             b: torch.Tensor, steps: int, deadline: float, others: dict[str, Checker] | None
             ) -> Counterexample | None:
    width = (hi - lo).to(torch.float32)
    for t in range(steps + 1):
        x = x.detach().requires_grad_(True)
        v = violation(run(x), a, b)
        for i in torch.nonzero(v.detach() <= 0).flatten().tolist()[:4]:
            found = recheck(run, prop, x[i].detach().numpy(), others)
            if found is not None:
                return found
        if t == steps or time.monotonic() > deadline:
            return None
        (grad,) = torch.autograd.grad(v.sum(), x)
        step = width * (0.25 * (1 - t / steps) + 0.01)
        x = torch.minimum(torch.maximum(x.detach() - step * grad.sign(), lo), hi)
    return None
