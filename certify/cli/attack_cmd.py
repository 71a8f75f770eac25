"""``lipcert attack``."""

from __future__ import annotations

import sys

import click

from ..budget import budget_or_none
from ..defaults import (
    BOUND_CERTIFICATES,
    CERTIFICATE_CHOICES,
    DEFAULT_ATTACK_STEPS,
    DEFAULT_ATTACKS,
    DEFAULT_CERTIFICATE,
    DEFAULT_RESTARTS,
)
from .app import fail, main
from .options import (
    budget_option,
    data_options,
    int_list,
    load_data_from_options,
    load_model_from_options,
    model_options,
    parse_names,
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

# --------------------------------------------------------------------------- attack


@main.command()
@model_options
@threat_options
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
@click.option("--certificate", type=click.Choice(CERTIFICATE_CHOICES + BOUND_CERTIFICATES),
              default=DEFAULT_CERTIFICATE, show_default=True, help="Certificate for certify-first (ibp, crown, alpha-crown: bound propagation).")
@click.option("--certificate-budget", default="0", show_default=True,
              callback=lambda ctx, param, value: budget_option(value),
              help="With --certificate auto: bound propagation certify-first may also spend, as in certify: seconds "
                   "(30s) or bound passes (200); 0 keeps certify-first Lipschitz-only.")
@click.option("--assume-lipschitz", is_flag=True, help="Use a Lipschitz property lipcert could not verify.")
@data_options
@run_options
@click.option("--per-example", "per_example_path", default=None,
              help="Write a CSV index,label,prediction,gap,margin,radius,radius_method,min_adv_distance,"
                   "min_adv_attack.")
@click.option("--resume", "resume_path", default=None, type=click.Path(dir_okay=False),
              help="Continue a run from its partial JSON (written when a run is interrupted); same settings.")
def attack(model: str, arch: str | None, arch_kwargs: str | None, trust_checkpoint: bool, norm: str,
           eps: tuple[str, ...], attack_names: tuple[str, ...], steps_text: tuple[str, ...], restarts: int,
           check_certificates: int,
           no_certify_first: bool, independent: bool, certificate: str, certificate_budget: str, assume_lipschitz: bool,
           data_source: str | None,
           data_root: str | None, split: str, limit: int | None, batch_size: int, device: str, seed: int,
           json_path: str | None, quiet: bool, per_example_path: str | None, resume_path: str | None) -> None:
    """Attack suites, certify-first: lipcert attack model.pt2 --norm l2 --eps 1.5 --attacks pgd,cw

    \b
    Attacks: apgd-ce, apgd-dlr, apgd-t, pgd, pgd-margin, l2-pgd, linf-pgd (native, early
    stop), fb-pgd, fgsm, cw, deepfool, fmn, ddn (foolbox), hsj (black-box HopSkipJump).
    """
    from ..device import check_device_spec
    from ..threat import parse_eps

    quiet, json_path, per_example_path = rank_outputs(quiet, json_path, per_example_path)
    check_positive("--batch-size", batch_size)
    check_positive("--restarts", restarts)
    if check_certificates < 0:
        raise click.BadParameter(f"must be ≥ 0, got {check_certificates}", param_hint="--check-certificates")
    check_outputs({"--json": json_path, "--per-example": per_example_path},
                  {**model_inputs(model, arch, data_source), "the --resume file": resume_path})
    eps_values, steps = parse_eps(list(eps)), int_list("--steps", steps_text)
    names = parse_names(attack_names)
    if attack_names and names is None:  # e.g. --attacks ","
        names = ()
    check_device_spec(device)  # usage errors before the heavy imports below

    from attacks import evaluate, resume_state

    from ..device import seed_everything
    from ..errors import CertificateViolation
    from ..reporting.examples_csv import attack_examples_csv
    from ..reporting.tables import attack_table, flags_table, iteration_scaling_table, status_table
    from ..results import attack_json, read_results

    dev = run_device_for(device)
    seed_everything(seed)
    loaded = load_model_from_options(model, arch, arch_kwargs, trust_checkpoint, dev)
    data = load_data_from_options(loaded, data_source, data_root, split, limit)
    resume = resume_state(read_results(resume_path, param="resume_path")) if resume_path else None
    try:
        with progress_bar("attack", len(data), quiet) as progress:
            report = evaluate(loaded, data, norm=norm, eps=eps_values, attacks=names, steps=steps,
                              restarts=restarts, certify_first=not no_certify_first, cascade=not independent,
                              certificate=certificate,
                              certificate_budget=budget_or_none(certificate_budget),
                              assume_lipschitz=assume_lipschitz, check_certificates=check_certificates,
                              batch_size=batch_size, device=dev, seed=seed, progress=progress, resume=resume)
    except CertificateViolation as err:
        if getattr(err, "report", None) is not None:
            emit_json(attack_json(err.report, sys.argv[1:]), json_path)  # type: ignore[attr-defined]
        raise
    from ..io import output_set

    with output_set() as out:
        emit_json(attack_json(report, sys.argv[1:]), json_path, out)
        if per_example_path:
            out.text(per_example_path, attack_examples_csv(report))
    show([attack_table(report), status_table(report), iteration_scaling_table(report), flags_table(report.flags)], quiet,
         json_path == "-")
    for note in report.notes if not quiet else ():
        stderr_console().print(f"[dim]Note:[/] {note}")
    if report.partial:
        fail("interrupted; partial results were written", 130)
