"""YAML suites: validation with line numbers, overrides, determinism (certify.suites, lipcert run)."""

from __future__ import annotations

import json
import textwrap

import pytest
from click.testing import CliRunner

from certify.cli import main
from certify.errors import BadInputError
from certify.suites import json_paths, load_suite

from .helpers_analysis import make_model


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("m") / "tiny.pt2")


def write(tmp_path, text: str, name: str = "suite.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text).lstrip())
    return p


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def strip_volatile(obj):
    """Drop the fields documented to vary between runs: timestamps and timings."""
    if isinstance(obj, dict):
        return {k: strip_volatile(v) for k, v in obj.items() if k not in ("created", "seconds")}
    if isinstance(obj, list):
        return [strip_volatile(v) for v in obj]
    return obj


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("text, message", [
    ("model: m.pt2\nnorm: l2\nepz: [0.1]\n", "line 3: unknown key 'epz'; valid keys: analysis, attacks,"),
    ("model: m.pt2\nnorm: l2\ndata:\n  source: demo\n  limt: 10\n",
     "line 5: unknown key 'data.limt'; valid keys: limit, root, source, split"),
    ("model: m.pt2\nnorm: l2\ndata: {source: demo, limit: ten}\n",
     "line 3: key 'data.limit' must be an integer ≥ 1, got a string 'ten'"),
    ("model: m.pt2\nnorm: l2\neps: [0.1, abc]\n",
     "line 3: key 'eps[1]' must be a number or a fraction like 8/255, got a string 'abc'"),
    ("model: m.pt2\nnorm: l2\ngates:\n  min_certified_accuracy:\n    0.1: high\n",
     "line 5: key 'gates.min_certified_accuracy.0.1' must be a number from 0 to 1 (an accuracy, not a percentage), got a string 'high'"),
    ("model: m.pt2\nnorm: l2\ngates:\n  max_lipschitz: 1\n",
     "line 4: unknown key 'gates.max_lipschitz'; valid keys: baseline, forbid_flags, max_certificate_violations,"),
    ("model: m.pt2\nnorm: l2\nseed: true\n", "line 3: key 'seed' must be an integer from 0 to 9223372036854775807, got a boolean True"),
    ("models:\n  - path: a.pt2\n    nam: x\nnorm: l2\n", "line 3: unknown key 'models[0].nam'"),
    ("model: m.pt2\nnorm: [l2\n", "YAML syntax error at line"),
])
def test_bad_suite_names_key_and_line(tmp_path, text, message):
    p = write(tmp_path, text)
    with pytest.raises(BadInputError) as err:
        load_suite(p)
    assert message in str(err.value)
    r = run("run", str(p))
    assert r.exit_code == 2
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("Error: ") and message in r.stderr


@pytest.mark.parametrize("text, message", [
    ("norm: l2\n", "give exactly one of 'model' (one) or 'models' (a list)"),
    ("model: m.pt2\nnorm: l3\n", "'norm' must be l2 or linf"),
    ("", "the suite is empty"),
    ("- a\n- b\n", "the file must be a mapping of keys"),
])
def test_suite_semantic_errors(tmp_path, text, message):
    with pytest.raises(BadInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_suite(write(tmp_path, text))


def test_missing_suite_file_exit_2(tmp_path):
    r = run("run", str(tmp_path / "none.yaml"))
    assert r.exit_code == 2 and "does not exist" in r.stderr


# --------------------------------------------------------------------------- parsing and overrides


def test_suite_defaults_and_overrides(tmp_path):
    p = write(tmp_path, """
        models: [a.pt2, {path: b.pt2, name: bee}]
        data: demo
        norm: linf
        eps: [8/255, 0.1]
        attacks: {names: [LinfPGD], steps: 50}
        output: out/{name}.json
    """)
    s = load_suite(p)
    assert [m.name for m in s.models] == ["a", "bee"] and s.data_source == "demo"
    assert s.eps == (pytest.approx(8 / 255), 0.1) and s.attacks == ("LinfPGD",) and s.steps == (50,)
    assert json_paths(s) == ["out/a.json", "out/bee.json"]
    o = load_suite(p, {"norm": "l2", "eps": (0.5,), "limit": 7, "seed": 3, "json_path": "r.json", "attacks": ()})
    assert (o.norm, o.eps, o.limit, o.seed, o.attacks) == ("l2", (0.5,), 7, 3, ())
    assert json_paths(o) == ["r-a.json", "r-bee.json"]


def test_duplicate_model_names_rejected(tmp_path):
    with pytest.raises(BadInputError, match="model names must differ"):
        load_suite(write(tmp_path, "models: [x/a.pt2, y/a.pt2]\nnorm: l2\n"))


def test_norm_is_parsed_once_into_a_norm(tmp_path):
    from certify.threat import Norm

    assert load_suite(write(tmp_path, "model: m.pt2\nnorm: LINF\n")).norm is Norm.LINF
    with pytest.raises(BadInputError, match="line 2: key 'norm' must be l2 or linf, got a string 'l1'"):
        load_suite(write(tmp_path, "model: m.pt2\nnorm: l1\n"))


def test_norm_errors_name_the_value_and_param(tmp_path):
    """The library names ``norm`` (the CLI turns it into --norm); the suite's key is named as a key."""
    with pytest.raises(BadInputError, match="no norm given in .*suite.yaml; add 'norm: l2'") as err:
        load_suite(write(tmp_path, "model: m.pt2\n"))
    assert err.value.param == "norm" and "--" not in str(err.value)
    with pytest.raises(BadInputError, match="norm must be one of l2, linf") as err:
        load_suite(write(tmp_path, "model: m.pt2\nnorm: l2\n"), {"norm": "l3"})
    assert err.value.param == "norm"
    r = run("run", str(write(tmp_path, "model: m.pt2\n")))
    assert r.exit_code == 2 and "no --norm given in" in r.stderr


def test_old_module_paths_are_aliases_of_the_new_homes():
    import certify
    import certify.gate as old_gate
    import certify.suite as old_suite
    import certify.suites as new
    from certify.suites import gates, schema, suite

    for name in ("load_suite", "run_suite", "Suite", "SuiteRun", "json_paths", "with_overrides", "suite_from_dict"):
        assert getattr(old_suite, name) is getattr(suite, name)
    for name in ("SUITE_KEYS", "GATE_KEYS", "MODEL_KEYS", "validate", "load_yaml_nodes", "Field", "KINDS"):
        assert getattr(old_suite, name) is getattr(schema, name)
    for name in ("evaluate_gates", "gate_config", "load_gate_config", "GateConfig", "GateReport", "GateResult"):
        assert getattr(old_gate, name) is getattr(gates, name)
    assert certify.load_suite is new.load_suite and certify.evaluate_gates is new.evaluate_gates


# --------------------------------------------------------------------------- running


def _suite(tmp_path, model, extra: str = "") -> str:
    text = textwrap.dedent(f"""
        model: {{path: {model}, name: tiny}}
        data: {{source: demo, limit: 120}}
        norm: l2
        eps: [0.1, 0.3]
        attacks: false
        seed: 5
    """)
    return str(write(tmp_path, text + extra))


def test_run_twice_gives_identical_json_apart_from_timestamps(tmp_path, model):
    suite = _suite(tmp_path, model)
    outs = []
    for i in range(2):
        out = tmp_path / f"r{i}.json"
        r = run("run", suite, "--json", str(out), "-q")
        assert r.exit_code == 0, r.stderr
        outs.append(json.loads(out.read_text()))
    assert outs[0]["command"] == "run" and outs[0]["name"] == "tiny" and outs[0]["seed"] == 5
    assert outs[0]["created"] and strip_volatile(outs[0]) == strip_volatile(outs[1])


def test_cli_options_override_the_file(tmp_path, model):
    out = tmp_path / "r.json"
    r = run("run", _suite(tmp_path, model), "--limit", "60", "--eps", "0.2", "--seed", "9", "--json", str(out), "-q")
    assert r.exit_code == 0, r.stderr
    res = json.loads(out.read_text())
    assert res["data"]["n"] == 60 and res["seed"] == 9
    assert [row["eps"] for row in res["certify"]["results"]] == [0.2]


def test_run_writes_pdf_and_markdown_when_asked(tmp_path, model):
    suite = _suite(tmp_path, model, f"report: {{pdf: {tmp_path / 'r.pdf'}, md: {tmp_path / 'r.md'}}}\n")
    r = run("run", suite, "--json", str(tmp_path / "r.json"), "-q")
    assert r.exit_code == 0, r.stderr
    assert (tmp_path / "r.pdf").read_bytes().startswith(b"%PDF")
    assert "| metric | tiny |" in (tmp_path / "r.md").read_text()


def test_run_certify_false_skips_certification(tmp_path, model):
    out = tmp_path / "r.json"
    r = run("run", _suite(tmp_path, model, "certify: false\n"), "--json", str(out), "-q")
    assert r.exit_code == 0, r.stderr
    res = json.loads(out.read_text())
    assert res["certify"] is None and res["analysis"]["median_certified_radius"] is None
    assert "certification skipped (certify: false)" in res["notes"]
