"""Empirical lower bounds on a model's Lipschitz constant, and the data's own constant ([L2NNN] §3.1; [WCAT] Tables 1, 2, 4 and App. C).

- :func:`empirical_estimates`: on data points, the Jacobian spectral norm ‖J(x)‖₂
  (power iteration with jvp/vjp, J never materialised), the loss-gradient norms
  ‖∇ₓℓ‖₂ and ‖∇ₓℓ‖₁, ‖∇f‖₂,∞ = max_k ‖∇ₓ y_k‖₂ and its ℓ∞ counterpart
  max_k ‖∇ₓ y_k‖₁, each maximum with the index where it peaked, plus a local
  search (random-restart hill climbing with gradient ascent on ‖J(x)v‖ near
  the highest points).  ‖J‖₂, ‖∇f‖₂,∞ and the local search are lower bounds
  of the L2→L2 constant; max_k ‖∇y_k‖₁ is a lower bound of the ℓ∞→ℓ∞ constant.
  The loss gradients are not (they include the softmax).
- :func:`data_lipschitz`: Lip₂,∞(D) = 1 / (smallest L2 distance between two
  differently-labelled points) [WCAT] App. C, by an exact blocked search.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from ..data import Dataset, ProgressFn
from ..defaults import (
    DATA_LIPSCHITZ_BLOCK,
    ESTIMATE_BATCH_SIZE,
    ESTIMATE_POWER_ITERATIONS,
    LOCAL_SEARCH_POINTS,
    LOCAL_SEARCH_RADIUS,
    LOCAL_SEARCH_STEPS,
)
from ..distributed import World, current_world, gather
from ..errors import BadInputError


@dataclass(frozen=True)
class Peak:
    value: float
    index: int  #: index in the dataset where the maximum was reached (-1: local search point)


@dataclass(frozen=True)
class EmpiricalEstimates:
    n: int
    jacobian_spectral_mean: float
    jacobian_spectral_max: Peak
    grad_loss_l2_max: Peak
    grad_loss_l1_max: Peak
    jacobian_2_inf_max: Peak  #: max_k ‖∇ₓ y_k‖₂
    jacobian_1_inf_max: Peak  #: max_k ‖∇ₓ y_k‖₁ (the ℓ∞ counterpart)
    local_search_max: Peak  #: best ‖J‖₂ found near the data (index of the start point)
    seconds: float


def _jacobian_spectral(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, iterations: int,
                       gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example ‖J(x)‖₂ and the top right singular vector (examples are independent)."""
    v = torch.randn(x.shape, generator=gen, dtype=x.dtype, device=gen.device).to(x.device)
    v = v / v.flatten(1).norm(dim=1).view(-1, *[1] * (x.dim() - 1))
    _, vjp = torch.func.vjp(fn, x)
    sigma = torch.zeros(x.shape[0], device=x.device)
    for _ in range(iterations):
        _, jv = torch.func.jvp(fn, (x,), (v,))
        sigma = jv.flatten(1).norm(dim=1)
        (v,) = vjp(jv)
        v = v / v.flatten(1).norm(dim=1).clamp_min(1e-30).view(-1, *[1] * (x.dim() - 1))
    return sigma, v


def _rows(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor
          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(‖∇ℓ‖₂, ‖∇ℓ‖₁, max_k ‖∇y_k‖₂, max_k ‖∇y_k‖₁) per example."""
    out, vjp = torch.func.vjp(fn, x)
    p = torch.softmax(out.detach().double(), dim=1).to(out.dtype)
    (gl,) = vjp(p - F.one_hot(y, out.shape[1]).to(out.dtype))  # ∇ₓ CE(f(x), y)
    l2s, l1s = [], []
    for k in range(out.shape[1]):
        e = torch.zeros_like(out)
        e[:, k] = 1
        (gk,) = vjp(e)
        l2s.append(gk.flatten(1).norm(dim=1))
        l1s.append(gk.flatten(1).abs().sum(dim=1))
    return (gl.flatten(1).norm(dim=1), gl.flatten(1).abs().sum(dim=1),
            torch.stack(l2s).amax(0), torch.stack(l1s).amax(0))


def _peak(values: torch.Tensor) -> Peak:
    i = int(values.argmax())
    return Peak(float(values[i]), i)


def empirical_estimates(model: Callable[[torch.Tensor], torch.Tensor], data: Dataset, *,
                        iterations: int = ESTIMATE_POWER_ITERATIONS, batch_size: int = ESTIMATE_BATCH_SIZE,
                        local_points: int = LOCAL_SEARCH_POINTS, local_steps: int = LOCAL_SEARCH_STEPS,
                        local_radius: float = LOCAL_SEARCH_RADIUS, bounds: tuple[float, float] = (0.0, 1.0),
                        device: torch.device | str | None = None, seed: int = 0,
                        progress: ProgressFn | None = None, world: World | None = None) -> EmpiricalEstimates:
    """Empirical lower bounds on ``data`` (see the module docs); ``device=None``: the model's.

    The power iteration of the batch starting at example ``lo`` draws its start vectors from a
    generator seeded with ``(seed, lo)`` alone, so the result does not depend on the number of
    processes.  Under torchrun (``world``, default: the initialised process group's) each rank
    estimates whole batches of its shard (:func:`certify.distributed.shard` aligned to
    ``batch_size``) and the per-example columns are gathered in dataset order on every rank; the
    local search, from the ``local_points`` highest points, is small and runs on every rank alike.
    """
    if isinstance(model, torch.nn.Module):
        from ..device import run_device

        device = run_device(model, device)
    elif device is None:
        raise BadInputError("empirical_estimates: pass device= for a model that is not an nn.Module")
    if batch_size < 1:
        raise BadInputError(f"batch size must be at least 1, got {batch_size}", param="batch_size")
    import time

    start = time.perf_counter()
    world = current_world() if world is None else world
    lo, hi = world.shard(len(data), align=batch_size)
    mine = _estimate_columns(model, data, lo, hi, iterations, batch_size, device, seed, progress)
    parts = gather(mine, world, "the empirical estimates") if world.distributed else [mine]
    c = {k: torch.cat([part[k] for part in parts]) for k in _COLUMNS}
    gen = torch.Generator().manual_seed(_batch_seed(seed, len(data)))
    local = local_search(model, data, c["spec"], points=local_points, steps=local_steps, radius=local_radius,
                         iterations=iterations, bounds=bounds, device=device, gen=gen)
    return EmpiricalEstimates(len(data), float(c["spec"].mean()), _peak(c["spec"]), _peak(c["l2"]),
                              _peak(c["l1"]), _peak(c["j2"]), _peak(c["j1"]), local,
                              time.perf_counter() - start)


_COLUMNS = ("spec", "l2", "l1", "j2", "j1")


def _batch_seed(seed: int, lo: int) -> int:
    """The generator seed of the batch starting at example ``lo`` (the local search uses ``lo = n``)."""
    return (int(seed) * 1_000_003 + int(lo)) % (2**63 - 1)


def _estimate_columns(model: Callable[[torch.Tensor], torch.Tensor], data: Dataset, lo: int, hi: int,
                      iterations: int, batch_size: int, device: torch.device | str, seed: int,
                      progress: ProgressFn | None) -> dict[str, torch.Tensor]:
    """The per-example columns of examples ``lo..hi`` (``lo`` a batch boundary), on the CPU."""
    cols: dict[str, list[torch.Tensor]] = {k: [] for k in _COLUMNS}
    for b in range(lo, hi, batch_size):
        x, y = data.batch(b, min(hi, b + batch_size), device)
        gen = torch.Generator().manual_seed(_batch_seed(seed, b))
        spec, _ = _jacobian_spectral(model, x, iterations, gen)
        for key, val in zip(_COLUMNS, (spec,) + _rows(model, x, y)):
            cols[key].append(val.detach().cpu())
        if progress is not None:
            progress(b + x.shape[0] - lo, hi - lo)
    return {k: torch.cat(v) if v else torch.zeros(0, device="cpu") for k, v in cols.items()}


def local_search(model: Callable[[torch.Tensor], torch.Tensor], data: Dataset, spectral: torch.Tensor, *,
                 points: int, steps: int, radius: float, iterations: int, bounds: tuple[float, float],
                 device: torch.device | str, gen: torch.Generator) -> Peak:
    """Climb ‖J(x)‖₂ from the ``points`` highest data points, within an ℓ∞ ball of ``radius``."""
    k = min(points, spectral.numel())
    if k == 0 or steps == 0:
        return _peak(spectral) if spectral.numel() else Peak(0.0, -1)
    idx = spectral.topk(k).indices
    x0, _ = data.subset(idx).batch(0, k, device)
    best, x = spectral[idx].clone().to(x0.device), x0.clone()
    for _ in range(steps):
        cand = x + (radius / 4) * torch.randn(x.shape, generator=gen, device=gen.device).to(x.device)
        cand = _ascend(model, cand, iterations, gen, radius / 4)
        cand = torch.max(torch.min(cand, x0 + radius), x0 - radius).clamp(*bounds)
        sigma, _ = _jacobian_spectral(model, cand, iterations, gen)
        better = sigma > best
        best = torch.where(better, sigma, best)
        x = torch.where(better.view(-1, *[1] * (x.dim() - 1)), cand, x)
    i = int(best.argmax())
    return Peak(float(best[i].detach()), int(idx[i]))


def _ascend(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, iterations: int,
            gen: torch.Generator, step: float) -> torch.Tensor:
    """One signed-gradient step on ‖J(x) v‖ (v the current top singular vector)."""
    _, v = _jacobian_spectral(model, x, iterations, gen)
    xg = x.detach().requires_grad_(True)
    with torch.enable_grad():
        _, jv = torch.func.jvp(model, (xg,), (v.detach(),))
        obj = jv.flatten(1).norm(dim=1).sum()
        (g,) = torch.autograd.grad(obj, xg, allow_unused=True)
    if g is None:
        return x
    return (x + step * g.sign()).detach()


# --------------------------------------------------------------------------- data Lipschitz


@dataclass(frozen=True)
class DataLipschitz:
    lip_2_inf: float  #: 1 / min_distance (inf when two differently-labelled points coincide)
    min_distance: float  #: smallest L2 distance between differently-labelled points (pixels in [0, 1])
    index_a: int
    index_b: int
    n: int
    candidates_rechecked: int  #: rows recomputed exactly in float64
    seconds: float


def data_lipschitz(data: Dataset, *, block: int = DATA_LIPSCHITZ_BLOCK, device: torch.device | str = "cpu",
                   progress: ProgressFn | None = None, world: World | None = None) -> DataLipschitz:
    """Exact nearest differently-labelled pair: float32 blocked search, float64 re-check of candidate rows.

    Each pair (i, j) with label_i < label_j is looked at once, from row i.  A
    float32 pass gives every row's approximate nearest distance² within a
    proven rounding allowance τ; every row whose approximation is within 2τ of
    the best one is recomputed exactly in float64, so the minimum is exact.

    Under torchrun (``world``, default: the initialised process group's) the ranks share the row
    blocks of the float32 pass (block ``b`` goes to rank ``b mod world_size``: early blocks, with the
    smallest labels, have the most candidates) and every rank gets every row's minimum.
    """
    import time

    start = time.perf_counter()
    if len(data) < 2 or int(data.y.unique().numel()) < 2:
        raise BadInputError("data-lipschitz needs at least two examples with different labels")
    device = torch.device(device)
    x = data.float_tensor().flatten(1).to(device)
    y = data.y.to(device)
    approx, partner = _approx_row_minima(x, y, block, progress, current_world() if world is None else world)
    sq = x.double().pow(2).sum(1)
    dim = x.shape[1]
    u = 2.0 ** -24
    tau = 4 * (dim + 3) * u / (1 - (dim + 3) * u) * float(sq.max())  # |d̃² − d²| ≤ τ for every pair
    best = float(approx.min())
    rows = torch.nonzero(approx <= best + 2 * tau).flatten()
    exact, ia, ib = math.inf, -1, -1
    xd = x.double()
    for r in rows.tolist():
        others = torch.nonzero(y > y[r]).flatten()
        d2 = (xd[others] - xd[r]).pow(2).sum(1)
        j = int(d2.argmin())
        if float(d2[j]) < exact:
            exact, ia, ib = float(d2[j]), r, int(others[j])
    dist = math.sqrt(exact)
    lip = math.inf if dist == 0 else 1.0 / dist
    a, b = sorted((ia, ib))
    return DataLipschitz(lip, dist, a, b, len(data), int(rows.numel()), time.perf_counter() - start)


def _approx_row_minima(x: torch.Tensor, y: torch.Tensor, block: int, progress: ProgressFn | None,
                       world: World) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row i: min over j with y_j > y_i of the float32 d²(i, j) (inf when none); this rank's row
    blocks, then every rank's (each row is computed by one rank, so the minimum over ranks is its value)."""
    order = torch.argsort(y, stable=True)
    xs, ys = x[order], y[order]
    sq = xs.pow(2).sum(1)
    n = xs.shape[0]
    mins = torch.full((n,), math.inf, device=x.device)
    arg = torch.full((n,), -1, dtype=torch.long, device=x.device)
    mine = range(world.rank * block, n, world.world_size * block)
    total, done = sum(min(lo + block, n) - lo for lo in mine), 0
    for lo in mine:
        hi = min(lo + block, n)
        first = int(torch.searchsorted(ys, ys[lo:hi].min(), right=True))  # rows with a larger label
        for clo in range(first, n, 4 * block):
            chi = min(clo + 4 * block, n)
            d2 = sq[lo:hi, None] + sq[None, clo:chi] - 2.0 * (xs[lo:hi] @ xs[clo:chi].T)
            d2.masked_fill_(ys[lo:hi, None] >= ys[None, clo:chi], math.inf)
            m, j = d2.min(dim=1)
            take = m < mins[lo:hi]
            mins[lo:hi] = torch.where(take, m, mins[lo:hi])
            arg[lo:hi] = torch.where(take, j + clo, arg[lo:hi])
        done += hi - lo
        if progress is not None:
            progress(done, total)
    if world.distributed:
        parts = gather((mins.cpu(), arg.cpu()), world, "the nearest-pair search")
        all_mins = torch.stack([m for m, _ in parts])
        mins, which = all_mins.min(dim=0)
        arg = torch.stack([a for _, a in parts]).gather(0, which[None]).squeeze(0)
        mins, arg = mins.to(x.device), arg.to(x.device)
    out_min = torch.empty_like(mins)
    out_min[order] = mins
    out_arg = torch.empty_like(arg)
    out_arg[order] = torch.where(arg >= 0, order[arg.clamp_min(0)], arg)
    return out_min, out_arg
