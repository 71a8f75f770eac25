"""The results JSON (certify.results): its layout pinned key by key, the one reader and its errors.

The layout below was taken from the JSON of ``lipcert certify``/``attack``/``analyze`` before the
results and rendering code moved into :mod:`certify.results` and :mod:`certify.reporting`; the
same runs must keep giving the same keys in the same order, written byte for byte as
:func:`certify.results.dumps` writes them.  One key was added deliberately since: ``world_size`` after
``created`` in every header (issue 14: the processes of a torchrun run, 1 without torchrun).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner

from certify.cli import main
from certify.errors import BadInputError
from certify.results import (
    JSON_SCHEMA_VERSION,
    certify_json,
    check_results,
    dumps,
    load_results,
    read_results,
    write_results,
)

from .helpers_analysis import make_model

LAYOUT = {
    "certify": {
        "": (
            "lipcert_version schema_version command argv created world_size model data norm certificate certificate_norm "
            "lipschitz_constant lipschitz_verified lipschitz_basis lipschitz_reason clean_accuracy mean_gap "
            "median_radius results certified_by certificate_methods certificate_budget bound_propagation_skipped "
            "flags partial seed seconds settings per_example"
        ),
        "model": "path sha256 format",
        "data": "source split n",
        "results[]": "eps certified_accuracy certified_count",
        "settings": (
            "command model_sha256 data_source data_split data_total norm eps certificate lipschitz_constant "
            "assume_lipschitz seed certificate_budget"
        ),
        "per_example": "index label prediction gap margin radius radius_method",
        "certified_by[]": "eps method certified_count",
        "certificate_budget": "budget hit seconds bound_passes",
    },
    "attack": {
        "": (
            "lipcert_version schema_version command argv created world_size model data norm eps attacks steps restarts "
            "certificate lipschitz_basis clean_accuracy results worst_case certified_skipped status "
            "certificates_checked certified_by certificate_methods violations iteration_scaling flags notes partial "
            "seed seconds settings per_example"
        ),
        "model": "path sha256 format",
        "data": "source split n",
        "results[]": "attack eps steps restarts robust_accuracy attacked successes seconds",
        "worst_case[]": "eps robust_accuracy",
        "iteration_scaling[]": "attack eps steps restarts robust_accuracy attacked successes",
        "settings": (
            "command model_sha256 data_source data_split data_total norm eps attacks steps restarts mode "
            "certify_first certificate assume_lipschitz check_certificates seed"
        ),
        "per_example": ("index label prediction gap margin radius min_adv_distance min_adv_attack radius_method "
                        "robust status"),
        "status[]": "eps certified broken open certified_share broken_share open_share",
        "certified_by[]": "eps method certified_count",
    },
    "analyze": {
        "": (
            "lipcert_version schema_version command created world_size seed name model data certify attack lipschitz "
            "analysis partial notes"
        ),
        "model": "path sha256 format",
        "data": "source split n",
        "certify": (
            "lipcert_version schema_version command argv created world_size model data norm certificate certificate_norm "
            "lipschitz_constant lipschitz_verified lipschitz_basis lipschitz_reason clean_accuracy mean_gap "
            "median_radius results certified_by certificate_methods flags partial seed seconds settings per_example"
        ),
        "certify.model": "path sha256 format",
        "certify.data": "source split n",
        "certify.results[]": "eps certified_accuracy certified_count",
        "certify.settings": (
            "command model_sha256 data_source data_split data_total norm eps certificate lipschitz_constant "
            "assume_lipschitz seed"
        ),
        "certify.per_example": "index label prediction gap margin radius radius_method",
        "certify.certified_by[]": "eps method certified_count",
        "attack": (
            "lipcert_version schema_version command argv created world_size model data norm eps attacks steps restarts "
            "certificate lipschitz_basis clean_accuracy results worst_case certified_skipped status "
            "certificates_checked certified_by certificate_methods violations iteration_scaling flags notes partial "
            "seed seconds settings per_example"
        ),
        "attack.model": "path sha256 format",
        "attack.data": "source split n",
        "attack.results[]": "attack eps steps restarts robust_accuracy attacked successes seconds",
        "attack.worst_case[]": "eps robust_accuracy",
        "attack.settings": (
            "command model_sha256 data_source data_split data_total norm eps attacks steps restarts mode "
            "certify_first certificate assume_lipschitz check_certificates seed"
        ),
        "attack.per_example": ("index label prediction gap margin radius min_adv_distance min_adv_attack radius_method "
                               "robust status"),
        "attack.status[]": "eps certified broken open certified_share broken_share open_share",
        "attack.certified_by[]": "eps method certified_count",
        "lipschitz": (
            "lipcert_version schema_version command argv created world_size model norm verified unverifiable_ops "
            "graph_source global_bound per_logit_bounds pair_bounds layers empirical"
        ),
        "lipschitz.layers[]": "name op bound estimate method reused",
        "analysis": (
            "norm n clean_accuracy eps curves certified_accuracy at_eps median_adv_distance "
            "median_certified_radius bin_eps gap_bins hybrid hybrid_delegate_accuracy margins singular_values "
            "tightness"
        ),
        "analysis.curves[]": "name eps values",
        "analysis.certified_accuracy": "name eps values",
        "analysis.at_eps[]": "eps empirical_error robust_accuracy certified_accuracy certified_error open_share",
        "analysis.gap_bins[]": "index n gap_min gap_max natural_accuracy attacked_accuracy certified_accuracy",
        "analysis.hybrid[]": "threshold delegated_share kept_accuracy overall_accuracy",
        "analysis.margins": "edges test train test_mean train_mean",
        "analysis.singular_values[]": "name shape count std largest smallest",
        "analysis.tightness": "compared median_ratio mean_ratio violations",
    },
}


def layout(obj: Any, path: str = "", out: dict[str, str] | None = None) -> dict[str, str]:
    """Dotted path (``[]`` for list items) → the keys of the object there, in order.

    Per-example columns and settings list their keys but are not descended into; the keys of
    ``certified_skipped`` are ε values, so it is left out.
    """
    out = {} if out is None else out
    if isinstance(obj, dict):
        if path.endswith("certified_skipped"):
            return out
        keys = " ".join(obj)
        assert out.setdefault(path, keys) == keys, f"{path}: items with different keys"
        if not path.endswith(("per_example", "settings")):
            for k, v in obj.items():
                layout(v, f"{path}.{k}" if path else k, out)
    elif isinstance(obj, list):
        for v in obj:
            layout(v, path + "[]", out)
    return out


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    return str(make_model(tmp_path_factory.mktemp("results") / "m.pt2"))


@pytest.fixture(scope="module")
def outputs(model) -> dict[str, str]:
    common = ["--data", "demo", "--limit", "50", "--json", "-", "-q"]
    runs = {
        "certify": ["certify", model, "--norm", "l2", "--eps", "0.1,0.3", *common],
        "attack": ["attack", model, "--norm", "l2", "--eps", "0.3", "--attacks", "pgd", "--steps", "2,3", *common],
        "analyze": ["analyze", model, "--norm", "l2", "--eps", "0,0.3", "--attacks", "pgd", "--steps", "2",
                    "--no-train-margins", *common],
    }
    out = {}
    for name, args in runs.items():
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 0, res.stderr
        out[name] = res.stdout
    return out


@pytest.mark.parametrize("command", list(LAYOUT))
def test_results_json_keeps_its_layout_and_bytes(outputs, command):
    text = outputs[command]
    data = json.loads(text)
    assert dumps(data) == text  # two-space indent, keys in built order, UTF-8 kept, one final newline
    expected = {path: " ".join(keys.split()) for path, keys in LAYOUT[command].items()}
    assert layout(data) == expected


def test_written_file_equals_stdout_and_reads_back(outputs, tmp_path):
    path = tmp_path / "r.json"
    write_results(json.loads(outputs["certify"]), path)
    assert path.read_text(encoding="utf-8") == outputs["certify"]
    assert read_results(str(path)) == json.loads(outputs["certify"])
    wrapped = load_results(str(path))
    assert wrapped["command"] == "certify" and wrapped["certify"] == json.loads(outputs["certify"])
    assert list(wrapped)[:3] == ["lipcert_version", "schema_version", "command"]


@pytest.mark.parametrize("text, match", [
    (None, "results file .* does not exist"),
    ("not json", "is not valid JSON"),
    ("[1, 2]", "expected a lipcert results JSON object with a 'command' key"),
    ('{"command": "certify", "schema_version": 99}', "schema_version 99"),
    ('{"command": "certify", "norm": "l3"}', "norm must be one of l2, linf, got 'l3'"),
    ('{"command": "certify", "results": [{"certified_accuracy": 7.5}]}',
     r"results\[0\].certified_accuracy must be a number from 0 to 1"),
    ('{"command": "attack", "partial": "no"}', "partial must be true or false"),
])
def test_the_reader_refuses_what_lipcert_did_not_write(tmp_path, text, match):
    path = tmp_path / "r.json"
    if text is not None:
        path.write_text(text, encoding="utf-8")
    with pytest.raises(BadInputError, match=match) as err:
        read_results(str(path), param="resume_path")
    assert err.value.param == "resume_path"


def test_load_results_reads_combined_certify_and_attack_only(tmp_path):
    path = tmp_path / "lip.json"
    path.write_text(json.dumps({"command": "lipschitz", "schema_version": JSON_SCHEMA_VERSION}), encoding="utf-8")
    assert read_results(str(path))["command"] == "lipschitz"
    with pytest.raises(BadInputError, match="cannot read results of command 'lipschitz'"):
        load_results(str(path))
    assert check_results({"command": "run", "norm": "linf"}) == {"command": "run", "norm": "linf"}


@pytest.mark.parametrize("command", ["certify", "attack"])
def test_cli_names_the_flag_that_gave_a_bad_results_file(model, tmp_path, command):
    missing = str(tmp_path / "missing.json")
    args = [command, model, "--data", "demo", "--limit", "5", "--norm", "l2", "--eps", "0.1", "--resume", missing]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2
    assert res.stderr == (f"Error: --resume: results file {missing!r} does not exist; "
                          "give a results JSON that lipcert wrote\n")


def test_old_module_paths_are_aliases_of_the_new_homes():
    import certify
    import certify.render as render
    import certify.report as report
    from certify import results
    from certify.reporting import junit, markdown, pdf, strings, tables

    assert render.certify_json is certify_json and render.load_results is results.load_results
    assert render.gate_junit is junit.gate_junit and render.gate_table is tables.gate_table
    assert render.pct is strings.pct and render.gate_markdown is markdown.gate_markdown
    assert report.write_pdf is pdf.write_pdf and report.markdown is markdown.markdown
    assert report.summary_rows is strings.summary_rows and report.UNITS["l2"] == pdf.distance_label("l2")
    assert certify.load_results is results.load_results
