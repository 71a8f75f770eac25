"""The one batched forward loop: labels, predictions, gaps, margins and radii for every example.

:func:`certify.certify`, the clean pass of :func:`attacks.evaluate` and the analyses
(:func:`certify.evaluation.analyses.forward_examples`) all run their forward passes through :func:`clean_pass`,
so batching, device moves, out-of-memory back-off and interruption are handled in one place.
With a :class:`~certify.certificates.plan.CertificatePlan` the logits come from the plan's analysed
forward pass and each example gets its certified radius; without one the radius is NaN.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Sequence

import numpy as np
import torch

from ..data import Dataset, ProgressFn
from ..device import is_out_of_memory, smaller_batch
from ..distributed import World, current_world, gather
from ..errors import BadInputError, RuntimeFailure
from ..flags import Flag, check_outputs, check_softmax_ending, check_training_mode
from .auto_plan import AutoPlan, method_code
from .margins import logit_stats

COLUMNS = ("label", "prediction", "gap", "margin", "radius", "radius_method")


@dataclass(frozen=True)
class Examples:
    """Per-example records, as numpy arrays of equal length (radius NaN where no certificate)."""

    index: np.ndarray
    label: np.ndarray
    prediction: np.ndarray
    gap: np.ndarray
    margin: np.ndarray
    radius: np.ndarray
    #: which method gave each radius: an index into :data:`.auto_plan.RADIUS_METHODS`, −1 for none
    #: (None when built without it: all −1)
    radius_method: np.ndarray = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.radius_method is None:
            object.__setattr__(self, "radius_method", np.full(len(self.index), -1, dtype=np.int64))

    def __len__(self) -> int:
        return int(self.index.shape[0])

    @property
    def correct(self) -> np.ndarray:
        return self.label == self.prediction

    def certified(self, eps: float) -> np.ndarray:
        return self.correct & (self.radius > eps)  # NaN radius → False


@dataclass(frozen=True)
class CleanPass:
    """What :func:`clean_pass` computed: the rows done, and whether it was interrupted first."""

    examples: Examples
    partial: bool


def clean_pass(module: Any, data: Dataset, device: torch.device, *, plan: Any = None, batch_size: int,
               progress: ProgressFn | None = None, start: int = 0, stop: int | None = None) -> CleanPass:
    """Examples ``start..stop`` (default: to the end) in batches of ``batch_size`` on ``device`` (see the
    module docs).

    Out of memory halves the batch and retries; a ``KeyboardInterrupt`` returns the rows done with
    ``partial=True``.  Results come back on the CPU.
    """
    stop = len(data) if stop is None else stop
    chunks: dict[str, list[torch.Tensor]] = {k: [] for k in COLUMNS}
    done, partial = start, False
    try:
        with torch.inference_mode():
            while done < stop:
                x, y = data.batch(done, min(stop, done + batch_size), device)
                try:
                    rows = _rows(module, plan, x, y)
                except Exception as exc:
                    if not is_out_of_memory(exc):
                        raise
                    batch_size = smaller_batch(batch_size, exc)
                    continue
                for key, value in zip(COLUMNS, rows):
                    chunks[key].append(value.cpu())
                done += x.shape[0]
                if progress is not None:
                    progress(done - start, stop - start)
    except KeyboardInterrupt:
        partial = True
    return CleanPass(_examples(chunks, start, done), partial)


def sharded_clean_pass(module: Any, data: Dataset, device: torch.device, *, plan: Any = None, batch_size: int,
                       progress: ProgressFn | None = None, world: World | None = None) -> CleanPass:
    """:func:`clean_pass` over this rank's shard (:func:`certify.distributed.shard`), the rows of every
    rank joined in dataset order on every rank.

    One process (``world`` None and no process group): :func:`clean_pass` itself.  An interrupted
    rank ends the rows at its last one: a partial keeps the rows from example 0 up to the first gap.
    Shards are whole batches (aligned to ``batch_size``, not to the attacks' chunks): every rank runs
    exactly the batches one process would, and a small run keeps every rank busy.
    """
    world = current_world() if world is None else world
    lo, hi = world.shard(len(data), align=max(1, batch_size))
    mine = clean_pass(module, data, device, plan=plan, batch_size=batch_size, progress=progress, start=lo, stop=hi)
    if not world.distributed:
        return mine
    return join_passes(gather(mine, world, "the clean pass"))


def join_passes(parts: Sequence[CleanPass]) -> CleanPass:
    """Consecutive shards' passes as one: rows in order, up to the first shard that stopped early."""
    rows, partial = parts[0].examples, parts[0].partial
    for part in parts[1:]:
        if partial:
            break
        if len(part.examples) and int(part.examples.index[0]) != len(rows):
            raise RuntimeFailure(f"clean pass: a shard starts at example {int(part.examples.index[0])}, "
                                 f"expected {len(rows)}; the ranks disagree about the data")
        rows, partial = concat_examples(rows, part.examples), part.partial
    return CleanPass(rows, partial)


def _rows(module: Any, plan: Any, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
    if plan is None:
        stats = logit_stats(module(x), y)
        radius = torch.full_like(stats.gap, float("nan"))
        return y, stats.prediction, stats.gap, stats.margin, radius, torch.full_like(y, -1, dtype=torch.int64)
    logits, err = plan.logits(module, x)
    stats = logit_stats(logits, y)
    if isinstance(plan, AutoPlan):  # every method that applies; the largest radius
        radius, method = plan.example_radii(x, stats, logits, err)
        return y, stats.prediction, stats.gap, stats.margin, radius, method
    if hasattr(plan, "example_radii"):  # bound propagation: radii from the inputs themselves
        radius = plan.example_radii(x, stats)
    else:
        radius = plan.radii(logits, stats, err)
    code = torch.full(radius.shape, method_code(plan.certificate), dtype=torch.int64, device=radius.device)
    return y, stats.prediction, stats.gap, stats.margin, radius, torch.where(radius > 0, code, -1)


def _examples(chunks: dict[str, list[torch.Tensor]], start: int, done: int) -> Examples:
    ints = {"label": np.int64, "prediction": np.int64, "radius_method": np.int64}
    cols = {k: (torch.cat(v).numpy() if v else np.empty(0)).astype(ints.get(k, np.float64), copy=False)
            for k, v in chunks.items()}
    return Examples(index=np.arange(start, done, dtype=np.int64), **cols)


def concat_examples(a: Examples, b: Examples) -> Examples:
    """Rows of ``a`` then ``b``."""
    return Examples(**{f.name: np.concatenate([np.asarray(getattr(a, f.name), dtype=getattr(b, f.name).dtype),
                                               getattr(b, f.name)]) for f in fields(Examples)})


def check_finite_logits(ex: Examples) -> None:
    """NaN or Inf logits are a broken model, not a result: name the first bad example."""
    bad = np.flatnonzero(~(np.isfinite(ex.gap) & np.isfinite(ex.margin)))
    if bad.size:
        i = int(ex.index[bad[0]])
        raise BadInputError(f"the model's logits are NaN or Inf on example {i} (and {bad.size - 1} more); "
                            "the model is broken: check its weights and inputs")


def _parameters(module: Any) -> list[torch.Tensor]:
    """The module's parameters and buffers (an exported module's too), for messages."""
    try:
        return [*module.parameters(), *module.buffers()]
    except Exception:  # noqa: BLE001 - a callable that is not an nn.Module has none to report
        return []


def model_num_classes(model: Any, data: Dataset, device: torch.device) -> tuple[int, list[Flag]]:
    """Run one small batch: check the data fits the model, count outputs, raise sanity flags."""
    x, _ = data.batch(0, min(len(data), 8), device)
    try:
        with torch.inference_mode():
            out = model.module(x)
            out2 = model.module(x)
    except Exception as err:
        other = sorted({str(p.dtype).replace("torch.", "") for p in _parameters(model.module)
                        if p.is_floating_point() and p.dtype != torch.float32})
        hint = (f"; its parameters are {'/'.join(other)} and lipcert feeds float32 inputs (its rounding model covers "
                "float32 models): convert it with model.float() before saving") if other else ""
        raise BadInputError(
            f"the model cannot run on data of shape {tuple(x.shape[1:])}: {str(err).splitlines()[0][:160]}{hint}"
        ) from err
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise BadInputError(f"the model must return logits of shape batch×classes, got {getattr(out, 'shape', type(out))}")
    flags = check_outputs(out, out2) + check_softmax_ending(model.module)
    if model.exported is None:  # exported graphs are traced in eval mode
        flags += check_training_mode(model.module)
    return int(out.shape[1]), flags
