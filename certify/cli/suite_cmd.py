"""``lipcert run`` (suites) and ``lipcert gate``."""

from __future__ import annotations

import sys
from typing import Any, Sequence

import click

from ..defaults import (
    PROGRESS_MIN_EXAMPLES,
    SEED_MAX,
)
from ..threat import NORMS, parse_eps_list
from .app import fail, main
from .options import (
    budget_option,
    int_list,
    option_group,
    parse_names,
    run_device_for,
    set_debug,
)
from .output import (
    check_outputs,
    check_positive,
    emit_json,
    main_process,
    progress_bar,
    show,
    stderr_console,
)

# --------------------------------------------------------------------------- run / gate


gate_output_options = option_group(
    click.option("--junit", "junit_path", default=None, help="Write the gate results as JUnit XML here."),
    click.option("--summary-md", "summary_md_path", default=None,
                 help="Write a Markdown gate summary here (e.g. $GITHUB_STEP_SUMMARY)."),
    click.option("--quiet", "-q", is_flag=True, help="No tables or progress bar."),
    click.option("--debug", is_flag=True, expose_value=False, callback=set_debug, is_eager=True,
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
@click.option("--certificate-budget", default=None,
              callback=lambda ctx, param, value: None if value is None else budget_option(value),
              help="Override the suite's certify.certificate_budget (30s, 200 bound passes, 0 or unlimited).")
@click.option("--device", default=None, help="auto, cpu or cuda.")
@click.option("--seed", type=click.IntRange(0, SEED_MAX), default=None)
@click.option("--json", "json_path", default=None, help="Results JSON path ({name} = model name).")
@click.option("--pdf", "pdf_path", default=None, help="Also write a PDF report.")
@click.option("--md", "md_path", default=None, help="Also write a Markdown report.")
@gate_output_options
def run_command(suite_path: str, norm: str | None, eps: tuple[str, ...], data_source: str | None,
                data_root: str | None, split: str | None, limit: int | None, attack_names: tuple[str, ...],
                steps_text: tuple[str, ...], batch_size: int | None, certificate_budget: str | None,
                device: str | None, seed: int | None,
                json_path: str | None, pdf_path: str | None, md_path: str | None, junit_path: str | None,
                summary_md_path: str | None, quiet: bool) -> None:
    """Run a YAML suite and its gates: lipcert run suite.yaml --junit gates.xml"""
    from ..suites import json_paths, load_suite, run_suite

    writer = main_process()  # under torchrun only rank 0 writes and draws
    if not writer:
        quiet, junit_path, summary_md_path = True, None, None
    check_positive("--batch-size", batch_size)
    check_positive("--limit", limit)
    overrides = dict(norm=norm, eps=parse_eps_list(eps), data_source=data_source, data_root=data_root,
                     split=split, limit=limit, attacks=parse_names(attack_names),
                     steps=int_list("--steps", steps_text) if steps_text else None,
                     batch_size=batch_size, device=device, seed=seed, json_path=json_path, pdf_path=pdf_path,
                     md_path=md_path, certificate_budget=certificate_budget)
    from ..io import output_set

    suite = load_suite(suite_path, overrides)
    paths = list(json_paths(suite))
    check_outputs({**{f"--json ({p})": p for p in paths}, "--pdf": suite.pdf_path, "--md": suite.md_path,
                   "--junit": junit_path, "--summary-md": summary_md_path}, suite_inputs(suite, suite_path))
    run_device_for(suite.device)  # under torchrun: join the other ranks
    interactive = sys.stderr.isatty()  # the model count is known, the example count not yet
    with progress_bar("run", PROGRESS_MIN_EXAMPLES if interactive else 0, quiet) as progress:
        outcome = run_suite(suite, argv=sys.argv[1:], progress=progress)
    if not writer:
        paths = [None] * len(paths)
    if any(res.get("partial") for res in outcome.results):
        with output_set() as out:
            for res, path in zip(outcome.results, paths):
                emit_json(res, path, out)
        fail("interrupted; partial results were written (gates not evaluated)", 130)
    with output_set() as out:
        for res, path in zip(outcome.results, paths):
            emit_json(res, path, out)
        if writer:
            write_reports(list(outcome.results), suite.pdf_path, suite.md_path, quiet, out)
        failure = finish_gates(outcome.gates, junit_path, summary_md_path, quiet, out)
    show([summary_table_for(outcome.results)], quiet, False)
    show_gates(outcome.gates, quiet)
    if failure:
        from ..errors import GateFailed

        raise GateFailed(failure)


def suite_inputs(suite: Any, suite_path: str) -> dict[str, str | None]:
    inputs: dict[str, str | None] = {"the suite": suite_path, "the data": suite.data_source}
    for spec in suite.models:
        inputs[f"model {spec.name!r}"] = spec.path
    if suite.gates and isinstance(suite.gates.get("baseline"), dict):
        inputs["the baseline"] = suite.gates["baseline"].get("path")
    return inputs


def summary_table_for(results: Sequence[dict[str, Any]]) -> Any:
    from ..reporting.tables import summary_table

    return summary_table(list(results))


def write_reports(results: list[dict[str, Any]], pdf_path: str | None, md_path: str | None, quiet: bool,
                  out: Any) -> None:
    from ..reporting.markdown import markdown
    from ..reporting.pdf import write_pdf

    if pdf_path:
        pages = write_pdf(results, str(out.path(pdf_path)))
        if not quiet:
            stderr_console().print(f"wrote {pdf_path} ({pages} pages)")
    if md_path:
        out.text(md_path, markdown(results))


def finish_gates(reports: Sequence[Any], junit_path: str | None, summary_md_path: str | None, quiet: bool,
                 out: Any) -> str | None:
    """Stage JUnit/Markdown into ``out``; return the failure message when a gate failed (the caller exits 1)."""
    from ..reporting.junit import gate_junit
    from ..reporting.markdown import gate_markdown
    from ..reporting.strings import gate_failure_message

    if not reports:
        return None
    if junit_path:
        out.text(junit_path, gate_junit(reports))
    if summary_md_path:
        out.text(summary_md_path, gate_markdown(reports))
    return None if all(r.passed for r in reports) else gate_failure_message(reports)


def show_gates(reports: Sequence[Any], quiet: bool) -> None:
    from ..reporting.tables import gate_table

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
    from ..errors import GateFailed
    from ..io import output_set
    from ..results import load_results, malformed_results
    from ..suites import evaluate_gates, load_gate_config

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
