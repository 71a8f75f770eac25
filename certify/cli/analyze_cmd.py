"""``lipcert analyze`` and ``lipcert report``."""

from __future__ import annotations

import sys
from typing import Any

import click

from ..budget import budget_or_none
from ..defaults import (
    BOUND_CERTIFICATES,
    CERTIFICATE_CHOICES,
    DEFAULT_CERTIFICATE,
)
from ..threat import NORMS, parse_eps_list
from .app import main
from .options import (
    budget_option,
    check_lipschitz_constant,
    data_options,
    int_list,
    load_data_from_options,
    load_model_from_options,
    model_options,
    parse_names,
    run_device_for,
    run_options,
    set_debug,
)
from .output import (
    check_outputs,
    check_positive,
    emit_json,
    model_inputs,
    progress_bar,
    rank_outputs,
    show,
    stderr_console,
)

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
@click.option("--certificate", type=click.Choice(CERTIFICATE_CHOICES + BOUND_CERTIFICATES),
              default=DEFAULT_CERTIFICATE, show_default=True)
@click.option("--certificate-budget", default="0", show_default=True,
              callback=lambda ctx, param, value: budget_option(value),
              help="With auto, bound propagation (CROWN, α-CROWN) within this budget after the Lipschitz certificate, "
                   "for certify and the attacks' certify-first: seconds (30s) or bound passes (200); 0: Lipschitz only.")
@click.option("--lipschitz-constant", type=float, default=None)
@click.option("--assume-lipschitz", is_flag=True)
@click.option("--train-margins/--no-train-margins", default=True, show_default=True,
              help="Also histogram label margins on the train split.")
@data_options
@run_options
def analyze(model: str, arch: str | None, arch_kwargs: str | None, trust_checkpoint: bool, norm: str,
            eps: tuple[str, ...], attack_names: tuple[str, ...], steps_text: tuple[str, ...], restarts: int,
            certificate: str, certificate_budget: str, lipschitz_constant: float | None, assume_lipschitz: bool,
            train_margins: bool,
            data_source: str | None, data_root: str | None, split: str, limit: int | None, batch_size: int,
            device: str, seed: int, json_path: str | None, quiet: bool) -> None:
    """Certify, attack and analyse one model: lipcert analyze model.pt2 --norm l2 --json results.json"""
    from ..device import check_device_spec

    quiet, json_path = rank_outputs(quiet, json_path)
    check_positive("--batch-size", batch_size)
    eps_values, steps = parse_eps_list(eps), int_list("--steps", steps_text)
    check_device_spec(device)  # usage errors before the heavy imports below

    from ..device import seed_everything
    from ..evaluation.pipeline import AnalyzeOptions
    from ..evaluation.pipeline import analyze as run_analyze
    from ..reporting.tables import analysis_tables, flags_table_json

    check_outputs({"--json": json_path}, model_inputs(model, arch, data_source))
    dev = run_device_for(device)
    seed_everything(seed)
    opts = AnalyzeOptions(norm=norm, eps=eps_values, attacks=parse_names(attack_names),
                          steps=steps, restarts=restarts, certificate=certificate,
                          certificate_budget=budget_or_none(certificate_budget),
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


def train_split(loaded: Any, data_source: str | None, data_root: str | None, split: str) -> Any:
    """The train split for margin histograms (None when the source has none or is already train)."""
    from ..defaults import TRAIN_MARGIN_LIMIT
    from ..errors import BadInputError

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
@click.option("--debug", is_flag=True, expose_value=False, callback=set_debug, is_eager=True,
              help="Show tracebacks for errors.")
def report(results: tuple[str, ...], pdf_path: str | None, md_path: str | None, quiet: bool) -> None:
    """Render results JSONs side by side: lipcert report a.json b.json --pdf report.pdf --md summary.md"""
    from ..evaluation.pipeline import ensure_analysis
    from ..io import output_set
    from ..reporting.markdown import markdown
    from ..reporting.pdf import write_pdf
    from ..reporting.tables import summary_table
    from ..results import load_results, malformed_results

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
