"""`lipcert verify` and ONNX models through the CLI (CliRunner)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from certify.cli import main
from tests.helpers_vnnlib import mlp_onnx, random_weights, robustness_vnnlib

IDENTITY = [(np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]), np.array([0.0, 0.0, 0.5]))]  # Y = (X_0, X_1, 0.5)


@pytest.fixture()
def bench(tmp_path: Path) -> Path:
    mlp_onnx(tmp_path / "id.onnx", IDENTITY)
    (tmp_path / "robust.vnnlib").write_text(robustness_vnnlib(np.array([0.9, 0.0]), np.array([1.0, 0.1]), 3, 0))
    (tmp_path / "broken.vnnlib").write_text(robustness_vnnlib(np.array([0.9, 0.0]), np.array([1.0, 0.95]), 3, 0))
    (tmp_path / "instances.csv").write_text("id.onnx,robust.vnnlib,30\nid.onnx,broken.vnnlib,30\n")
    return tmp_path


def test_verify_unsat_prints_the_vnncomp_answer(bench: Path) -> None:
    result = CliRunner().invoke(main, ["verify", str(bench / "id.onnx"), str(bench / "robust.vnnlib"),
                                       "--results", str(bench / "out.txt")])
    assert result.exit_code == 0, result.output
    assert result.stdout == "unsat\n"
    assert (bench / "out.txt").read_text() == "unsat\n"
    assert result.stderr.startswith("unsat in ") and "(lipschitz-linf)" in result.stderr


def test_verify_sat_prints_a_counterexample_that_rechecks(bench: Path) -> None:
    result = CliRunner().invoke(main, ["verify", str(bench / "id.onnx"), str(bench / "broken.vnnlib"),
                                       "--json", "-", "-q"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["command"] == "verify" and data["result"]["result"] == "sat"
    ce = data["result"]["counterexample"]
    assert ce["checked_by"] == ["torch", "onnxruntime"]
    x, y = ce["x"], ce["y"]
    assert 0.9 <= x[0] <= 1.0 and 0.0 <= x[1] <= 0.95 and y[1] >= y[0]


def test_verify_instances_summary_and_results_csv(bench: Path) -> None:
    result = CliRunner().invoke(main, ["verify", "--instances", str(bench / "instances.csv"),
                                       "--results", str(bench / "out.csv")])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("2 instances: 1 sat, 1 unsat, 0 unknown, 0 timeout in ")
    rows = (bench / "out.csv").read_text().splitlines()
    assert rows[0] == "onnx,vnnlib,result,seconds,method,reason"
    assert rows[1].startswith("id.onnx,robust.vnnlib,unsat,") and rows[2].startswith("id.onnx,broken.vnnlib,sat,")


def test_instances_row_errors_do_not_stop_the_run(bench: Path) -> None:
    (bench / "bad.vnnlib").write_text("(declare-const X_0 Real)\n(assert (=> a b))\n")
    (bench / "instances.csv").write_text("id.onnx,bad.vnnlib,5\nid.onnx,robust.vnnlib,30\nmissing.onnx,robust.vnnlib,5\n")
    result = CliRunner().invoke(main, ["verify", "--instances", str(bench / "instances.csv"), "--json",
                                       str(bench / "o.json"), "-q"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("3 instances: 0 sat, 1 unsat, 0 unknown, 0 timeout, 2 error in ")
    rows = json.loads((bench / "o.json").read_text())["instances"]
    assert "'(=> …)'" in rows[0]["reason"] and "does not exist" in rows[2]["reason"]


@pytest.mark.parametrize("args,message", [
    (["verify"], "give MODEL and PROPERTY"),
    (["verify", "a.onnx", "p.vnnlib", "--instances", "i.csv"], "not both"),
    (["verify", "a.onnx", "p.vnnlib", "--timeout", "0"], "--timeout"),
])
def test_verify_usage_errors(args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and message in result.stderr


def test_verify_refusals_name_the_flag_or_construct(bench: Path) -> None:
    (bench / "bad.vnnlib").write_text("(declare-const X_0 Real)\n(assert (=> a b))\n")
    result = CliRunner().invoke(main, ["verify", str(bench / "id.onnx"), str(bench / "bad.vnnlib")])
    assert result.exit_code == 2 and result.stderr.startswith("Error: ") and "'(=> …)'" in result.stderr
    wide = robustness_vnnlib(np.zeros(3), np.ones(3), 3, 0)
    (bench / "wide.vnnlib").write_text(wide)
    result = CliRunner().invoke(main, ["verify", str(bench / "id.onnx"), str(bench / "wide.vnnlib")])
    assert result.exit_code == 2 and "declares 3 inputs" in result.stderr


def test_certify_an_onnx_model_with_input_shape(tmp_path: Path) -> None:
    """A flat (1, 784) ONNX net certified on the 1×28×28 demo images, mapped by --input-shape or by count."""
    mlp_onnx(tmp_path / "flat.onnx", random_weights([784, 16, 10], 0))
    for extra in ([], ["--input-shape", "1,28,28"]):
        result = CliRunner().invoke(main, ["certify", str(tmp_path / "flat.onnx"), "--data", "demo", "--norm", "l2",
                                           "--eps", "0.01", "--limit", "16", "--json", "-", "-q", *extra])
        assert result.exit_code == 0, result.output
        data = json.loads(result.stdout)
        assert data["certificate"] == "pairwise" and data["lipschitz_verified"] is True
    result = CliRunner().invoke(main, ["certify", str(tmp_path / "flat.onnx"), "--data", "demo", "--norm", "l2",
                                       "--eps", "0.01", "--input-shape", "3,28,28"])
    assert result.exit_code == 2 and "Error: --input-shape (3, 28, 28) has 2352 elements" in result.stderr


def test_onnx_errors_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Erf", ["x"], ["y"], name="e1")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])])
    (tmp_path / "erf.onnx").write_bytes(helper.make_model(graph).SerializeToString())
    args = ["certify", str(tmp_path / "erf.onnx"), "--data", "demo", "--norm", "l2", "--eps", "0.1"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "unsupported op 'Erf' at node 'e1'" in result.stderr
    monkeypatch.setitem(sys.modules, "onnx", None)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "pip install onnx" in result.stderr and len(result.stderr.splitlines()) == 1


def test_an_onnx_model_ending_in_softmax_is_flagged(tmp_path: Path) -> None:
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((784, 10)).astype(np.float32) * 0.05, "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["z"]), helper.make_node("Softmax", ["z"], ["y"])],
                              "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 784])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], [w])
    (tmp_path / "soft.onnx").write_bytes(helper.make_model(graph).SerializeToString())
    result = CliRunner().invoke(main, ["attack", str(tmp_path / "soft.onnx"), "--data", "demo", "--norm", "linf",
                                       "--eps", "0.01", "--limit", "8", "-q", "--json", "-"])
    assert result.exit_code == 0, result.output
    assert "model-ends-in-softmax" in [f["id"] for f in json.loads(result.stdout)["flags"]]
