"""Exact cross-check on tiny residual and max-pooling networks: the exact minimum of each logit difference
over the ℓ∞ box, by enumerating every feasible activation pattern and max-pool winner (one LP per
piece, HiGHS), is never below CROWN's or α-CROWN's bound, so a certified point is never non-robust."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn

from certify.bounds import BoundSettings, margin_bounds, network_from_module
from certify.bounds.layers import Activation, Affine, Concat, Network, Sum
from certify.bounds.pooling import MaxPool
from certify.bounds.radius import specification
from certify.threat import Norm

pytestmark = pytest.mark.usefixtures("one_thread")

Expr = tuple[torch.Tensor, torch.Tensor]  # (A: (d, *shape), c: shape): value = A·x + c


def _lp(obj: np.ndarray, rows: list[np.ndarray], lo: np.ndarray, hi: np.ndarray) -> float | None:
    """min obj·x over the box and rows·x ≤ 0 (rows carry their constant last), or None if infeasible."""
    from scipy.optimize import linprog

    a = np.array([r[:-1] for r in rows]) if rows else None
    b = np.array([-r[-1] for r in rows]) if rows else None
    res = linprog(obj, A_ub=a, b_ub=b, bounds=list(zip(lo, hi)), method="highs")
    return float(res.fun) if res.status == 0 else None


def _row(expr: Expr, i: int, sign: float) -> np.ndarray:
    """sign·(value_i) as a row [a, c]."""
    a, c = expr
    return sign * np.concatenate([a.flatten(1)[:, i].numpy(), [float(c.flatten()[i])]])


def _affine(layer: Affine, expr: Expr) -> Expr:
    a, c = expr
    return layer.lin(a), layer.forward(c.unsqueeze(0))[0]


def exact_min(net: Network, spec: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> float:
    """min over x in [lo, hi] of spec·net(x), exactly (up to the LP's tolerance)."""
    d = lo.size
    start = (torch.eye(d, dtype=torch.float64).view(d, *net.in_shape), torch.zeros(net.in_shape, dtype=torch.float64))
    best = [np.inf]

    def walk(k: int, values: list[Expr], rows: list[np.ndarray]) -> None:
        if k == len(net.layers):
            a, c = values[-1]
            obj = spec @ a.numpy().T
            v = _lp(obj, rows, lo, hi)
            if v is not None:
                best[0] = min(best[0], v + float(spec @ c.numpy()))
            return
        layer, ins = net.layers[k], [values[v] for v in net.inputs_of(k)]
        if isinstance(layer, Affine):
            walk(k + 1, values + [_affine(layer, ins[0])], rows)
        elif isinstance(layer, Sum):
            out = (sum(c * e[0] for c, e in zip(layer.coeffs, ins)), sum(c * e[1] for c, e in zip(layer.coeffs, ins)))
            walk(k + 1, values + [out], rows)  # type: ignore[list-item]
        elif isinstance(layer, Concat):
            walk(k + 1, values + [(torch.cat([e[0] for e in ins], layer.dim), torch.cat([e[1] for e in ins], layer.dim - 1))],
                 rows)
        elif isinstance(layer, Activation):
            _branch_activation(layer, ins[0], 0, rows, lambda e, r: walk(k + 1, values + [e], r))
        else:
            _branch_pool(layer, ins[0], rows, lambda e, r: walk(k + 1, values + [e], r))

    def _branch_activation(layer: Activation, expr: Expr, i: int, rows: list[np.ndarray], then) -> None:  # type: ignore[no-untyped-def]
        if i == expr[1].numel():
            return then(expr, rows)
        for sign, scale in ((-1.0, 1.0), (1.0, layer.slope)):  # z ≥ 0 (−z ≤ 0): identity; z ≤ 0: slope·z
            r = rows + [_row(expr, i, sign)]
            if _lp(np.zeros(d), r, lo, hi) is None:
                continue
            a, c = expr[0].flatten(1).clone(), expr[1].flatten().clone()
            a[:, i] *= scale
            c[i] *= scale
            _branch_activation(layer, (a.view_as(expr[0]), c.view_as(expr[1])), i + 1, r, then)

    def _branch_pool(layer: MaxPool, expr: Expr, rows: list[np.ndarray], then) -> None:  # type: ignore[no-untyped-def]
        index = layer.windows(torch.arange(expr[1].numel(), dtype=torch.float64).view(1, *expr[1].shape))[0]
        c_, kk, n = index.shape
        wins = [[int(t) for t in index[ch, :, w] if torch.isfinite(t)] for ch in range(c_) for w in range(n)]
        a_f, c_f = expr[0].flatten(1), expr[1].flatten()

        def choose(w: int, picks: list[int], r: list[np.ndarray]) -> None:
            if w == len(wins):
                return then((a_f[:, picks].view(d, *layer.out_shape), c_f[picks].view(layer.out_shape)), r)
            for j in wins[w]:
                extra = [_row(expr, i, 1.0) - _row(expr, j, 1.0) for i in wins[w] if i != j]  # x_i − x_j ≤ 0
                if _lp(np.zeros(d), r + extra, lo, hi) is not None:
                    choose(w + 1, picks + [j], r + extra)

        choose(0, [], rows)

    walk(0, [start], [])
    return best[0]


class _TinyResidual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(torch.relu(x - 0.5 * self.b(torch.relu(self.a(x))) + x))


TINY = {
    "residual": ((4,), _TinyResidual),
    "maxpool-overlap": ((1, 2, 3), lambda: nn.Sequential(nn.MaxPool2d(2, stride=1), nn.Flatten(), nn.Linear(2, 4),
                                                         nn.ReLU(), nn.Linear(4, 3))),
    "maxpool-padding-slow": ((1, 3, 3), lambda: nn.Sequential(nn.Conv2d(1, 1, 2), nn.ReLU(), nn.MaxPool2d(2, stride=1, padding=1),
                                                         nn.Flatten(), nn.Linear(9, 3))),
}


@settings(max_examples=3, deadline=None)
@given(seed=st.integers(0, 10_000), eps=st.floats(0.02, 0.2))
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n.endswith("slow") else n
                                  for n in sorted(TINY)])
def test_bounds_never_exceed_the_exact_minimum(name: str, seed: int, eps: float) -> None:
    shape, make = TINY[name]
    gen = torch.Generator().manual_seed(seed)
    module = make().eval()
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    net = network_from_module(module, shape)
    x0 = torch.rand(1, *shape, generator=gen, dtype=torch.float64)
    pred = module(x0.float()).argmax(1)
    e = torch.tensor([eps], dtype=torch.float64)
    lows = [margin_bounds(net, x0, pred, e, BoundSettings(method=m, norm=Norm.LINF, lo=0.0, hi=1.0, alpha_steps=8))
            for m in ("crown", "alpha-crown")]
    assert (lows[1] >= lows[0]).all()
    lo, hi = np.clip(x0[0].flatten().numpy() - eps, 0, 1), np.clip(x0[0].flatten().numpy() + eps, 0, 1)
    spec = specification(pred, 3)[0].numpy()
    for k in range(2):
        exact = exact_min(net, spec[k], lo, hi)
        assume(np.isfinite(exact))
        assert lows[1][0, k].item() <= exact + 1e-7
        if lows[1][0, k] > 0:
            assert exact > 0
    # the exact minimum is a real value of the model: at the box's centre the margin is no smaller
    with torch.no_grad():
        y = module(x0.float()).double()[0]
    assert exact <= float(spec[1] @ y.numpy()) + 1e-4
