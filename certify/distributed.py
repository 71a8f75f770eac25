"""Many processes, one run: ``torchrun`` launches, the :class:`World`, shards and gathering.

``torchrun --nproc_per_node=N -m certify <command> …`` starts N copies of a command; each copy
learns its place from the environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``)
through :func:`world_from_env`.  :func:`init_world` joins the process group (NCCL when every rank
of a node has a GPU of its own, else gloo: :func:`backend_for`; objects always travel over gloo).  Without torchrun the world is one process and nothing
changes.

* **Shards are deterministic.** :func:`shard` gives each rank a contiguous run of whole units of
  work: chunks of :data:`certify.defaults.ATTACK_CHUNK` examples for the attacks (each seeded from
  the run's seed and the chunk's first index only, ``attacks.runner``, its batches starting at the
  chunk's start), batches for the clean pass, the empirical estimates and the certificate check
  (each seeded by its first index).  A unit runs as it would in one process, so an example's
  result does not depend on the number of processes.
* **Every rank ends with every row.** :func:`gather` collects one object per rank, in rank order,
  on every rank (``all_gather_object``); the callers join them in dataset order, so every rank
  holds the same report and rank 0 alone writes it.
* **A rank that dies stops the run.** Gloo notices a closed peer at once; a rank that hangs is
  given :func:`timeout_seconds`.  The error names the ranks that never reached the exchange
  (they mark it in the rendezvous store first) and the message a failing rank left there
  (:func:`note_failure`).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import sys
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

from .defaults import ATTACK_CHUNK, DIST_TIMEOUT_SECONDS
from .errors import BadInputError, RuntimeFailure

#: Environment variable overriding :data:`certify.defaults.DIST_TIMEOUT_SECONDS`.
TIMEOUT_ENV = "LIPCERT_DIST_TIMEOUT"
_KEY = "lipcert"


@dataclass(frozen=True)
class World:
    """This process's place in the run: ``rank`` of ``world_size`` processes, ``local_rank`` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes results and draws progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def shard(self, stop: int, start: int = 0, align: int = ATTACK_CHUNK) -> tuple[int, int]:
        """This rank's part of ``start..stop``; see :func:`shard`."""
        return shard(stop, self, start=start, align=align)


#: One process (no torchrun).
SINGLE = World()


def shard(stop: int, world: World, *, start: int = 0, align: int = ATTACK_CHUNK) -> tuple[int, int]:
    """Examples ``lo..hi`` of rank ``world.rank``: whole chunks of ``align`` examples of ``start..stop``
    (the last one may be short), contiguous, in rank order, sizes differing by one chunk at most.

    ``start`` must be a chunk boundary (a multiple of ``align``) or ``stop``.  A rank may get no
    examples (``lo == hi``) when there are fewer chunks than ranks.
    """
    if align < 1 or not 0 <= start <= stop or (start % align and start != stop):
        raise BadInputError(f"shard: start {start} must be a multiple of {align} within 0..{stop}", param="start")
    chunks = -(-(stop - start) // align)
    c0, c1 = chunks * world.rank // world.world_size, chunks * (world.rank + 1) // world.world_size
    return min(stop, start + c0 * align), min(stop, start + c1 * align)


def world_from_env(env: Mapping[str, str] | None = None) -> World:
    """The world torchrun describes in ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` (:data:`SINGLE` without them)."""
    env = os.environ if env is None else env
    if "WORLD_SIZE" not in env and "RANK" not in env:
        return SINGLE
    values = {}
    for name, default in (("RANK", None), ("WORLD_SIZE", None), ("LOCAL_RANK", "0")):
        text = env.get(name, default)
        try:
            values[name] = int(text)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise BadInputError(f"environment variable {name} must be an integer (as torchrun sets it), "
                                f"got {text!r}") from None
    rank, size, local = values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"]
    if size < 1 or not 0 <= rank < size or local < 0:
        raise BadInputError(f"RANK {rank}, WORLD_SIZE {size}, LOCAL_RANK {local} do not describe a process of "
                            "the run (need 0 ≤ RANK < WORLD_SIZE); launch with torchrun")
    return World(rank, size, local)


def timeout_seconds(env: Mapping[str, str] | None = None) -> float:
    """How long a rank waits for the others (``LIPCERT_DIST_TIMEOUT``, else the default)."""
    env = os.environ if env is None else env
    text = env.get(TIMEOUT_ENV)
    if text is None:
        return float(DIST_TIMEOUT_SECONDS)
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise BadInputError(f"{TIMEOUT_ENV} must be a positive number of seconds, got {text!r}")
    return value


# --------------------------------------------------------------------------- the process group

#: What :func:`init_world` set up: the rendezvous store, the gloo group for objects, the exchange count.
_STATE: dict[str, Any] = {}


def current_world() -> World:
    """The world of the initialised process group; :data:`SINGLE` when there is none."""
    if "torch" not in sys.modules:  # nothing can have joined a group; keep ``import certify`` light
        return SINGLE
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return SINGLE
    local = world_from_env().local_rank if "LOCAL_RANK" in os.environ else 0
    return World(dist.get_rank(), dist.get_world_size(), local)


def init_world(device: Any = None) -> World:
    """Join the process group torchrun describes, on ``device`` (:func:`backend_for`); the world.

    Without torchrun (or with one process) nothing is set up and :data:`SINGLE`-like worlds come back.
    """
    world = world_from_env()
    if not world.distributed:
        return world
    import torch.distributed as dist

    if dist.is_initialized():
        return current_world()
    timeout = datetime.timedelta(seconds=timeout_seconds())
    backend, kwargs = backend_for(device, local_world_size())
    try:
        store, rank, size = next(dist.rendezvous("env://", timeout=timeout))
        dist.init_process_group(backend, store=store, rank=rank, world_size=size, timeout=timeout, **kwargs)
        group = dist.new_group(backend="gloo", timeout=timeout) if backend == "nccl" else None
    except (RuntimeError, ValueError) as err:  # DistStoreError (a timeout) is a RuntimeError
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise RuntimeFailure(f"rank {world.rank} of {world.world_size} could not join the other ranks "
                             f"(MASTER_ADDR {os.environ.get('MASTER_ADDR')!r}, MASTER_PORT "
                             f"{os.environ.get('MASTER_PORT')!r}): {first}") from err
    _STATE.update(store=store, group=group, exchanges=0)
    return world


def backend_for(device: Any, local_world_size: int = 1, visible_gpus: int | None = None) -> tuple[str, dict[str, Any]]:
    """The process-group backend for a rank on ``device`` and the extra arguments of
    ``init_process_group``: NCCL bound to the rank's GPU (``device_id``) for a CUDA device when each of
    the node's ``local_world_size`` ranks has a GPU of its own (NCCL refuses two ranks on one GPU),
    gloo otherwise (``device`` None: the CPU).  ``visible_gpus`` defaults to
    ``torch.cuda.device_count()``.  Nothing lipcert exchanges needs NCCL: objects always travel over a
    gloo group (:func:`gather`), so both choices give the same results."""
    import torch

    if device is None or torch.device(device).type != "cuda":
        return "gloo", {}
    gpus = torch.cuda.device_count() if visible_gpus is None else visible_gpus
    if local_world_size > gpus:
        return "gloo", {}
    return "nccl", {"device_id": torch.device(device)}


def local_world_size(env: Mapping[str, str] | None = None) -> int:
    """The ranks on this node (torchrun's ``LOCAL_WORLD_SIZE``; 1 when it is not set or not a number)."""
    env = os.environ if env is None else env
    try:
        return max(1, int(env.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


def close_world() -> None:
    """Leave the process group :func:`init_world` joined (nothing when it joined none)."""
    if not _STATE:
        return
    import torch.distributed as dist

    _STATE.clear()
    if dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def world_session(device: Any = None) -> Iterator[World]:
    """:func:`init_world` for the length of a ``with`` block."""
    try:
        yield init_world(device)
    finally:
        close_world()


def rank_device(device: Any, world: World) -> Any:
    """A rank's device: ``cuda`` without an index becomes ``cuda:LOCAL_RANK`` (modulo the visible GPUs)."""
    import torch

    device = torch.device(device)
    if world.distributed and device.type == "cuda" and device.index is None:
        return torch.device("cuda", world.local_rank % max(1, torch.cuda.device_count()))
    return device


# --------------------------------------------------------------------------- gathering and faults


def gather(obj: Any, world: World, what: str) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank (``[obj]`` in a one-process world).

    All ranks must call it in the same order.  ``what`` names the exchange in the error raised when
    a rank dies or hangs (:class:`~certify.errors.RuntimeFailure`, naming the missing ranks).
    """
    if not world.distributed:
        return [obj]
    import torch.distributed as dist

    exchange = _STATE.get("exchanges", 0)
    _STATE["exchanges"] = exchange + 1
    _store_set(f"{_KEY}/{exchange}/ready/{world.rank}", "1")
    out: list[Any] = [None] * world.world_size
    try:
        dist.all_gather_object(out, obj, group=_STATE.get("group"))
    except RuntimeError as err:  # gloo: a closed peer or a timeout (DistBackendError is a RuntimeError)
        raise RuntimeFailure(_who_failed(exchange, world, what, err)) from err
    return out


def note_failure(message: str, world: World | None = None) -> None:
    """Leave this rank's error in the rendezvous store, for the ranks waiting on it (never raises)."""
    world = current_world() if world is None else world
    if world.distributed:
        _store_set(f"{_KEY}/failed/{world.rank}", message[:300])


def _who_failed(exchange: int, world: World, what: str, err: Exception) -> str:
    missing = [r for r in range(world.world_size) if not _store_has(f"{_KEY}/{exchange}/ready/{r}")]
    if not missing:
        detail = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        return f"exchanging {what} between the {world.world_size} ranks failed: {detail}"
    parts = []
    for r in missing:
        reason = _store_get(f"{_KEY}/failed/{r}")
        parts.append(f"rank {r} failed ({reason})" if reason else f"rank {r} stopped")
    return (f"{'; '.join(parts)} before sending its part of {what} (world of {world.world_size}); "
            "the run was abandoned, see that rank's log")


def _store_set(key: str, value: str) -> None:
    store = _STATE.get("store")
    with contextlib.suppress(Exception):
        if store is not None:
            store.set(key, value)


def _store_has(key: str) -> bool:
    store = _STATE.get("store")
    try:
        return store is None or bool(store.check([key]))
    except Exception:  # the store went with rank 0: we cannot tell
        return True


def _store_get(key: str) -> str | None:
    if not _store_has(key) or _STATE.get("store") is None:
        return None
    try:
        return bytes(_STATE["store"].get(key)).decode("utf-8", "replace")
    except Exception:
        return None
