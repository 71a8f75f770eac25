"""`lipcert certify` through CliRunner: hand-computed numbers, JSON schema, errors."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from certify import LipschitzClaim
from certify.cli import main

from .conftest import Affine

# Logits are W·x with W the first 3 rows of I₄ scaled; x chosen so that gaps are known exactly.
W = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0]])
X = torch.tensor([
    [0.9, 0.1, 0.0, 0.0],   # label 0, gap 0.8 → r = 0.4
    [0.0, 0.5, 0.2, 0.0],   # label 1, gap 0.3 → r = 0.15
    [0.3, 0.0, 0.35, 0.0],  # label 2, gap 0.05 → r = 0.025
    [0.6, 0.0, 0.0, 0.0],   # label 1 but predicted 0 → misclassified
]).view(4, 1, 2, 2)
Y = torch.tensor([0, 1, 2, 1])
CLAIM = LipschitzClaim("l2", "per-logit", 1.0)


@pytest.fixture
def setup(save_tiny, tiny_data):
    model = save_tiny(Affine(W), (1, 2, 2), CLAIM)
    data = tiny_data(X, Y)
    return str(model), str(data)


def run(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_hand_computed_certified_accuracy(setup):
    model, data = setup
    res = run("certify", model, "--data", data, "--norm", "l2", "--eps", "0.1,0.2", "--eps", "0.01", "--json", "-",
              "--certificate-budget", "0")  # the Lipschitz certificate alone (CROWN certifies more)
    assert res.exit_code == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["clean_accuracy"] == 0.75
    assert out["certificate"] == "l2-multi"
    got = {r["eps"]: r["certified_count"] for r in out["results"]}
    assert got == {0.1: 2, 0.2: 1, 0.01: 3}
    radii = out["per_example"]["radius"]
    for r, expected in zip(radii[:3], (0.4, 0.15, 0.025)):
        assert expected - 1e-4 < r < expected
    for key in ("lipcert_version", "command", "model", "data", "norm", "lipschitz_constant",
                "lipschitz_verified", "mean_gap", "median_radius", "partial"):
        assert key in out
    assert out["model"]["format"] == "torch.export" and len(out["model"]["sha256"]) == 64
    assert out["data"]["n"] == 4 and out["partial"] is False


def test_l2_single_and_lipschitz_constant(setup, save_tiny, tiny_data):
    model = save_tiny(Affine(W), (1, 2, 2), LipschitzClaim("l2", "vector", 1.0), name="v.pt2")
    _, data = setup
    res = run("certify", str(model), "--data", data, "--norm", "l2", "--eps", "0.5", "--json", "-",
              "--lipschitz-constant", "2", "--certificate-budget", "0")
    out = json.loads(res.stdout)
    assert out["certificate"] == "l2-single"
    r0 = out["per_example"]["radius"][0]
    assert r0 == pytest.approx(0.8 / (math.sqrt(2) * 2), abs=1e-4)


def test_table_and_csv(setup, tmp_path):
    model, data = setup
    csv_path = tmp_path / "ex.csv"
    res = run("certify", model, "--data", data, "--norm", "l2", "--eps", "0.1", "--per-example", str(csv_path))
    assert res.exit_code == 0
    assert "certified @ ε=0.1" in res.stdout and "50.00%" in res.stdout
    lines = csv_path.read_text().splitlines()
    assert lines[0] == "index,label,prediction,gap,margin,radius,radius_method"
    assert lines[4].startswith("3,1,0,")


def test_json_file_written_atomically(setup, tmp_path):
    model, data = setup
    path = tmp_path / "out.json"
    res = run("certify", model, "--data", data, "--norm", "l2", "--eps", "0.1", "--json", str(path), "-q")
    assert res.exit_code == 0 and res.stdout == ""
    assert json.loads(path.read_text())["command"] == "certify"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


def test_linf_conversion_of_l2_certificate(setup):
    model, data = setup
    res = run("certify", model, "--data", data, "--norm", "linf", "--eps", "0.1", "--json", "-", "-q",
              "--certificate-budget", "0")
    out = json.loads(res.stdout)
    # an L2 radius r gives an ℓ∞ radius r/√d with d = 4
    assert out["per_example"]["radius"][0] == pytest.approx(0.4 / 2, abs=1e-4)


@pytest.mark.parametrize(
    "args, match",
    [
        (["--eps", "-1"], "--eps must be positive"),
        (["--eps", "0"], "--eps must be positive"),
        (["--eps", "0.1,0.1"], "given twice"),
        (["--eps", "abc"], "--eps expects numbers"),
        (["--eps", "0.1", "--device", "cuda"], "CUDA"),
        (["--eps", "0.1", "--limit", "0"], "--limit"),
        (["--eps", "0.1", "--batch-size", "0"], "batch-size"),
        (["--eps", "0.1", "--json", "/nonexistent-dir/x.json"], "does not exist"),
    ],
)
def test_bad_options_one_line_exit_2(setup, args, match):
    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    model, data = setup
    res = CliRunner().invoke(main, ["certify", model, "--data", data, "--norm", "l2", *args])
    assert res.exit_code == 2, res.output
    assert match in res.stderr
    assert "Traceback" not in res.output


def test_missing_model_and_pickle_payload(tmp_path, setup):
    _, data = setup
    res = CliRunner().invoke(main, ["certify", str(tmp_path / "missing.pt"), "--data", data, "--norm", "l2",
                                    "--eps", "1"])
    assert res.exit_code == 2 and res.stderr.startswith("Error: ") and res.stderr.count("\n") == 1

    from .test_checkpoint import Payload

    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pt"
    torch.save(Payload(str(marker)), evil)
    res = CliRunner().invoke(main, ["certify", str(evil), "--data", data, "--norm", "l2", "--eps", "1"])
    assert res.exit_code == 2
    assert "--trust-checkpoint" in res.stderr
    assert not marker.exists()


def test_auto_without_claim_refuses_or_verifies(save_tiny, tiny_data):
    """No declared property: auto must not silently assume one."""
    model = save_tiny(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3)), (1, 2, 2), None)
    data = tiny_data(X, Y)
    res = CliRunner().invoke(main, ["certify", str(model), "--data", str(data), "--norm", "l2", "--eps", "0.1",
                                    "--json", "-", "-q"])
    if res.exit_code == 0:
        assert json.loads(res.stdout)["lipschitz_verified"] is True
    else:
        assert res.exit_code == 2 and res.stderr.startswith("Error: ")


def test_labels_out_of_range(save_tiny, tiny_data):
    model = save_tiny(Affine(W), (1, 2, 2), CLAIM)
    data = tiny_data(X, torch.tensor([0, 1, 2, 7]))
    res = CliRunner().invoke(main, ["certify", str(model), "--data", str(data), "--norm", "l2", "--eps", "0.1"])
    assert res.exit_code == 2 and "labels go up to 7" in res.stderr


def test_python_dash_m_certify():
    out = subprocess.run([sys.executable, "-m", "certify", "--help"], capture_output=True, text=True, check=True)
    assert "certify" in out.stdout


def test_out_of_memory_batches_are_retried_smaller(setup, monkeypatch):
    """A forward pass that 'runs out of memory' above 2 examples still certifies everything, identically."""
    from certify import certify, load_dataset, load_model
    from certify.certificates import clean_pass, plan_certificate
    from certify.lipschitz.forward import CertifiedForward

    model_path, data_path = setup
    loaded = load_model(model_path)
    data = load_dataset(data_path)
    ref = certify(loaded, data, norm="l2", eps=[0.1], batch_size=4, certificate_budget=None)
    plan = plan_certificate(loaded, norm="l2", input_dim=4)
    seen: list[int] = []
    real_call = CertifiedForward.__call__

    def picky(self, x):  # type: ignore[no-untyped-def]
        seen.append(x.shape[0])
        if x.shape[0] > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 1 GiB")
        return real_call(self, x)

    monkeypatch.setattr(CertifiedForward, "__call__", picky)
    done = clean_pass(loaded.module, data, torch.device("cpu"), plan=plan, batch_size=4)
    assert not done.partial and done.examples.index.tolist() == [0, 1, 2, 3]
    assert seen == [4, 2, 2]
    torch.testing.assert_close(done.examples.radius, ref.examples.radius)


def test_outputs_get_normal_file_permissions(setup, tmp_path):
    import os
    import stat

    model, data = setup
    path = tmp_path / "out.json"
    run("certify", model, "--data", data, "--norm", "l2", "--eps", "0.1", "--json", str(path), "-q")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
