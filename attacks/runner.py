"""Running an attack suite over the points: chunks with their own seeds, cascades, minimum-norm
attacks, violations of certified radii and the certificate check (see :mod:`attacks.evaluate`).

Under torchrun each rank runs the chunks of its shard (:func:`certify.distributed.shard`) and the
finished chunks of every rank are absorbed, in dataset order, on every rank (:func:`run_chunks`).
A chunk's seed depends on the run's seed and its first index only, so results do not depend on
the number of processes."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from certify.data import ProgressFn
from certify.defaults import (
    ATTACK_CHUNK,
    CHECK_EPS_FRACTION,
    DEFAULT_CHECK_RESTARTS,
    DEFAULT_CHECK_STEPS,
)
from certify.distributed import SINGLE, World, gather
from certify.rowstore import Rows
from certify.threat import Norm

from .apgd import APGD
from .base import Attack, AttackOutcome, batch_seed, run_batched
from .pgd import PGD, MarginPGD
from .registry import build
from .report import AttackResult, Violation, merge_rows


@dataclass
class Ticker:
    """Progress shared by the chunks of one run."""

    total: int
    progress: ProgressFn | None
    done: int = 0

    def __call__(self, k: int) -> None:
        self.done += k
        if self.progress is not None:
            self.progress(min(self.done, self.total), self.total)


@dataclass
class Run:
    """Mutable bookkeeping while the suite runs (never returned): the whole data, or one chunk of it.
    ``x``: the images as float32, a tensor or rows read when a chunk or a point is indexed
    (:meth:`certify.dataset.Dataset.float_rows`)."""

    module: torch.nn.Module
    x: torch.Tensor | Rows
    y: torch.Tensor
    norm: Norm
    eps: tuple[float, ...]
    bounds: tuple[float, float]
    correct: np.ndarray
    radius: np.ndarray
    batch_size: int
    device: torch.device
    seed: int
    tick: Ticker
    offset: int = 0  #: index of this run's first point in the data (for violations)
    broken: np.ndarray = field(init=False)
    min_dist: np.ndarray = field(init=False)
    min_attack: np.ndarray = field(init=False)
    results: list[AttackResult] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    completed: int = 0  #: points whose chunk finished (a prefix of the data)

    def __post_init__(self) -> None:
        n = len(self.correct)
        self.broken = np.zeros((len(self.eps), n), dtype=bool)
        self.min_dist = np.where(self.correct, np.inf, 0.0)
        self.min_attack = np.where(self.correct, "", "clean").astype(object)

    def certified(self, eps: float) -> np.ndarray:
        return self.correct & (self.radius > eps)  # NaN radius → False

    def chunk(self, lo: int, hi: int) -> Run:
        """A run over points ``lo:hi`` with its own seed (the same whether or not the run was resumed)."""
        seed = self.seed if lo == 0 else batch_seed(self.seed, CHUNK_SEED_KEY, lo)
        return Run(self.module, self.x[lo:hi], self.y[lo:hi], self.norm, self.eps, self.bounds, self.correct[lo:hi],
                    self.radius[lo:hi], self.batch_size, self.device, seed, self.tick, offset=lo)

    def finished(self) -> ChunkResult:
        """What this chunk's run found, without its model and data (what ranks exchange)."""
        lo = self.offset
        return ChunkResult(lo, lo + len(self.correct), self.broken, self.min_dist, self.min_attack,
                           tuple(self.results), tuple(self.violations))

    def absorb(self, part: ChunkResult) -> None:
        """Take over the finished chunk that follows the completed points; rows add up over chunks."""
        lo, hi = part.lo, part.hi
        assert lo == self.completed, f"chunk {lo}:{hi} absorbed after {self.completed} points"
        self.broken[:, lo:hi] = part.broken
        self.min_dist[lo:hi] = part.min_dist
        self.min_attack[lo:hi] = part.min_attack
        self.violations += part.violations
        self.results = merge_rows(self.results, part.results, hi)
        self.completed = hi

    def record_distances(self, idx: np.ndarray, out: AttackOutcome, name: str) -> None:
        d = out.distance.numpy()
        better = out.success.numpy() & (d < self.min_dist[idx])
        self.min_dist[idx[better]] = d[better]
        self.min_attack[idx[better]] = name

    def attack(self, attack: Attack, idx: np.ndarray, eps: float | torch.Tensor | None, key: int,
               weight: int = 1, offset: int = 0) -> AttackOutcome:
        t = torch.from_numpy(idx)
        e = eps[t] if isinstance(eps, torch.Tensor) else eps
        return run_batched(attack, self.module, self.x[t], self.y[t], norm=self.norm, eps=e, bounds=self.bounds,
                           seed=self.seed, batch_size=self.batch_size, device=self.device, key=key,
                           on_batch=lambda b: self.tick(b * weight), offset=offset)


@dataclass(frozen=True)
class ChunkResult:
    """The state of one finished chunk ``lo:hi`` of a run (see :meth:`Run.absorb`)."""

    lo: int
    hi: int
    broken: np.ndarray  #: ε × points
    min_dist: np.ndarray
    min_attack: np.ndarray
    results: tuple[AttackResult, ...]
    violations: tuple[Violation, ...]


#: Key mixed into the seed of every chunk after the first (the first keeps the run's seed).
CHUNK_SEED_KEY = 7_777_777


def run_chunks(run: Run, specs: list[tuple[str, type[Attack]]], steps: tuple[int, ...], restarts: int,
               cascade: bool, world: World) -> bool:
    """Attack this rank's chunks of the points after ``run.completed``; absorb every rank's, in order.

    Returns whether the run is partial: a ``KeyboardInterrupt`` stops this rank after its last
    finished chunk, and the run keeps the chunks up to the first one missing.
    """
    lo, hi = world.shard(len(run.correct), start=run.completed)
    done: list[ChunkResult] = []
    stopped = False
    try:
        for a in range(lo, hi, ATTACK_CHUNK):
            b = min(hi, a + ATTACK_CHUNK)
            done.append(run_suite(run.chunk(a, b), specs, steps, restarts, cascade).finished())
    except KeyboardInterrupt:
        stopped = True
    for chunks, rank_stopped in gather((done, stopped), world, "the attack results"):
        for part in chunks:
            run.absorb(part)
        if rank_stopped:
            return True
    return run.completed < len(run.correct)


def run_suite(run: Run, specs: list[tuple[str, type[Attack]]], steps: tuple[int, ...], restarts: int,
               cascade: bool) -> Run:
    for ai, (name, cls) in enumerate(specs):
        before = run.broken.copy() if cascade else np.zeros_like(run.broken)
        for budget in (steps if cls.scales_with_steps else (None,)):
            _run_one(run, ai, name, build(cls, steps=budget, restarts=restarts), budget, restarts, before)
    return run


def _run_one(run: Run, ai: int, name: str, attack: Attack, budget: int | None, restarts: int,
             before: np.ndarray) -> None:
    """Run one attack at one budget.  ``before``: points × ε already broken by earlier attacks
    (all False when not cascading); the row's robust accuracy counts them as broken."""
    steps = getattr(attack, "steps", None)
    rs = restarts if type(attack).has_restarts else None
    if attack.minimization:
        _run_min(run, ai, name, attack, steps, rs, before)
        return
    for ei, e in enumerate(run.eps):
        targets = np.flatnonzero(run.correct & ~run.certified(e) & ~before[ei])
        run.tick(len(run.correct) - len(targets))
        t0 = time.perf_counter()
        out = run.attack(attack, targets, e, key=_key(ai, budget, ei))
        succ = targets[out.success.numpy()]
        run.broken[ei, succ] = True
        run.record_distances(targets, out, name)
        _record_violations(run, targets, out.success.numpy(), out.distance.numpy(), name, run.radius, eps=None)
        robust = run.correct & ~before[ei]
        robust[succ] = False
        run.results.append(AttackResult(name, e, steps, rs, float(robust.mean()), len(targets), len(succ),
                                        time.perf_counter() - t0, int(robust.sum())))


def _run_min(run: Run, ai: int, name: str, attack: Attack, steps: int | None, rs: int | None,
             before: np.ndarray) -> None:
    """A minimum-norm attack runs once on the points not certified at the largest ε.

    It is the source of minimum distances, so it also attacks points that earlier attacks broke.
    """
    k = len(run.eps)
    targets = np.flatnonzero(run.correct & ~run.certified(max(run.eps)))
    run.tick((len(run.correct) - len(targets)) * k)
    t0 = time.perf_counter()
    out = run.attack(attack, targets, None, key=_key(ai, None, 0), weight=k)
    seconds = time.perf_counter() - t0
    run.record_distances(targets, out, name)
    dist, success = out.distance.numpy(), out.success.numpy()
    _record_violations(run, targets, success, dist, name, run.radius, eps=None)
    for ei, e in enumerate(run.eps):
        succ = targets[success & (dist <= e)]
        run.broken[ei, succ] = True
        robust = run.correct & ~before[ei]
        robust[succ] = False
        run.results.append(AttackResult(name, e, steps, rs, float(robust.mean()), len(targets), len(succ), seconds,
                                        int(robust.sum())))


def _record_violations(run: Run, idx: np.ndarray, success: np.ndarray, dist: np.ndarray, name: str,
                       radius: np.ndarray, eps: np.ndarray | None) -> None:
    """A success closer than the radius (min-norm), or any success at ε < radius (fixed ε), is a violation."""
    r = radius[idx]
    bad = success & (dist < r)
    for j in np.flatnonzero(bad):
        e = float(dist[j]) if eps is None else float(eps[j])
        run.violations.append(Violation(run.offset + int(idx[j]), float(r[j]), e, float(dist[j]), name))


def _key(ai: int, budget: int | None, ei: int) -> int:
    return (ai * 1_000_003 + (budget or 0)) * 1_009 + ei


def check_sampled(run: Run, radius: np.ndarray, count: int, specs: list[tuple[str, type[Attack]]],
                  world: World = SINGLE) -> int:
    """Strong attacks (PGD-CE, PGD-margin, APGD-CE, the suite's minimum-norm attacks) at ε = 0.999·radius
    on a seeded sample of certified points.

    Under torchrun each rank attacks whole batches of the sample (:func:`certify.distributed.shard`
    of the sample's positions, aligned to the batch size, so every batch keeps its one-process seed)
    and every rank records the successes of all, in sample order.  A rank interrupted in its part
    makes the check unfinished on every rank (``KeyboardInterrupt``).
    """
    pool = np.flatnonzero(run.correct & np.isfinite(radius) & (radius > 0))
    if len(pool) == 0:
        return 0
    rng = np.random.default_rng(run.seed)
    idx = np.sort(rng.choice(pool, size=min(count, len(pool)), replace=False))
    eps = torch.zeros(len(run.y), dtype=torch.float64, device="cpu")  # run_batched moves each batch
    eps[torch.from_numpy(idx)] = torch.from_numpy(CHECK_EPS_FRACTION * radius[idx])
    strong = [("check:pgd", PGD(steps=DEFAULT_CHECK_STEPS, restarts=DEFAULT_CHECK_RESTARTS)),
              ("check:pgd-margin", MarginPGD(steps=DEFAULT_CHECK_STEPS, restarts=DEFAULT_CHECK_RESTARTS)),
              ("check:apgd-ce", APGD(steps=DEFAULT_CHECK_STEPS, restarts=DEFAULT_CHECK_RESTARTS))]
    strong += [(f"check:{n}", cls()) for n, cls in specs if cls.minimization]
    lo, hi = world.shard(len(idx), align=run.batch_size)
    mine: list[tuple[np.ndarray, np.ndarray]] | None = []
    try:
        for si, (name, attack) in enumerate(strong):
            out = run.attack(attack, idx[lo:hi], None if attack.minimization else eps,
                             key=_key(10_000 + si, None, 0), offset=lo)
            mine.append((out.success.numpy(), out.distance.numpy()))  # type: ignore[union-attr]
    except KeyboardInterrupt:
        mine = None
    parts = gather(mine, world, "the certificate check") if world.distributed else [mine]
    if any(part is None for part in parts):
        raise KeyboardInterrupt
    for si, (name, attack) in enumerate(strong):
        success = np.concatenate([part[si][0] for part in parts])
        dist = np.concatenate([part[si][1] for part in parts])
        _record_violations(run, idx, success, dist, name, radius,
                           eps=None if attack.minimization else eps.numpy()[idx])
    run.tick(count)
    return len(idx)
