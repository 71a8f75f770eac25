"""VNN-COMP benchmark folders: ``instances.csv`` in, one answer per row and a summary out.

``instances.csv`` rows are ``onnx_path,vnnlib_path,timeout_seconds``, the paths relative to the
CSV's folder (VNN-COMP's layout).  Each model is loaded once.  A row whose model or property lipcert
refuses is answered ``error`` with the reason (VNN-COMP's result for a tool failure); the run goes
on with the next row.
"""

from __future__ import annotations

import csv
import io
import math
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..distributed import World, current_world, gather
from ..errors import BadInputError, short_repr
from .falsify import DEFAULT_BUDGET, SearchBudget
from .parser import gunzip, read_vnnlib
from .verify import RESULTS, VerifyResult, verify

#: The largest model a gzipped ``.onnx.gz`` may decompress to.
MAX_MODEL_BYTES = 2 << 30
#: Every answer a row can get: :data:`~certify.vnnlib.verify.RESULTS` plus ``error``.
ROW_RESULTS = RESULTS + ("error",)


@dataclass(frozen=True)
class Instance:
    onnx: str  #: as written in the CSV
    vnnlib: str
    timeout: float


@dataclass(frozen=True)
class InstanceResult:
    instance: Instance
    result: VerifyResult


@dataclass(frozen=True)
class InstancesRun:
    """Every row's answer, and the summary counts."""

    rows: tuple[InstanceResult, ...]
    seconds: float

    def counts(self) -> dict[str, int]:
        found = Counter(r.result.result for r in self.rows)
        return {k: found.get(k, 0) for k in ROW_RESULTS}

    def summary(self) -> str:
        c = self.counts()
        parts = [f"{c[k]} {k}" for k in ROW_RESULTS if c[k] or k != "error"]
        return f"{len(self.rows)} instances: " + ", ".join(parts) + f" in {self.seconds:.1f} s"


def read_instances(csv_path: str | os.PathLike[str]) -> tuple[Instance, ...]:
    p = Path(csv_path)
    if not p.is_file():
        raise BadInputError(f"instances file {str(p)!r} does not exist", param="instances")
    rows = []
    with open(p, newline="", encoding="utf-8") as f:
        for line, row in enumerate(csv.reader(f), start=1):
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != 3:
                raise BadInputError(f"{p!s}:{line}: expected onnx_path,vnnlib_path,timeout, got "
                                    f"{short_repr(row, 80)}", param="instances")
            try:
                timeout = float(row[2])
            except ValueError:
                raise BadInputError(f"{p!s}:{line}: timeout {short_repr(row[2], 40)} is not a number",
                                    param="instances") from None
            if not (timeout > 0 and math.isfinite(timeout)):
                raise BadInputError(f"{p!s}:{line}: timeout must be positive, got {row[2]}", param="instances")
            rows.append(Instance(row[0].strip(), row[1].strip(), timeout))
    if not rows:
        raise BadInputError(f"instances file {str(p)!r} has no rows", param="instances")
    return tuple(rows)


def run_instances(csv_path: str | os.PathLike[str], *, seed: int = 0, budget: SearchBudget = DEFAULT_BUDGET,
                  progress: Callable[[int, int, InstanceResult], None] | None = None,
                  world: World | None = None) -> InstancesRun:
    """Verify every row of ``csv_path`` (see the module docs); ``progress(done, total, row)`` after each.

    Under torchrun (``world``, default: the initialised process group's) rank ``r`` of ``N`` decides
    rows ``r, r + N, …`` (each within its own timeout, as alone) and every rank gets every row, in
    the file's order; ``progress`` counts this rank's rows.
    """
    from ..checkpoints import load_model

    world = current_world() if world is None else world
    base = Path(csv_path).parent
    instances = read_instances(csv_path)
    mine = range(world.rank, len(instances), world.world_size)
    models: dict[str, object] = {}
    rows: list[tuple[int, InstanceResult]] = []
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="lipcert-vnncomp-") as tmp:
        for i in mine:
            inst = instances[i]
            t0 = time.monotonic()
            try:
                if inst.onnx not in models:
                    models[inst.onnx] = load_model(_plain_file(base / inst.onnx, Path(tmp) / str(len(models))))
                prop = read_vnnlib(base / inst.vnnlib)
                result = verify(models[inst.onnx], prop, inst.timeout, seed=seed, budget=budget)  # type: ignore[arg-type]
            except BadInputError as err:
                result = VerifyResult("error", time.monotonic() - t0, "", str(err))
            rows.append((i, InstanceResult(inst, result)))
            if progress is not None:
                progress(len(rows), len(mine), rows[-1][1])
    if world.distributed:
        rows = sorted(row for part in gather(rows, world, "the verify answers") for row in part)
    return InstancesRun(tuple(row for _, row in rows), time.monotonic() - start)


def _plain_file(p: Path, tmp: Path) -> Path:
    """The model file, decompressed into a temporary file when it is gzipped (``.onnx.gz``)."""
    if not p.is_file():
        raise BadInputError(f"model {str(p)!r} does not exist", param="model")
    with open(p, "rb") as f:
        if f.read(2) != b"\x1f\x8b":
            return p
    tmp.mkdir()
    out = tmp / p.name.removesuffix(".gz")
    out.write_bytes(gunzip(p.read_bytes(), MAX_MODEL_BYTES, str(p)))
    return out


def results_csv(run: InstancesRun) -> str:
    """One row per instance: onnx, vnnlib, result, seconds, method, reason."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["onnx", "vnnlib", "result", "seconds", "method", "reason"])
    for row in run.rows:
        r = row.result
        w.writerow([row.instance.onnx, row.instance.vnnlib, r.result, f"{r.seconds:.3f}", r.method, r.reason])
    return buf.getvalue()
