"""``lipcert certify``."""

from __future__ import annotations

import sys

import click

from ..defaults import (
    BOUND_CERTIFICATES,
    CERTIFICATE_CHOICES,
    DEFAULT_CERTIFICATE,
    DEFAULT_CERTIFICATE_BUDGET,
)
from .app import fail, main
from .options import (
    budget_option,
    check_lipschitz_constant,
    data_options,
    load_data_from_options,
    load_model_from_options,
    model_options,
    run_device_for,
    run_options,
    threat_options,
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

# --------------------------------------------------------------------------- certify


@main.command()
@model_options
@threat_options
@click.option("--certificate", type=click.Choice(CERTIFICATE_CHOICES + BOUND_CERTIFICATES),
              default=DEFAULT_CERTIFICATE, show_default=True,
              help="Margin-to-radius rule; auto uses the best sound one. ibp, crown and alpha-crown bound "
                   "the network by propagation (docs/bounds.md).")
@click.option("--certificate-budget", default=DEFAULT_CERTIFICATE_BUDGET, show_default=True,
              callback=lambda ctx, param, value: budget_option(value),
              help="Work auto may spend on bound propagation after the Lipschitz certificate: seconds (30s) or "
                   "bound passes (200); 0 keeps auto Lipschitz-only (docs/certificates.md).")
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
            eps: tuple[str, ...], certificate: str, certificate_budget: str, lipschitz_constant: float | None, assume_lipschitz: bool,
            data_source: str | None, data_root: str | None, split: str, limit: int | None, batch_size: int,
            device: str, seed: int, json_path: str | None, quiet: bool, per_example_path: str | None,
            resume_path: str | None) -> None:
    """Certified radii from confidence gaps: lipcert certify model.pt --norm l2 --eps 1.5"""
    from ..device import check_device_spec
    from ..threat import parse_eps

    quiet, json_path, per_example_path = rank_outputs(quiet, json_path, per_example_path)
    check_positive("--batch-size", batch_size)
    eps_values = parse_eps(list(eps))
    check_device_spec(device)  # usage errors before the heavy imports below

    from ..certificates import certify as run_certify
    from ..certificates import resume_examples
    from ..device import seed_everything
    from ..io import output_set
    from ..reporting.examples_csv import examples_csv
    from ..reporting.tables import certify_table, flags_table
    from ..results import certify_json, read_results

    check_outputs({"--json": json_path, "--per-example": per_example_path},
                  {**model_inputs(model, arch, data_source), "the --resume file": resume_path})
    dev = run_device_for(device)
    seed_everything(seed)
    loaded = load_model_from_options(model, arch, arch_kwargs, trust_checkpoint, dev)
    check_lipschitz_constant(loaded, norm, certificate, lipschitz_constant)
    data = load_data_from_options(loaded, data_source, data_root, split, limit)
    resume = resume_examples(read_results(resume_path, param="resume_path"), loaded, data, norm) if resume_path else None
    with progress_bar("certify", len(data), quiet) as progress:
        report = run_certify(loaded, data, norm=norm, eps=eps_values, certificate=certificate,
                             lipschitz_constant=lipschitz_constant, assume_lipschitz=assume_lipschitz,
                             batch_size=batch_size, device=dev, seed=seed, progress=progress, resume=resume,
                             certificate_budget=certificate_budget)
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
        fail("interrupted; partial results were written", 130)


