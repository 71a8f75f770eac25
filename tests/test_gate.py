"""Gates on robustness regressions (certify.suites.gates, lipcert run / lipcert gate)."""

from __future__ import annotations

import json
import textwrap
import xml.etree.ElementTree as ET

import pytest
from click.testing import CliRunner

from certify import load_dataset, load_model
from certify import certify as run_certify
from certify.cli import main
from certify.suites import GateConfig, evaluate_gates, gate_config
from certify.reporting.junit import gate_junit
from certify.reporting.markdown import gate_markdown
from certify.results import certify_json, dumps

from .helpers_analysis import combined_from, fake_attack_json, fake_lipschitz_json, make_model

GATES = """
gates:
  min_clean_accuracy: 0.93
  min_certified_accuracy: {0.1: 0.72}
  forbid_flags: [randomized-outputs, outputs-look-like-probabilities]
"""


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("gm")
    return make_model(d / "orig.pt2"), make_model(d / "degraded.pt2", noise=1.0)


def suite(tmp_path, model, name: str, extra: str = GATES) -> str:
    p = tmp_path / f"{name}.yaml"
    p.write_text(textwrap.dedent(f"""
        model: {{path: {model}, name: {name}}}
        data: {{source: demo, limit: 200}}
        norm: l2
        eps: [0.1, 0.3]
        attacks: false
    """) + textwrap.dedent(extra))
    return str(p)


def run(*args: str):
    return CliRunner().invoke(main, list(args))


@pytest.fixture(scope="module")
def runs(models, tmp_path_factory):
    """Run the same gated suite on the original and the degraded model."""
    d = tmp_path_factory.mktemp("runs")
    out = {}
    for name, model in zip(("orig", "degraded"), models):
        args = ["run", suite(d, model, name), "--json", str(d / f"{name}.json"), "--junit", str(d / f"{name}.xml"),
                "--summary-md", str(d / f"{name}.md")]
        out[name] = (run(*args), d)
    return out


def test_original_passes_the_gate(runs):
    r, d = runs["orig"]
    assert r.exit_code == 0, r.stderr
    assert "Gates: PASSED" in r.stdout and r.stderr == ""
    assert "✅ passed" in (d / "orig.md").read_text()


def test_degraded_copy_fails_with_exit_1_naming_the_gates(runs):
    r, d = runs["degraded"]
    assert r.exit_code == 1
    assert "Gates: FAILED" in r.stdout  # the table is rendered before failing
    line = r.stderr.strip()
    assert r.stderr.count("\n") == 1 and line.startswith("Error: 2 gate(s) failed:")
    assert "degraded: clean accuracy" in line and "degraded: certified accuracy @ ε=0.1" in line
    assert "forbidden flags" not in line


def test_junit_xml_parses_with_failures(runs):
    _, d = runs["degraded"]
    root = ET.parse(d / "degraded.xml").getroot()
    assert root.tag == "testsuites" and root.get("failures") == "2"
    (ts,) = root.findall("testsuite")
    cases = ts.findall("testcase")
    assert ts.get("name") == "degraded" and int(ts.get("tests")) == len(cases) == 5  # 4 configured gates + complete results
    failed = [c.get("name") for c in cases if c.find("failure") is not None]
    assert failed == ["clean accuracy", "certified accuracy @ ε=0.1"]
    _, d0 = runs["orig"]
    assert ET.parse(d0 / "orig.xml").getroot().find("testsuite/testcase/failure") is None


def test_markdown_summary_renders_a_table(runs):
    _, d = runs["degraded"]
    md = (d / "degraded.md").read_text()
    assert md.startswith("## lipcert gates: ❌ failed")
    rows = [line for line in md.splitlines() if line.startswith("| degraded |")]
    assert len(rows) == 5 and all(line.count("|") == 8 for line in rows)


def test_gate_command_with_baseline(runs, tmp_path):
    _, d = runs["orig"]
    orig, degraded = d / "orig.json", runs["degraded"][1] / "degraded.json"
    cfg = tmp_path / "gates.yaml"
    cfg.write_text("baseline:\n  max_drop: 0.01\n  noise_tolerance: 0.01\n")
    assert run("gate", str(orig), "--config", str(cfg), "--baseline", str(orig)).exit_code == 0
    r = run("gate", str(degraded), "--config", str(cfg), "--baseline", str(orig))
    assert r.exit_code == 1 and "vs baseline: clean accuracy" in r.stderr
    assert "vs baseline: certified accuracy @ ε=0.3" in r.stderr
    cfg.write_text("baseline:\n  max_drop: 0.3\n  noise_tolerance: 0.05\n")  # a large tolerance lets it through
    assert run("gate", str(degraded), "--config", str(cfg), "--baseline", str(orig)).exit_code == 0


def test_gate_reads_a_suite_as_config_and_bare_certify_json(runs, tmp_path):
    _, d = runs["orig"]
    res = json.loads((d / "orig.json").read_text())
    bare = tmp_path / "cert.json"
    bare.write_text(dumps(res["certify"]))
    r = run("gate", str(bare), "--config", str(d / "orig.yaml"), "--junit", str(tmp_path / "j.xml"))
    assert r.exit_code == 0, r.stderr
    assert ET.parse(tmp_path / "j.xml").getroot().find("testsuite").get("tests") == "5"


def test_bad_gate_yaml_is_one_line_exit_2(tmp_path, runs):
    cfg = tmp_path / "gates.yaml"
    cfg.write_text("min_clean_accuracy: 0.9\nmin_robust_accuracy:\n  0.1: lots\n")
    r = run("gate", str(runs["orig"][1] / "orig.json"), "--config", str(cfg))
    assert r.exit_code == 2 and r.stderr.count("\n") == 1
    assert "line 3: key 'min_robust_accuracy.0.1' must be a number" in r.stderr


# --------------------------------------------------------------------------- library: gate kinds


@pytest.fixture(scope="module")
def combined(models):
    cert = certify_json(run_certify(load_model(models[0]), load_dataset("demo", limit=100), norm="l2", eps=[0.1, 0.3]))
    return combined_from(cert, fake_attack_json(cert), fake_lipschitz_json(1.5), name="m")


def test_missing_numbers_fail_the_gate(combined):
    cfg = gate_config({"min_robust_accuracy": {0.7: 0.1}, "max_lipschitz_bound": 2.0})
    rows = {r.gate: r for r in evaluate_gates({**combined, "attack": None, "lipschitz": None,
                                               "analysis": None}, cfg).rows}
    assert not rows["robust accuracy @ ε=0.7"].passed and rows["robust accuracy @ ε=0.7"].value is None
    assert not rows["Lipschitz bound"].passed
    assert rows["certificate violations"].passed  # no attack: nothing to violate


def test_robust_lipschitz_violation_and_flag_gates(combined):
    attack = combined["attack"]
    robust = min(r["robust_accuracy"] for r in attack["results"] if r["eps"] == 0.1)
    cfg = GateConfig(min_robust_accuracy=((0.1, robust),), max_lipschitz_bound=1.4, forbid_flags=("zero-gradients",))
    rows = {r.gate: r for r in evaluate_gates(combined, cfg).rows}
    assert rows["robust accuracy @ ε=0.1"].passed and rows["robust accuracy @ ε=0.1"].value == robust
    assert not rows["Lipschitz bound"].passed and rows["Lipschitz bound"].value == 1.5
    assert not rows["forbidden flags"].passed and rows["forbidden flags"].detail == "zero-gradients"
    broken = {**combined, "attack": {**attack, "violations": [{"index": 3}]}}
    assert not {r.gate: r for r in evaluate_gates(broken, cfg).rows}["certificate violations"].passed
    every = evaluate_gates(combined, GateConfig(forbid_flags=("all",)))
    assert "zero-gradients" in every.failed[0].detail


def test_junit_and_markdown_from_the_api(combined):
    rep = evaluate_gates(combined, GateConfig(min_clean_accuracy=1.01))
    root = ET.fromstring(gate_junit([rep]).split("\n", 1)[1])
    assert root.find("testsuite/testcase/failure").get("type") == "GateFailed"
    assert "❌ FAIL" in gate_markdown([rep]) and not rep.passed


def test_partial_results_never_pass(combined):
    cfg = GateConfig()
    assert evaluate_gates(combined, cfg).rows[0].passed
    partial = {**combined, "partial": True}
    row = evaluate_gates(partial, cfg).rows[0]
    assert row.gate == "complete results" and not row.passed and "interrupted" in row.detail
    cert_partial = {**combined, "certify": {**combined["certify"], "partial": True}}
    assert not evaluate_gates(cert_partial, cfg).rows[0].passed
