"""``lipcert attack`` through click's CliRunner."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from certify.checkpoints import LipschitzClaim
from certify.cli import main
from .helpers_attacks import lipschitz_mlp, loaded


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "lip.pt2"
    loaded(lipschitz_mlp(784, 32, 10, seed=0, scale=1.0), path, (1, 28, 28), LipschitzClaim("l2", "vector"))
    return str(path)


@pytest.fixture(scope="module")
def liar_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "liar.pt2"
    loaded(lipschitz_mlp(784, 32, 10, seed=0, scale=20.0), path, (1, 28, 28), LipschitzClaim("l2", "vector"))
    return str(path)


def run(*args):
    return CliRunner().invoke(main, ["attack", *args])


def test_json_to_stdout(model_path, tmp_path):
    csv = tmp_path / "ex.csv"
    result = run(model_path, "--data", "demo", "--limit", "60", "--norm", "l2", "--eps", "0.1,0.3",
                 "--attacks", "pgd,fgsm", "--steps", "5,20", "--json", "-", "--per-example", str(csv))
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["command"] == "attack" and out["eps"] == [0.1, 0.3] and out["data"]["n"] == 60
    for key in ("clean_accuracy", "results", "worst_case", "certified_skipped", "violations", "flags",
                "iteration_scaling", "partial", "seed", "per_example"):
        assert key in out
    assert {(r["attack"], r["eps"], r["steps"]) for r in out["results"]} >= {("pgd", 0.1, 5), ("pgd", 0.3, 20),
                                                                               ("fgsm", 0.1, None)}
    assert [r["steps"] for r in out["iteration_scaling"] if r["attack"] == "pgd" and r["eps"] == 0.1] == [5, 20]
    assert set(out["per_example"]) == {"index", "label", "prediction", "gap", "margin", "radius",
                                       "min_adv_distance", "min_adv_attack", "radius_method", "robust", "status"}
    lines = csv.read_text().splitlines()
    assert lines[0] == "index,label,prediction,gap,margin,radius,radius_method,min_adv_distance,min_adv_attack"
    methods = [line.split(",")[6] or None for line in lines[1:]]
    assert methods == out["per_example"]["radius_method"] and len(methods) == 60
    assert "Iteration scaling" in result.stderr  # tables go to stderr when stdout carries JSON


def test_table_on_stdout(model_path):
    result = run(model_path, "--data", "demo", "--limit", "30", "--norm", "linf", "--eps", "0.01",
                 "--attacks", "pgd", "--steps", "5")
    assert result.exit_code == 0, result.stderr
    assert "worst case" in result.stdout and "pgd" in result.stdout


def test_unknown_attack_is_a_usage_error(model_path):
    result = run(model_path, "--data", "demo", "--limit", "10", "--norm", "l2", "--eps", "0.1", "--attacks", "zap")
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: unknown attack 'zap'; valid attacks are") and "Traceback" not in result.stderr


def test_bad_steps(model_path):
    result = run(model_path, "--data", "demo", "--norm", "l2", "--eps", "0.1", "--steps", "10,x")
    assert result.exit_code == 2 and "--steps" in result.stderr


def test_violated_certificate_exits_3_and_writes_json(liar_path, tmp_path):
    out = tmp_path / "a.json"
    result = run(liar_path, "--data", "demo", "--limit", "60", "--norm", "l2", "--eps", "0.01", "--attacks", "pgd",
                 "--check-certificates", "20", "--json", str(out), "-q")
    assert result.exit_code == 2 and "could not be verified" in result.stderr  # the analyser refuses the lie
    result = run(liar_path, "--data", "demo", "--limit", "60", "--norm", "l2", "--eps", "0.01", "--attacks", "pgd",
                 "--check-certificates", "20", "--assume-lipschitz", "--json", str(out), "-q")
    assert result.exit_code == 3, result.output
    assert result.stderr.startswith("Error: certificate violated at point")
    assert json.loads(out.read_text())["violations"]


def test_no_certify_first(model_path):
    result = run(model_path, "--data", "demo", "--limit", "30", "--norm", "l2", "--eps", "0.1", "--attacks", "pgd",
                 "--no-certify-first", "--json", "-", "-q")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["certified_skipped"] == {"0.1": 0}
