"""The ``lipcert`` command line: thin wrappers over the library.

Commands parse options, call library functions, and hand the returned
dataclasses to :mod:`certify.render`.  Library errors (:class:`LipcertError`)
become one ``Error: …`` line on stderr and a documented exit code:
0 ok, 1 gate failed, 2 usage or bad input, 3 runtime failure.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
from typing import Any, Callable, Iterator, Sequence

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from . import __version__
from .defaults import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CERTIFICATE,
    DEFAULT_DEVICE,
    DEFAULT_SEED,
    DEFAULT_SPLIT,
    PROGRESS_MIN_EXAMPLES,
)
from .errors import EXIT_RUNTIME, EXIT_USAGE, LipcertError

F = Callable[..., Any]


# --------------------------------------------------------------------------- group & errors


class LipcertGroup(click.Group):
    """Turns library errors into ``Error: …`` + exit code (tracebacks only with --debug)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LipcertError as err:
            if _debug(ctx):
                raise
            _fail(str(err), err.exit_code)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except MemoryError:
            _fail("out of memory; lower --batch-size or --limit", EXIT_RUNTIME)
        except Exception as err:  # unexpected: one line, traceback with --debug
            if _debug(ctx):
                raise
            msg = str(err).strip().splitlines()
            _fail(f"internal error: {type(err).__name__}: {msg[0] if msg else ''} (rerun with --debug for a traceback)",
                  EXIT_RUNTIME)


def _debug(ctx: click.Context) -> bool:
    return bool(ctx.meta.get("lipcert.debug")) or os.environ.get("LIPCERT_DEBUG") == "1"


def _fail(message: str, code: int) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


@click.group(cls=LipcertGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lipcert")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """lipcert: how robust is a PyTorch classifier, provably and empirically?

    Exit codes: 0 ok, 1 gate failed, 2 usage or bad input, 3 runtime failure.
    """
    ctx.meta["lipcert.debug"] = debug


# --------------------------------------------------------------------------- shared options


def _set_debug(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    if value:
        ctx.meta["lipcert.debug"] = True
    return value


def model_options(f: F) -> F:
    """MODEL argument plus how to load it."""
    decorators = [
        click.argument("model", type=click.Path(dir_okay=True)),
        click.option("--arch", help="Architecture for a state_dict or safetensors checkpoint: "
                                    "module:Class or a YAML model spec."),
        click.option("--arch-kwargs", default=None, help="JSON keyword arguments for --arch module:Class."),
        click.option("--trust-checkpoint", is_flag=True,
                     help="Allow arbitrary pickles (they can run code; only for files you trust)."),
    ]
    for d in reversed(decorators):
        f = d(f)
    return f


def data_options(f: F) -> F:
    decorators = [
        click.option("--data", "data_source", default=None,
                     help="idx directory, fashion-mnist, mnist, cifar10, mnist5k, demo, .npz, .pt or image "
                          "folder. Default: the dataset named in the model's metadata."),
        click.option("--data-root", default=None, type=click.Path(), help="Root directory for named datasets."),
        click.option("--split", type=click.Choice(["train", "test"]), default=DEFAULT_SPLIT, show_default=True),
        click.option("--limit", type=int, default=None, help="Use only the first N examples."),
        click.option("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, show_default=True),
    ]
    for d in reversed(decorators):
        f = d(f)
    return f


def run_options(f: F) -> F:
    decorators = [
        click.option("--device", default=DEFAULT_DEVICE, show_default=True, help="auto, cpu or cuda."),
        click.option("--seed", type=int, default=DEFAULT_SEED, show_default=True),
        click.option("--json", "json_path", default=None, help="Write JSON results here ('-' for stdout)."),
        click.option("--quiet", "-q", is_flag=True, help="No table or progress bar."),
        click.option("--debug", is_flag=True, expose_value=False, callback=_set_debug, is_eager=True,
                     help="Show tracebacks for errors."),
    ]
    for d in reversed(decorators):
        f = d(f)
    return f


def parse_kwargs_json(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise click.BadParameter(f"expected a JSON object, e.g. '{{\"width\": 64}}' ({err.msg})",
                                 param_hint="--arch-kwargs") from None
    if not isinstance(value, dict):
        raise click.BadParameter("expected a JSON object", param_hint="--arch-kwargs")
    return value


def load_model_from_options(model: str, arch: str | None, arch_kwargs: str | None, trust_checkpoint: bool,
                            device: Any) -> Any:
    from .checkpoint import load_architecture, load_model

    architecture = load_architecture(arch, parse_kwargs_json(arch_kwargs))
    return load_model(model, arch=architecture, trust_checkpoint=trust_checkpoint, device=device)


def load_data_from_options(loaded: Any, data_source: str | None, data_root: str | None, split: str,
                           limit: int | None) -> Any:
    from .data import load_dataset
    from .errors import BadInputError

    source = data_source or loaded.metadata.dataset
    if source is None:
        raise BadInputError("no --data given and the model's metadata names no dataset; pass --data")
    return load_dataset(source, split=split, data_root=data_root, limit=limit)


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


def emit_json(data: dict[str, Any], path: str | None) -> None:
    from .io import write_text_atomic
    from .render import dumps

    if path is None:
        return
    text = dumps(data)
    if path == "-":
        click.echo(text, nl=False)
    else:
        write_text_atomic(path, text)


def show(renderables: Sequence[Any], quiet: bool, json_to_stdout: bool) -> None:
    """Tables go to stdout, or to stderr when stdout carries JSON."""
    if quiet:
        return
    console = stderr_console() if json_to_stdout else stdout_console()
    for r in renderables:
        if r is not None:
            console.print(r)


def check_positive(name: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise click.BadParameter(f"must be at least 1, got {value}", param_hint=name)


# --------------------------------------------------------------------------- certify


@main.command()
@model_options
@click.option("--norm", type=click.Choice(["l2", "linf"]), required=True, help="Threat-model norm of ε.")
@click.option("--eps", "eps", multiple=True, required=True, help="Radius ε; repeat or give 0.5,1,1.5.")
@click.option("--certificate", type=click.Choice(["auto", "l2-multi", "l2-single", "linf-dist"]),
              default=DEFAULT_CERTIFICATE, show_default=True,
              help="Margin-to-radius rule; auto uses the best sound one.")
@click.option("--lipschitz-constant", type=float, default=None,
              help="Lipschitz constant L; radii scale as 1/L. Default: the declared one, else 1.")
@click.option("--assume-lipschitz", is_flag=True,
              help="Certify under a Lipschitz property lipcert could not verify (JSON says so).")
@data_options
@run_options
@click.option("--per-example", "per_example_path", default=None,
              help="Write a CSV index,label,prediction,gap,margin,radius.")
def certify(model: str, arch: str | None, arch_kwargs: str | None, trust_checkpoint: bool, norm: str,
            eps: tuple[str, ...], certificate: str, lipschitz_constant: float | None, assume_lipschitz: bool,
            data_source: str | None, data_root: str | None, split: str, limit: int | None, batch_size: int,
            device: str, seed: int, json_path: str | None, quiet: bool, per_example_path: str | None) -> None:
    """Certified radii from confidence gaps: lipcert certify model.pt --norm l2 --eps 1.5"""
    from .certificates import certify as run_certify
    from .certificates import parse_eps
    from .device import resolve_device, seed_everything
    from .io import write_text_atomic
    from .render import certify_json, certify_table, examples_csv, flags_table

    check_positive("--batch-size", batch_size)
    eps_values = parse_eps(list(eps))
    dev = resolve_device(device)
    seed_everything(seed)
    loaded = load_model_from_options(model, arch, arch_kwargs, trust_checkpoint, dev)
    data = load_data_from_options(loaded, data_source, data_root, split, limit)
    with progress_bar("certify", len(data), quiet) as progress:
        report = run_certify(loaded, data, norm=norm, eps=eps_values, certificate=certificate,
                             lipschitz_constant=lipschitz_constant, assume_lipschitz=assume_lipschitz,
                             batch_size=batch_size, device=dev, seed=seed, progress=progress)
    emit_json(certify_json(report, sys.argv[1:]), json_path)
    if per_example_path:
        write_text_atomic(per_example_path, examples_csv(report.examples))
    show([certify_table(report), flags_table(report.flags)], quiet, json_path == "-")
    if not report.plan.lipschitz_verified and not quiet:
        stderr_console().print(
            f"[bold yellow]Warning:[/] the Lipschitz property behind these radii is {report.plan.basis}, "
            f"not verified: {report.plan.reason}")
    if report.partial:
        _fail("interrupted; partial results were written", 130)


# --------------------------------------------------------------------------- lipschitz (issue 4)


# --------------------------------------------------------------------------- attack (issue 5)


# --------------------------------------------------------------------------- analyze / report (issue 6)


# --------------------------------------------------------------------------- run / gate (issue 7)


# --------------------------------------------------------------------------- demo (issue 3)

from .defaults import DEMO_ATTACK_STEPS  # noqa: E402  (kept in this section so branches merge cleanly)


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
    from .data import load_dataset
    from .demo import DEMO_MODELS, find_models, run_demo
    from .device import resolve_device, seed_everything
    from .render import demo_json, demo_table

    check_positive("--batch-size", batch_size)
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
