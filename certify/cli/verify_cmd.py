"""``lipcert verify``: VNN-LIB properties, one at a time or a VNN-COMP ``instances.csv`` folder."""

from __future__ import annotations

import sys

import click

from ..defaults import DEFAULT_SEED, SEED_MAX
from .app import main
from .options import load_model_from_options, one_process_only, run_device_for, set_debug
from .output import check_outputs, emit_json, main_process, rank_outputs

#: Seconds per property when --timeout is not given.
DEFAULT_VERIFY_TIMEOUT = 60.0


@main.command()
@click.argument("model", required=False, type=click.Path(dir_okay=False))
@click.argument("property_path", metavar="[PROPERTY]", required=False, type=click.Path(dir_okay=False))
@click.option("--timeout", type=float, default=DEFAULT_VERIFY_TIMEOUT, show_default=True,
              help="Seconds for one property (instances.csv rows carry their own).")
@click.option("--instances", "instances_path", default=None, type=click.Path(dir_okay=False),
              help="A VNN-COMP instances.csv (onnx,vnnlib,timeout per row, relative to its folder).")
@click.option("--results", "results_path", default=None,
              help="Write the answer here: VNN-COMP's result file, or a CSV row per instance with --instances.")
@click.option("--json", "json_path", default=None, help="Write JSON results here ('-' for stdout).")
@click.option("--input-shape", "input_shape", default=None, expose_value=False,
              help="Shape of one example, e.g. 1,28,28 (X_i fill it in row-major order).",
              callback=lambda ctx, p, v: _shape(ctx, v))
@click.option("--seed", type=click.IntRange(0, SEED_MAX), default=DEFAULT_SEED, show_default=True)
@click.option("--quiet", "-q", is_flag=True, help="Only the answer.")
@click.option("--debug", is_flag=True, expose_value=False, callback=set_debug, is_eager=True,
              help="Show tracebacks for errors.")
def verify(model: str | None, property_path: str | None, timeout: float, instances_path: str | None,
           results_path: str | None, json_path: str | None, seed: int, quiet: bool) -> None:
    """Decide a VNN-LIB property: lipcert verify net.onnx prop.vnnlib

    Prints sat (with a counterexample re-checked in exact arithmetic), unsat (proved by a sound
    certificate), unknown or timeout, in VNN-COMP's result format.
    """
    if instances_path is not None:
        if model is not None or property_path is not None:
            raise click.UsageError("give MODEL PROPERTY or --instances, not both")
        _run_instances(instances_path, results_path, json_path, seed, quiet)
        return
    if model is None or property_path is None:
        raise click.UsageError("give MODEL and PROPERTY (or --instances DIR/instances.csv)")
    if not timeout > 0:
        raise click.BadParameter(f"must be positive, got {timeout}", param_hint="--timeout")
    one_process_only("verify", "one property is decided by one process (torchrun shares out the rows "
                               "of --instances)")
    from ..io import output_set
    from ..results import verify_json
    from ..vnnlib import read_vnnlib
    from ..vnnlib.verify import verify as run_verify

    check_outputs({"--json": json_path, "--results": results_path},
                  {"the model": model, "the property": property_path})
    prop = read_vnnlib(property_path)
    loaded = load_model_from_options(model, None, None, False, "cpu")
    result = run_verify(loaded, prop, timeout, seed=seed)
    with output_set() as out:
        emit_json(verify_json(result=result, argv=sys.argv[1:]), json_path, out)
        if results_path:
            out.text(results_path, result.vnncomp())
    if json_path != "-":
        click.echo(result.vnncomp(), nl=False)
    if not quiet:
        click.echo(f"{result.result} in {result.seconds:.2f} s"
                   + (f" ({result.method}): " if result.method else ": ") + result.reason, err=True)


def _shape(ctx: click.Context, value: str | None) -> str | None:
    from .options import parse_shape

    if value is not None:
        ctx.meta["lipcert.input_shape"] = parse_shape(value)
    return value


def _run_instances(instances_path: str, results_path: str | None, json_path: str | None, seed: int,
                   quiet: bool) -> None:
    from ..io import output_set
    from ..results import verify_json
    from ..vnnlib.instances import results_csv, run_instances

    # torchrun: the rows are shared out, rank 0 prints its own progress and writes every answer
    main_rank = main_process()
    quiet, json_path, results_path = rank_outputs(quiet, json_path, results_path)
    check_outputs({"--json": json_path, "--results": results_path}, {"the instances file": instances_path})
    run_device_for("cpu")  # joins the process group under torchrun

    def progress(done: int, total: int, row: object) -> None:
        if not quiet:
            r = row.result  # type: ignore[attr-defined]
            inst = row.instance  # type: ignore[attr-defined]
            click.echo(f"[{done}/{total}] {inst.onnx} {inst.vnnlib}: {r.result} ({r.seconds:.2f} s)", err=True)

    run = run_instances(instances_path, seed=seed, progress=progress)
    with output_set() as out:
        emit_json(verify_json(run=run, argv=sys.argv[1:]), json_path, out)
        if results_path:
            out.text(results_path, results_csv(run))
    if json_path != "-" and main_rank:
        click.echo(run.summary())
