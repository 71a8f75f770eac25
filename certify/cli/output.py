"""Output for the commands: consoles, progress bars, JSON, output-file checks, SIGTERM."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Sequence

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from ..defaults import (
    PROGRESS_MIN_EXAMPLES,
)

# --------------------------------------------------------------------------- output helpers


def stderr_console() -> Console:
    return Console(stderr=True)


def stdout_console() -> Console:
    return Console()


@contextlib.contextmanager
def progress_bar(description: str, total: int, quiet: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A rich progress bar on stderr; yields a ``progress(done, total)`` callback."""
    if quiet or total < PROGRESS_MIN_EXAMPLES:
        yield None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=stderr_console(), transient=True) as bar:
        task = bar.add_task(description, total=total)

        def update(done: int, total_: int) -> None:
            bar.update(task, completed=done, total=total_)

        yield update


@contextlib.contextmanager
def delayed_progress_bar(description: str, quiet: bool, delay: float = 1.0
                         ) -> Iterator[Callable[[int, int], None] | None]:
    """A ``progress(done, total)`` callback whose rich bar on stderr appears only once the work has
    taken more than ``delay`` seconds (the Lipschitz analysis: instant when cached, minutes on
    large models)."""
    if quiet:
        yield None
        return
    import time

    start = time.monotonic()
    state: dict[str, Any] = {}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())

    def update(done: int, total: int) -> None:
        if "bar" not in state:
            if time.monotonic() - start <= delay:
                return
            state["bar"] = Progress(*columns, console=stderr_console(), transient=True)
            state["bar"].start()
            state["task"] = state["bar"].add_task(description, total=total)
        state["bar"].update(state["task"], completed=done, total=total)

    try:
        yield update
    finally:
        if "bar" in state:
            state["bar"].stop()


def emit_json(data: dict[str, Any], path: str | None, out: Any = None) -> None:
    """JSON to stdout (``-``), into an :class:`certify.io.OutputSet` (``out``) or atomically to ``path``."""
    from ..results import dumps, write_results

    if path is None:
        return
    if path == "-":
        click.echo(dumps(data), nl=False)
    else:
        write_results(data, path, out)


def check_outputs(outputs: dict[str, str | None], inputs: dict[str, str | None]) -> None:
    """Writable, distinct outputs that are not inputs, checked before any work (see certify.io)."""
    from ..io import check_outputs as check

    check(outputs, inputs)


def model_inputs(model: str, arch: str | None, data_source: str | None) -> dict[str, str | None]:
    return {"the model": model, "the --arch spec": arch, "the data": data_source}


def show(renderables: Sequence[Any], quiet: bool, json_to_stdout: bool) -> None:
    """Tables go to stdout, or to stderr when stdout carries JSON."""
    if quiet:
        return
    console = stderr_console() if json_to_stdout else stdout_console()
    for r in renderables:
        if r is not None:
            console.print(r)


@contextlib.contextmanager
def interrupt_on_sigterm() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C, so runs stop cleanly and write partial results."""
    import signal

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not in the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main_process() -> bool:
    """False on the ranks of a torchrun launch other than rank 0 (they neither write nor draw)."""
    from ..distributed import world_from_env

    return world_from_env().is_main


def rank_outputs(quiet: bool, *paths: str | None) -> tuple[Any, ...]:
    """``(quiet, *paths)`` for this process: under torchrun only rank 0 writes files and draws
    progress and tables; the other ranks are quiet and write nothing."""
    if main_process():
        return (quiet, *paths)
    return (True, *(None for _ in paths))


def check_positive(name: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise click.BadParameter(f"must be at least 1, got {value}", param_hint=name)
