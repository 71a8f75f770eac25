"""``lipcert demo``."""

from __future__ import annotations

import contextlib
import sys
from typing import Callable, Iterator

import click
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

# --------------------------------------------------------------------------- demo
from ..defaults import (
    DEFAULT_BATCH_SIZE,
    DEMO_ATTACK_STEPS,  # noqa: E402  (kept in this section so branches merge cleanly)
)
from .app import main
from .options import run_options
from .output import check_outputs, check_positive, emit_json, show, stderr_console


@main.command()
@click.option("--models-dir", type=click.Path(file_okay=False), default=None,
              help="Directory with the four fmnist_*.pt2 models. Default: examples/models of the source tree.")
@click.option("--limit", type=int, default=None, help="Use only the first N demo images (of 1,000).")
@click.option("--attack-steps", type=int, default=DEMO_ATTACK_STEPS, show_default=True,
              help="PGD steps of the brief attack (0: no attack).")
@click.option("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, show_default=True)
@run_options
def demo(models_dir: str | None, limit: int | None, attack_steps: int, batch_size: int, device: str, seed: int,
         json_path: str | None, quiet: bool) -> None:
    """Certify and attack the shipped Fashion-MNIST models on embedded test images (no downloads)."""
    from .options import one_process_only

    one_process_only("demo", "the tour of 1,000 embedded images is not shared out between ranks, so every "
                             "rank would run all of it and print the same tables")
    from ..data import load_dataset
    from ..device import resolve_device, seed_everything
    from ..evaluation.demo import DEMO_MODELS, find_models, run_demo
    from ..reporting.tables import demo_table
    from ..results import demo_json

    check_positive("--batch-size", batch_size)
    check_outputs({"--json": json_path}, {})
    find_models(models_dir)  # a clear error before any progress bar
    dev = resolve_device(device)
    seed_everything(seed)
    data = load_dataset("demo", limit=limit)
    with _demo_progress(len(DEMO_MODELS), quiet) as progress:
        report = run_demo(data, models_dir=models_dir, attack_steps=attack_steps, batch_size=batch_size,
                          device=dev, seed=seed, progress=progress)
    emit_json(demo_json(report, sys.argv[1:]), json_path)
    show([demo_table(report)], quiet, json_path == "-")


@contextlib.contextmanager
def _demo_progress(total: int, quiet: bool) -> Iterator[Callable[[int, int], None] | None]:
    if quiet:
        yield None
        return
    with Progress(TextColumn("demo: certifying and attacking models"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=stderr_console(), transient=True) as bar:
        task = bar.add_task("demo", total=total)
        yield lambda done, total_: bar.update(task, completed=done, total=total_)
