"""The ``lipcert`` command line: thin wrappers over the library.

Commands parse options, call library functions, and hand the returned
dataclasses to :mod:`certify.results` (JSON) and :mod:`certify.reporting` (tables, reports).  Library errors (:class:`LipcertError`)
become one ``Error: …`` line on stderr and a documented exit code:
0 ok, 1 gate failed, 2 usage or bad input, 3 runtime failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from typing import Any, Callable, Iterator, Sequence

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ._version import __version__
from .defaults import (
    CERTIFICATE_CHOICES,
    DEFAULT_ATTACK_STEPS,
    DEFAULT_ATTACKS,
    DEFAULT_BATCH_SIZE,
    DEFAULT_CERTIFICATE,
    DEFAULT_DEVICE,
    DEFAULT_RESTARTS,
    DEFAULT_SEED,
    DEFAULT_SPLIT,
    PROGRESS_MIN_EXAMPLES,
    SEED_MAX,
)
from .errors import EXIT_RUNTIME, LipcertError, in_terms_of
from .threat import NORMS

F = Callable[..., Any]


# --------------------------------------------------------------------------- group & errors


class LipcertGroup(click.Group):
    """Turns library errors into ``Error: …`` + exit code (tracebacks only with --debug)."""

    def main(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        """Usage errors too are one line: ``Error: … (see 'lipcert CMD --help')``."""
        kwargs["standalone_mode"] = False
        try:
            return super().main(*args, **kwargs)
        except click.UsageError as err:
            cmd = err.ctx.command_path if err.ctx is not None else "lipcert"
            _fail(f"{err.format_message()} (see '{cmd} --help')", err.exit_code)
        except click.ClickException as err:
            _fail(err.format_message(), err.exit_code)
        except click.exceptions.Abort:
            _fail("interrupted", 130)
        except click.exceptions.Exit as err:
            sys.exit(err.exit_code)
        return None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LipcertError as err:
            if _debug(ctx):
                raise
            _fail(in_terms_of(err, self._flags(ctx)), err.exit_code)
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


    def _flags(self, ctx: click.Context) -> dict[str, str]:
        """The invoked command's options by Python name: ``{"eps": "--eps", "data_source": "--data"}``."""
        cmd = self.get_command(ctx, ctx.invoked_subcommand) if ctx.invoked_subcommand else None
        params = cmd.params if cmd is not None else []
        flags: dict[str, str] = {}
        for p in params:
            shown = max(p.opts, key=len) if isinstance(p, click.Option) else p.human_readable_name
            names = [p.name] + [o.lstrip("-").replace("-", "_") for o in p.opts if o.startswith("--")]
            flags.update({n: shown for n in names if n})  # --resume (resume_path) is "resume" too
        for library_name, option in LIBRARY_NAMES.items():  # the library's name for a value an option gives
            if option in flags:
                flags.setdefault(library_name, flags[option])
        return flags


#: Library parameter names that differ from the option's: load_dataset(source) is --data.
LIBRARY_NAMES = {"source": "data_source"}


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
    ctx.with_resource(interrupt_on_sigterm())


# --------------------------------------------------------------------------- shared options


def option_group(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    """Bundle click options into one decorator (applied in the order listed)."""

    def apply(f: F) -> F:
        for d in reversed(decorators):
            f = d(f)
        return f

    return apply


def _set_debug(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    if value:
        ctx.meta["lipcert.debug"] = True
    return value


def _set_trust_modules(ctx: click.Context, _param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
    ctx.meta["lipcert.trust_modules"] = tuple(value)
    return value


#: MODEL argument plus how to load it.
model_options = option_group(
    click.argument("model", type=click.Path(dir_okay=True)),
    click.option("--arch", help="Architecture for a state_dict or safetensors checkpoint: "
                                "module:Class or a YAML model spec."),
    click.option("--arch-kwargs", default=None, help="JSON keyword arguments for --arch module:Class."),
    click.option("--trust-checkpoint", is_flag=True,
                 help="Allow arbitrary pickles, pickled or non-aten torch.export members and any architecture "
                      "the file names (they can run code; only for files you trust). See docs/security.md."),
    click.option("--trust-module", "trust_modules", multiple=True, expose_value=False, callback=_set_trust_modules,
                 help="A Python module whose nn.Module classes a checkpoint may name as its architecture "
                      "(besides certify.models and certify.layers); repeatable."),
)


data_options = option_group(
    click.option("--data", "data_source", default=None,
                 help="idx directory, fashion-mnist, mnist, cifar10, mnist5k, demo, .npz, .pt or image "
                      "folder. Default: the dataset named in the model's metadata."),
    click.option("--data-root", default=None, type=click.Path(), help="Root directory for named datasets."),
    click.option("--split", type=click.Choice(["train", "test"]), default=DEFAULT_SPLIT, show_default=True),
    click.option("--limit", type=int, default=None, help="Use only the first N examples."),
    click.option("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, show_default=True),
)


run_options = option_group(
    click.option("--device", default=DEFAULT_DEVICE, show_default=True, help="auto, cpu or cuda."),
    click.option("--seed", type=click.IntRange(0, SEED_MAX), default=DEFAULT_SEED, show_default=True),
    click.option("--json", "json_path", default=None, help="Write JSON results here ('-' for stdout)."),
    click.option("--quiet", "-q", is_flag=True, help="No table or progress bar."),
    click.option("--debug", is_flag=True, expose_value=False, callback=_set_debug, is_eager=True,
                 help="Show tracebacks for errors."),
)


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
    from .checkpoints import load_architecture, load_model

    architecture = load_architecture(arch, parse_kwargs_json(arch_kwargs))
    ctx = click.get_current_context(silent=True)
    trusted = ctx.meta.get("lipcert.trust_modules", ()) if ctx is not None else ()
    return load_model(model, arch=architecture, trust_checkpoint=trust_checkpoint, trusted_modules=trusted,
                      device=device)


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
    from .results import dumps, write_results

    if path is None:
        return
    if path == "-":
        click.echo(dumps(data), nl=False)
    else:
        write_results(data, path, out)


def check_outputs(outputs: dict[str, str | None], inputs: dict[str, str | None]) -> None:
    """Writable, distinct outputs that are not inputs, checked before any work (see certify.io)."""
    from .io import check_outputs as check

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


def check_positive(name: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise click.BadParameter(f"must be at least 1, got {value}", param_hint=name)


# --------------------------------------------------------------------------- certify


@main.command()
@model_options
@click.option("--norm", type=click.Choice(NORMS), required=True, help="Threat-model norm of ε.")
@click.option("--eps", "eps", multiple=True, required=True, help="Radius ε; repeat or give 0.5,1,1.5.")
@click.option("--certificate", type=click.Choice(CERTIFICATE_CHOICES),
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
@click.option("--resume", "resume_path", default=None, type=click.Path(dir_okay=False),
              help="Continue a run from its partial JSON (written when a run is interrupted).")
def certify(model: str, arch: str | None, arch_kwargs: str | None, trust_checkpoint: bool, norm: str,
            eps: tuple[str, ...], certificate: str, lipschitz_constant: float | None, assume_lipschitz: bool,
            data_source: str | None, data_root: str | None, split: str, limit: int | None, batch_size: int,
            device: str, seed: int, json_path: str | None, quiet: bool, per_example_path: str | None,
            resume_path: str | None) -> None:
    """Certified radii from confidence gaps: lipcert certify model.pt --norm l2 --eps 1.5"""
    from .device import check_device_spec
    from .threat import parse_eps

    check_positive("--batch-size", batch_size)
    eps_values = parse_eps(list(eps))
    check_device_spec(device)  # usage errors before the heavy imports below

    from .certificates import certify as run_certify
    from .certificates import resume_examples
    from .device import resolve_device, seed_everything
    from .io import output_set
    from .reporting.examples_csv import examples_csv
    from .reporting.tables import certify_table, flags_table
    from .results import certify_json, read_results

    check_outputs({"--json": json_path, "--per-example": per_example_path},
                  {**model_inputs(model, arch, data_source), "the --resume file": resume_path})
    dev = resolve_device(device)
    seed_everything(seed)
    loaded = load_model_from_options(model, arch, arch_kwargs, trust_checkpoint, dev)
    check_lipschitz_constant(loaded, norm, certificate, lipschitz_constant)
    data = load_data_from_options(loaded, data_source, data_root, split, limit)
    resume = resume_examples(read_results(resume_path, param="resume_path"), loaded, data, norm) if resume_path else None
    with progress_bar("certify", len(data), quiet) as progress:
        report = run_certify(loaded, data, norm=norm, eps=eps_values, certificate=certificate,
                             lipschitz_constant=lipschitz_constant, assume_lipschitz=assume_lipschitz,
                             batch_size=batch_size, device=dev, seed=seed, progress=progress, resume=resume)
    with output_set() as out:
        emit_json(certify_json(report, sys.argv[1:]), json_path, out)
        if per_example_path:
            out.text(per_example_path, examples_csv(report.examples))
    show([certify_table(report), flags_table(report.flags)], quiet, json_path == "-")
    if not report.plan.lipschitz_verified and not quiet:
        stderr_console().print(
            f"[bold yellow]Warning:[/] the Lipschitz property behind these radii is {report.plan.basis}, "
            f"not verified: {report.plan.reason}")
    if report.partial:
        _fail("interrupted; partial results were written", 130)


def check_lipschitz_constant(loaded: Any, norm: str, certificate: str, lipschitz_constant: float | None) -> None:
    """--lipschitz-constant cannot apply to pairwise certificates: refuse it rather than ignore it."""
    from .certificates import resolved_certificate

    if lipschitz_constant is not None and resolved_certificate(loaded, norm, certificate) == "auto":
        raise click.UsageError(
            f"--lipschitz-constant {lipschitz_constant:g} cannot apply to --certificate auto on this model: it "
            f"declares no {norm} Lipschitz claim, so auto uses pairwise bounds computed from the weights; "
            "name --certificate l2-multi, l2-single or linf-dist to certify with a given constant")


# --------------------------------------------------------------------------- lipschitz


@main.command()
@model_options
@click.option("--norm", type=click.Choice(NORMS), default="l2", show_default=True,
              help="Norm of the bounds (L2→L2 or ℓ∞→ℓ∞).")
@click.option("--data", "data_source", default=None,
              help="Data for the empirical estimates (same names as certify); omit for bounds only.")
@click.option("--data-root", default=None, type=click.Path(), help="Root directory for named datasets.")
@click.option("--split", type=click.Choice(["train", "test"]), default=DEFAULT_SPLIT, show_default=True)
@click.option("--limit", type=int, default=1000, show_default=True, help="Points for the empirical estimates.")
@run_options
def lipschitz(model: str, arch: str | None, arch_kwargs: str | None, trust_checkpoint: bool, norm: str,
              data_source: str | None, data_root: str | None, split: str, limit: int, device: str, seed: int,
              json_path: str | None, quiet: bool) -> None:
    """Guaranteed Lipschitz bounds per layer, and empirical estimates: lipcert lipschitz model.pt2 --data demo"""
    from .device import resolve_device, seed_everything
    from .lipschitz.estimates import empirical_estimates
    from .lipschitz import analyse
    from .reporting.tables import empirical_table, lipschitz_table
    from .results import lipschitz_json

    check_positive("--limit", limit)
    check_outputs({"--json": json_path}, model_inputs(model, arch, data_source))
    dev = resolve_device(device)
    seed_everything(seed)
    loaded = load_model_from_options(model, arch, arch_kwargs, trust_checkpoint, dev)
    data = load_dataset_for_lipschitz(loaded, data_source, data_root, split, limit)
    with delayed_progress_bar("Lipschitz analysis (nodes)", quiet) as progress:
        report = analyse(loaded, norm=norm, input_shape=data.input_shape if data is not None else None,
                         progress=progress)
    empirical = None
    if data is not None:
        with progress_bar("estimates", len(data), quiet) as progress:
            empirical = empirical_estimates(loaded.module, data, bounds=loaded.metadata.bounds, device=dev,
                                            seed=seed, progress=progress)
    emit_json(lipschitz_json(report, empirical, sys.argv[1:], loaded.info), json_path)
    show([lipschitz_table(report), empirical_table(empirical) if empirical is not None else None],
         quiet, json_path == "-")


def load_dataset_for_lipschitz(loaded: Any, data_source: str | None, data_root: str | None, split: str,
                               limit: int) -> Any:
    if data_source is None:
        return None
    return load_data_from_options(loaded, data_source, data_root, split, limit)


@main.command("data-lipschitz")
@click.argument("data_source", metavar="DATA")
@click.option("--split", type=click.Choice(["train", "test"]), default="train", show_default=True)
@click.option("--data-root", default=None, type=click.Path(), help="Root directory for named datasets.")
@click.option("--limit", type=int, default=None, help="Use only the first N examples.")
@run_options
def data_lipschitz_cmd(data_source: str, split: str, data_root: str | None, limit: int | None, device: str,
                       seed: int, json_path: str | None, quiet: bool) -> None:
    """Lip₂,∞ of a dataset ([WCAT] App. C): lipcert data-lipschitz fashion-mnist"""
    from .data import load_dataset
    from .device import resolve_device
    from .lipschitz.estimates import data_lipschitz
    from .reporting.tables import data_lipschitz_table
    from .results import data_lipschitz_json

    check_outputs({"--json": json_path}, {"the data": data_source})
    dev = resolve_device(device)
    data = load_dataset(data_source, split=split, data_root=data_root, limit=limit)
    with progress_bar("data-lipschitz", len(data), quiet) as progress:
        result = data_lipschitz(data, device=dev, progress=progress)
    info = {"source": data.source, "split": data.split, "n": len(data)}
    emit_json(data_lipschitz_json(result, info, sys.argv[1:]), json_path)
    show([data_lipschitz_table(result, data.source)], quiet, json_path == "-")



# --------------------------------------------------------------------------- attack


def _int_list(name: str, values_: Sequence[str] | str) -> tuple[int, ...]:
    """``--steps 100,1000`` and ``--steps 100 --steps 1000`` alike."""
    text = values_ if isinstance(values_, str) else ",".join(values_)
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"expected integers like 100,1000; got {text!r}", param_hint=name) from None
    if not values or any(v < 1 for v in values):
        raise click.BadParameter(f"expected positive integers like 100,1000; got {text!r}", param_hint=name)
    return values


@main.command()
@model_options
@click.option("--norm", type=click.Choice(NORMS), required=True, help="Threat-model norm of ε.")
@click.option("--eps", "eps", multiple=True, required=True, help="Radius ε; repeat or give 0.5,1,1.5.")
@click.option("--attacks", "attack_names", multiple=True,
              help="Attacks, comma-separated or repeated (see `lipcert attack --help`); default: "
                   + "; ".join(f"{k}: {','.join(v)}" for k, v in DEFAULT_ATTACKS.items()) + ".")
@click.option("--steps", "steps_text", multiple=True, default=(",".join(map(str, DEFAULT_ATTACK_STEPS)),),
              show_default=True,
              help="Iterations of PGD-type attacks; several (100,1000,10000) give the iteration-scaling table.")
@click.option("--restarts", type=int, default=DEFAULT_RESTARTS, show_default=True, help="Random restarts of PGD.")
@click.option("--check-certificates", type=int, default=0, show_default=True,
              help="Attack N certified points at 0.999·radius with strong settings; any success exits 3.")
@click.option("--no-certify-first", is_flag=True, help="Attack certified points too.")
@click.option("--independent", is_flag=True,
              help="Run every attack on every uncertified point (rows = each attack alone) instead of cascading.")
@click.option("--certificate", type=click.Choice(CERTIFICATE_CHOICES),
              default=DEFAULT_CERTIFICATE, show_default=True, help="Margin-to-radius rule for certify-first.")
@click.option("--assume-lipschitz", is_flag=True, help="Use a Lipschitz property lipcert could not verify.")
@data_options
@run_options
@click.option("--per-example", "per_example_path", default=None,
              help="Write a CSV index,label,prediction,gap,margin,radius,min_adv_distance,min_adv_attack.")
@click.option("--resume", "resume_path", default=None, type=click.Path(dir_okay=False),
              help="Continue a run from its partial JSON (written when a run is interrupted); same settings.")
def attack(model: str, arch: str | None, arch_kwargs: str | None, trust_checkpoint: bool, norm: str,
           eps: tuple[str, ...], attack_names: tuple[str, ...], steps_text: tuple[str, ...], restarts: int,
           check_certificates: int,
           no_certify_first: bool, independent: bool, certificate: str, assume_lipschitz: bool, data_source: str | None,
           data_root: str | None, split: str, limit: int | None, batch_size: int, device: str, seed: int,
           json_path: str | None, quiet: bool, per_example_path: str | None, resume_path: str | None) -> None:
    """Attack suites, certify-first: lipcert attack model.pt2 --norm l2 --eps 1.5 --attacks pgd,cw

    \b
    Attacks: apgd-ce, apgd-dlr, apgd-t, pgd, pgd-margin, l2-pgd, linf-pgd (native, early
    stop), fb-pgd, fgsm, cw, deepfool, fmn, ddn (foolbox), hsj (black-box HopSkipJump).
    """
    from .device import check_device_spec
    from .threat import parse_eps

    check_positive("--batch-size", batch_size)
    check_positive("--restarts", restarts)
    if check_certificates < 0:
        raise click.BadParameter(f"must be ≥ 0, got {check_certificates}", param_hint="--check-certificates")
    check_outputs({"--json": json_path, "--per-example": per_example_path},
                  {**model_inputs(model, arch, data_source), "the --resume file": resume_path})
    eps_values, steps = parse_eps(list(eps)), _int_list("--steps", steps_text)
    names = parse_names(attack_names)
    if attack_names and names is None:  # e.g. --attacks ","
        names = ()
    check_device_spec(device)  # usage errors before the heavy imports below

    from attacks import evaluate, resume_state

    from .device import resolve_device, seed_everything
    from .errors import CertificateViolation
    from .reporting.examples_csv import attack_examples_csv
    from .reporting.tables import attack_table, flags_table, iteration_scaling_table
    from .results import attack_json, read_results

    dev = resolve_device(device)
    seed_everything(seed)
    loaded = load_model_from_options(model, arch, arch_kwargs, trust_checkpoint, dev)
    data = load_data_from_options(loaded, data_source, data_root, split, limit)
    resume = resume_state(read_results(resume_path, param="resume_path")) if resume_path else None
    try:
        with progress_bar("attack", len(data), quiet) as progress:
            report = evaluate(loaded, data, norm=norm, eps=eps_values, attacks=names, steps=steps,
                              restarts=restarts, certify_first=not no_certify_first, cascade=not independent,
                              certificate=certificate,
                              assume_lipschitz=assume_lipschitz, check_certificates=check_certificates,
                              batch_size=batch_size, device=dev, seed=seed, progress=progress, resume=resume)
    except CertificateViolation as err:
        if getattr(err, "report", None) is not None:
            emit_json(attack_json(err.report, sys.argv[1:]), json_path)  # type: ignore[attr-defined]
        raise
    from .io import output_set

    with output_set() as out:
        emit_json(attack_json(report, sys.argv[1:]), json_path, out)
        if per_example_path:
            out.text(per_example_path, attack_examples_csv(report))
    show([attack_table(report), iteration_scaling_table(report), flags_table(report.flags)], quiet,
         json_path == "-")
    for note in report.notes if not quiet else ():
        stderr_console().print(f"[dim]Note:[/] {note}")
    if report.partial:
        _fail("interrupted; partial results were written", 130)



# --------------------------------------------------------------------------- analyze / report


@main.command()
@model_options
@click.option("--norm", type=click.Choice(NORMS), required=True, help="Threat-model norm of ε.")
@click.option("--eps", "eps", multiple=True, help="Chosen ε (0 allowed); repeat or 0,0.1,1.5. "
                                                  "Default: l2 0,0.1,1.5; linf 8/255.")
@click.option("--attacks", "attack_names", multiple=True,
              help="Attack names (repeat or a,b); 'none' skips attacks. Default: the norm's default attacks.")
@click.option("--steps", "steps_text", multiple=True, default=("100",), show_default=True,
              help="Attack iterations, comma-separated or repeated (several give the iteration-scaling view).")
@click.option("--restarts", type=int, default=1, show_default=True)
@click.option("--certificate", type=click.Choice(CERTIFICATE_CHOICES),
              default=DEFAULT_CERTIFICATE, show_default=True)
@click.option("--lipschitz-constant", type=float, default=None)
@click.option("--assume-lipschitz", is_flag=True)
@click.option("--train-margins/--no-train-margins", default=True, show_default=True,
              help="Also histogram label margins on the train split.")
@data_options
@run_options
def analyze(model: str, arch: str | None, arch_kwargs: str | None, trust_checkpoint: bool, norm: str,
            eps: tuple[str, ...], attack_names: tuple[str, ...], steps_text: tuple[str, ...], restarts: int,
            certificate: str, lipschitz_constant: float | None, assume_lipschitz: bool, train_margins: bool,
            data_source: str | None, data_root: str | None, split: str, limit: int | None, batch_size: int,
            device: str, seed: int, json_path: str | None, quiet: bool) -> None:
    """Certify, attack and analyse one model: lipcert analyze model.pt2 --norm l2 --json results.json"""
    from .device import check_device_spec

    check_positive("--batch-size", batch_size)
    eps_values, steps = parse_eps_allow_zero(eps), _int_list("--steps", steps_text)
    check_device_spec(device)  # usage errors before the heavy imports below

    from .device import resolve_device, seed_everything
    from .evaluation.pipeline import AnalyzeOptions, analyze as run_analyze
    from .reporting.tables import analysis_tables, flags_table_json

    check_outputs({"--json": json_path}, model_inputs(model, arch, data_source))
    dev = resolve_device(device)
    seed_everything(seed)
    opts = AnalyzeOptions(norm=norm, eps=eps_values, attacks=parse_names(attack_names),
                          steps=steps, restarts=restarts, certificate=certificate,
                          lipschitz_constant=lipschitz_constant, assume_lipschitz=assume_lipschitz,
                          batch_size=batch_size, device=dev, seed=seed, argv=tuple(sys.argv[1:]))
    loaded = load_model_from_options(model, arch, arch_kwargs, trust_checkpoint, dev)
    check_lipschitz_constant(loaded, norm, certificate, lipschitz_constant)
    data = load_data_from_options(loaded, data_source, data_root, split, limit)
    train = train_split(loaded, data_source, data_root, split) if train_margins else None
    with progress_bar("analyze", len(data), quiet) as progress:
        results = run_analyze(loaded, data, opts, train_data=train, progress=progress)
    emit_json(results, json_path)
    show(analysis_tables(results["analysis"]) + [flags_table_json(results)], quiet, json_path == "-")


def parse_eps_allow_zero(values: Sequence[str]) -> tuple[float, ...] | None:
    from .threat import parse_eps_list

    return parse_eps_list(values)


def parse_names(values: Sequence[str]) -> tuple[str, ...] | None:
    names = tuple(n.strip() for v in values for n in v.split(",") if n.strip())
    if not names:
        return None
    return () if names == ("none",) else names


def train_split(loaded: Any, data_source: str | None, data_root: str | None, split: str) -> Any:
    """The train split for margin histograms (None when the source has none or is already train)."""
    from .defaults import TRAIN_MARGIN_LIMIT
    from .errors import BadInputError

    if split == "train":
        return None
    try:
        return load_data_from_options(loaded, data_source, data_root, "train", TRAIN_MARGIN_LIMIT)
    except BadInputError:
        return None


@main.command()
@click.argument("results", nargs=-1, required=True, type=click.Path())
@click.option("--pdf", "pdf_path", default=None, help="Write the PDF report here.")
@click.option("--md", "md_path", default=None, help="Write a Markdown summary here ('-' for stdout).")
@click.option("--quiet", "-q", is_flag=True, help="No table.")
@click.option("--debug", is_flag=True, expose_value=False, callback=_set_debug, is_eager=True,
              help="Show tracebacks for errors.")
def report(results: tuple[str, ...], pdf_path: str | None, md_path: str | None, quiet: bool) -> None:
    """Render results JSONs side by side: lipcert report a.json b.json --pdf report.pdf --md summary.md"""
    from .io import output_set
    from .evaluation.pipeline import ensure_analysis
    from .reporting.markdown import markdown
    from .reporting.pdf import write_pdf
    from .reporting.tables import summary_table
    from .results import load_results, malformed_results

    check_outputs({"--pdf": pdf_path, "--md": md_path}, {f"results file {p!r}": p for p in results})
    with malformed_results(", ".join(results)):
        loaded = [ensure_analysis(load_results(p)) for p in results]
        with output_set() as out:
            pages = write_pdf(loaded, str(out.path(pdf_path))) if pdf_path else 0
            md = markdown(loaded) if md_path else None
            if md is not None and md_path != "-":
                out.text(md_path, md)
        if pdf_path and not quiet:
            stderr_console().print(f"wrote {pdf_path} ({pages} pages)")
        if md_path == "-":
            click.echo(md)
        show([summary_table(loaded)], quiet, md_path == "-")



# --------------------------------------------------------------------------- run / gate


gate_output_options = option_group(
    click.option("--junit", "junit_path", default=None, help="Write the gate results as JUnit XML here."),
    click.option("--summary-md", "summary_md_path", default=None,
                 help="Write a Markdown gate summary here (e.g. $GITHUB_STEP_SUMMARY)."),
    click.option("--quiet", "-q", is_flag=True, help="No tables or progress bar."),
    click.option("--debug", is_flag=True, expose_value=False, callback=_set_debug, is_eager=True,
                 help="Show tracebacks for errors."),
)


@main.command("run")
@click.argument("suite_path", metavar="SUITE.yaml", type=click.Path())
@click.option("--norm", type=click.Choice(NORMS), default=None, help="Override the suite's norm.")
@click.option("--eps", "eps", multiple=True, help="Override the suite's ε (repeat or 0.1,0.3).")
@click.option("--data", "data_source", default=None, help="Override the suite's data source.")
@click.option("--data-root", default=None, type=click.Path())
@click.option("--split", type=click.Choice(["train", "test"]), default=None)
@click.option("--limit", type=int, default=None)
@click.option("--attacks", "attack_names", multiple=True, help="Override the attacks ('none' skips them).")
@click.option("--steps", "steps_text", multiple=True, help="Override attack iterations (comma-separated or repeated).")
@click.option("--batch-size", type=int, default=None)
@click.option("--device", default=None, help="auto, cpu or cuda.")
@click.option("--seed", type=click.IntRange(0, SEED_MAX), default=None)
@click.option("--json", "json_path", default=None, help="Results JSON path ({name} = model name).")
@click.option("--pdf", "pdf_path", default=None, help="Also write a PDF report.")
@click.option("--md", "md_path", default=None, help="Also write a Markdown report.")
@gate_output_options
def run_command(suite_path: str, norm: str | None, eps: tuple[str, ...], data_source: str | None,
                data_root: str | None, split: str | None, limit: int | None, attack_names: tuple[str, ...],
                steps_text: tuple[str, ...], batch_size: int | None, device: str | None, seed: int | None,
                json_path: str | None, pdf_path: str | None, md_path: str | None, junit_path: str | None,
                summary_md_path: str | None, quiet: bool) -> None:
    """Run a YAML suite and its gates: lipcert run suite.yaml --junit gates.xml"""
    from .suites import json_paths, load_suite, run_suite

    check_positive("--batch-size", batch_size)
    check_positive("--limit", limit)
    overrides = dict(norm=norm, eps=parse_eps_allow_zero(eps), data_source=data_source, data_root=data_root,
                     split=split, limit=limit, attacks=parse_names(attack_names),
                     steps=_int_list("--steps", steps_text) if steps_text else None,
                     batch_size=batch_size, device=device, seed=seed, json_path=json_path, pdf_path=pdf_path,
                     md_path=md_path)
    from .io import output_set

    suite = load_suite(suite_path, overrides)
    paths = list(json_paths(suite))
    check_outputs({**{f"--json ({p})": p for p in paths}, "--pdf": suite.pdf_path, "--md": suite.md_path,
                   "--junit": junit_path, "--summary-md": summary_md_path}, suite_inputs(suite, suite_path))
    interactive = sys.stderr.isatty()  # the model count is known, the example count not yet
    with progress_bar("run", PROGRESS_MIN_EXAMPLES if interactive else 0, quiet) as progress:
        outcome = run_suite(suite, argv=sys.argv[1:], progress=progress)
    if any(res.get("partial") for res in outcome.results):
        with output_set() as out:
            for res, path in zip(outcome.results, paths):
                emit_json(res, path, out)
        _fail("interrupted; partial results were written (gates not evaluated)", 130)
    with output_set() as out:
        for res, path in zip(outcome.results, paths):
            emit_json(res, path, out)
        write_reports(list(outcome.results), suite.pdf_path, suite.md_path, quiet, out)
        failure = finish_gates(outcome.gates, junit_path, summary_md_path, quiet, out)
    show([summary_table_for(outcome.results)], quiet, False)
    show_gates(outcome.gates, quiet)
    if failure:
        from .errors import GateFailed

        raise GateFailed(failure)


def suite_inputs(suite: Any, suite_path: str) -> dict[str, str | None]:
    inputs: dict[str, str | None] = {"the suite": suite_path, "the data": suite.data_source}
    for spec in suite.models:
        inputs[f"model {spec.name!r}"] = spec.path
    if suite.gates and isinstance(suite.gates.get("baseline"), dict):
        inputs["the baseline"] = suite.gates["baseline"].get("path")
    return inputs


def summary_table_for(results: Sequence[dict[str, Any]]) -> Any:
    from .reporting.tables import summary_table

    return summary_table(list(results))


def write_reports(results: list[dict[str, Any]], pdf_path: str | None, md_path: str | None, quiet: bool,
                  out: Any) -> None:
    from .reporting.markdown import markdown
    from .reporting.pdf import write_pdf

    if pdf_path:
        pages = write_pdf(results, str(out.path(pdf_path)))
        if not quiet:
            stderr_console().print(f"wrote {pdf_path} ({pages} pages)")
    if md_path:
        out.text(md_path, markdown(results))


def finish_gates(reports: Sequence[Any], junit_path: str | None, summary_md_path: str | None, quiet: bool,
                 out: Any) -> str | None:
    """Stage JUnit/Markdown into ``out``; return the failure message when a gate failed (the caller exits 1)."""
    from .reporting.junit import gate_junit
    from .reporting.markdown import gate_markdown
    from .reporting.strings import gate_failure_message

    if not reports:
        return None
    if junit_path:
        out.text(junit_path, gate_junit(reports))
    if summary_md_path:
        out.text(summary_md_path, gate_markdown(reports))
    return None if all(r.passed for r in reports) else gate_failure_message(reports)


def show_gates(reports: Sequence[Any], quiet: bool) -> None:
    from .reporting.tables import gate_table

    if reports:
        show([gate_table(reports)], quiet, False)


@main.command("gate")
@click.argument("results", nargs=-1, required=True, type=click.Path())
@click.option("--config", "config_path", required=True, type=click.Path(),
              help="YAML with the gate thresholds (or a suite with a gates: block).")
@click.option("--baseline", "baseline_path", default=None, type=click.Path(),
              help="Previous results JSON to compare with (overrides baseline.path).")
@gate_output_options
def gate_command(results: tuple[str, ...], config_path: str, baseline_path: str | None, junit_path: str | None,
                 summary_md_path: str | None, quiet: bool) -> None:
    """Gate existing results: lipcert gate results.json --config gates.yaml --baseline old.json"""
    from .errors import GateFailed
    from .suites import evaluate_gates, load_gate_config
    from .io import output_set
    from .results import load_results, malformed_results

    check_outputs({"--junit": junit_path, "--summary-md": summary_md_path},
                  {**{f"results file {p!r}": p for p in results}, "the --config file": config_path,
                   "the --baseline file": baseline_path})
    config = load_gate_config(config_path)
    with malformed_results(", ".join(results + ((baseline_path,) if baseline_path else ()))):
        baseline = load_results(baseline_path, param="baseline_path") if baseline_path else None
        reports = [evaluate_gates(load_results(p), config, baseline=baseline) for p in results]
        with output_set() as out:
            failure = finish_gates(reports, junit_path, summary_md_path, quiet, out)
    show_gates(reports, quiet)
    if failure:
        raise GateFailed(failure)



# --------------------------------------------------------------------------- demo

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
    from .evaluation.demo import DEMO_MODELS, find_models, run_demo
    from .device import resolve_device, seed_everything
    from .reporting.tables import demo_table
    from .results import demo_json

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
