"""PDF and Markdown reports, and the analyze/report commands (certify.reporting, lipcert analyze/report)."""

from __future__ import annotations

import json
import os
import re

import pytest
from click.testing import CliRunner

from certify import load_dataset, load_model
from certify import certify as run_certify
from certify.cli import main
from certify.defaults import FASHION_MNIST_DIR
from certify.reporting.markdown import markdown
from certify.reporting.pdf import write_pdf
from certify.reporting.strings import summary_rows
from certify.results import certify_json, dumps

from .helpers_analysis import combined_from, fake_attack_json, fake_lipschitz_json, make_model


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    return make_model(d / "orig.pt2"), make_model(d / "degraded.pt2", noise=1.0)


@pytest.fixture(scope="module")
def results(models, tmp_path_factory):
    """Two combined results built only from JSON: certify (real) + attack/Lipschitz fixtures."""
    d = tmp_path_factory.mktemp("results")
    out = []
    for name, path in zip(("orig", "degraded"), models):
        cert = certify_json(run_certify(load_model(path), load_dataset("demo", limit=200), norm="l2", eps=[0.1, 0.3]))
        res = combined_from(cert, fake_attack_json(cert), fake_lipschitz_json(), name=name)
        (d / f"{name}.json").write_text(dumps(res))
        (d / f"{name}-certify.json").write_text(dumps(cert))
        out.append(d / f"{name}.json")
    return out


def _md_summary(md: str) -> dict[str, list[str]]:
    table = md.split("## Summary", 1)[1].split("\n## ", 1)[0]
    rows = [r for r in table.strip().splitlines() if r.startswith("| ") and not r.startswith("| metric")]
    return {cells[0]: cells[1:] for cells in ([c.strip() for c in r.strip("|").split("|")] for r in rows)}


def test_pdf_has_pages_and_markdown_numbers_equal_json(results, tmp_path):
    loaded = [json.loads(p.read_text()) for p in results]
    pdf = tmp_path / "r.pdf"
    pages = write_pdf(loaded, str(pdf))
    assert pages >= 10 and pdf.read_bytes().startswith(b"%PDF")
    summary = _md_summary(markdown(loaded))
    for col, res in enumerate(loaded):
        a = res["analysis"]
        assert summary["clean accuracy"][col] == f"{100 * a['clean_accuracy']:.2f}%"
        for row in a["at_eps"]:
            cert = summary[f"certified acc @ ℓ2 ε={row['eps']:.4g}"][col]
            err = summary[f"%err attacks @ ℓ2 ε={row['eps']:.4g}"][col]
            assert float(cert.rstrip("%")) == pytest.approx(100 * row["certified_accuracy"], abs=0.005)
            assert float(err.rstrip("%")) == pytest.approx(100 * row["empirical_error"], abs=0.005)
        assert float(summary["median adversarial distance"][col]) == pytest.approx(a["median_adv_distance"], rel=1e-3)
        assert summary["Lipschitz bound"][col] == "1"
        # the certified accuracy in the JSON's certify section equals the analysis' reading
        for r in res["certify"]["results"]:
            (reading,) = [x for x in a["at_eps"] if x["eps"] == r["eps"]]
            assert reading["certified_accuracy"] == r["certified_accuracy"]


def test_markdown_gap_bins_equal_json(results):
    res = json.loads(results[0].read_text())
    md = markdown([res])
    section = md.split("## Accuracy by confidence-gap bin", 1)[1]
    rows = [r for r in section.splitlines() if re.match(r"\| \d+ \|", r)]
    assert len(rows) == 10
    for row, b in zip(rows, res["analysis"]["gap_bins"]):
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert int(cells[1]) == b["n"]
        assert cells[3] == f"{100 * b['natural_accuracy']:.2f}%"
        assert cells[4] == f"{100 * b['attacked_accuracy']:.2f}%"


def test_summary_rows_models_are_columns(results):
    loaded = [json.loads(p.read_text()) for p in results]
    rows = dict(summary_rows(loaded))
    assert len(rows["clean accuracy"]) == 2
    assert rows["flags"] == [str(len(r["certify"]["flags"]) + len(r["attack"]["flags"])) for r in loaded]


def test_report_cli_side_by_side_with_bare_certify_json(results, tmp_path):
    bare = results[1].with_name("degraded-certify.json")
    pdf, md = tmp_path / "r.pdf", tmp_path / "s.md"
    r = CliRunner().invoke(main, ["report", str(results[0]), str(bare), "--pdf", str(pdf), "--md", str(md)])
    assert r.exit_code == 0, r.output
    assert pdf.stat().st_size > 1000 and "| metric | orig | degraded.pt2 |" in md.read_text()
    assert "pages)" in r.stderr


def test_report_cli_missing_file_is_one_line_exit_2(tmp_path):
    r = CliRunner().invoke(main, ["report", str(tmp_path / "nope.json"), "--md", "-"])
    assert r.exit_code == 2
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("Error: results file")


def test_report_cli_rejects_other_json(tmp_path):
    p = tmp_path / "x.json"
    p.write_text('{"command": "lipschitz"}')
    r = CliRunner().invoke(main, ["report", str(p), "--md", "-"])
    assert r.exit_code == 2 and "cannot read results of command 'lipschitz'" in r.stderr


def test_analyze_cli_writes_combined_json(models, tmp_path):
    out = tmp_path / "a.json"
    r = CliRunner().invoke(main, ["analyze", str(models[0]), "--data", "demo", "--limit", "150", "--norm", "l2",
                                  "--eps", "0,0.1,0.3", "--no-train-margins", "--json", str(out)])
    assert r.exit_code == 0, r.stderr
    res = json.loads(out.read_text())
    assert res["command"] == "analyze" and res["schema_version"] == 1
    assert set(res) >= {"lipcert_version", "created", "seed", "model", "data", "certify", "attack", "lipschitz",
                        "analysis", "partial"}
    a = res["analysis"]
    assert a["eps"] == [0.0, 0.1, 0.3] and a["n"] == 150
    assert a["clean_accuracy"] == res["certify"]["clean_accuracy"]
    assert a["singular_values"][0]["shape"] == [10, 784]
    assert "Error at chosen ε" in r.stdout and "Accuracy in bins of confidence gap" in r.stdout


def test_analyze_cli_train_margins_and_linf_fraction(models, tmp_path):
    if not os.path.isdir(FASHION_MNIST_DIR):
        pytest.skip("Fashion-MNIST is not installed")
    out = tmp_path / "a.json"
    r = CliRunner().invoke(main, ["analyze", str(models[0]), "--data", "fashion-mnist", "--limit", "100",
                                  "--norm", "linf", "--eps", "8/255", "--certificate", "linf-dist", "--assume-lipschitz",
                                  "--json", str(out), "-q"])
    assert r.exit_code == 0, r.stderr
    a = json.loads(out.read_text())["analysis"]
    assert a["eps"] == [pytest.approx(8 / 255)]
    assert a["margins"]["train"] is not None and sum(a["margins"]["train"]) <= 2000


def test_analyze_runs_real_attacks_and_lipschitz(models):
    """analyze = certify + attacks.evaluate + the Lipschitz analyser, and the curves bound each other."""
    from certify.evaluation.pipeline import AnalyzeOptions, analyze

    model, data = load_model(models[0]), load_dataset("demo", limit=100)
    res = analyze(model, data, AnalyzeOptions(norm="l2", steps=(10, 50), attacks=("pgd",)))
    assert sorted({r["steps"] for r in res["attack"]["iteration_scaling"]}) == [10, 50]
    assert res["lipschitz"]["verified"] is True
    curves = {c["name"]: c for c in res["analysis"]["curves"]}
    assert {"worst case", "certified"} <= set(curves)
    assert res["analysis"]["tightness"]["violations"] == 0
    # the certified error is an upper bound of the empirical error at every ε
    emp, cert = curves["worst case"], curves["certified"]
    shared = [e for e in cert["eps"] if e in emp["eps"]]
    assert shared
    for e in shared:
        assert emp["values"][emp["eps"].index(e)] <= cert["values"][cert["eps"].index(e)] + 1e-12


def test_report_on_a_bare_attack_json(results, tmp_path):
    """An attack JSON alone (no certify section) is wrapped and analysed from its per-example arrays."""
    res = json.loads(results[0].read_text())
    bare = tmp_path / "attack.json"
    bare.write_text(dumps(res["attack"]))
    r = CliRunner().invoke(main, ["report", str(bare), "--md", "-", "-q"])
    assert r.exit_code == 0, r.stderr
    summary = _md_summary(r.stdout)
    assert summary["certificate violations"] == ["0"]
    assert summary["median adversarial distance"][0] == f"{res['analysis']['median_adv_distance']:.4g}"
