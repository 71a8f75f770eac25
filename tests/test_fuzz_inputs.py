"""Property test: mutated results JSONs, suites and gate configs never cause an internal error.

Hypothesis takes valid files that lipcert wrote (or documents), changes random values to other types,
drops keys and puts in huge values, and feeds them to ``lipcert gate``, ``lipcert report``, the suite
loader and the gate-config loader.  Every outcome must be a result (exit 0 or 1) or one ``Error:`` line
with exit 2: never exit 3, never ``internal error``, never a traceback.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from certify import LipschitzClaim, ModelMetadata, save_model
from certify.cli import main
from certify.errors import BadInputError

from .conftest import Affine

SHAPE = (1, 2, 2)
FUZZ = settings(max_examples=int(__import__("os").environ.get("LIPCERT_FUZZ_EXAMPLES", "40")), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                       HealthCheck.too_slow])

#: Replacement values: other types, huge and non-finite numbers, long strings, containers.
VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-10**30, 10**30), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e308, -1.0, 7.5, 2**63, "inf", "", "x" * 5000, "0.5", "8/255"]), st.text(max_size=12),
    st.lists(st.integers(-3, 3), max_size=3), st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)


def all_paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += all_paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:4]):  # long per-example lists: their first items are enough
            out += all_paths(v, prefix + (i,))
    return out


@st.composite
def mutated(draw: Any, seed: Any) -> Any:
    obj = copy.deepcopy(seed)
    for _ in range(draw(st.integers(1, 3))):
        paths = all_paths(obj)
        if not paths:
            return draw(VALUES)
        path = draw(st.sampled_from(paths))
        parent = obj
        for key in path[:-1]:
            parent = parent[key]
        if draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(VALUES)
    return obj


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("fuzz")
    meta = ModelMetadata(input_shape=SHAPE, lipschitz=LipschitzClaim("l2", "per-logit", 1.0))
    good = save_model(Affine(torch.eye(4)[:3]), d / "good.pt2", meta, example_input=torch.zeros(2, *SHAPE))
    x = np.random.default_rng(0).random((6, *SHAPE), dtype=np.float32)
    np.savez(d / "data.npz", x=x, y=x.reshape(6, -1)[:, :3].argmax(1))
    common = [str(good), "--data", str(d / "data.npz"), "--norm", "l2", "-q"]
    runs = {"certify": ["certify", *common, "--eps", "0.1"],
            "attack": ["attack", *common, "--eps", "0.1", "--attacks", "pgd", "--steps", "3"],
            "analyze": ["analyze", *common, "--eps", "0,0.1", "--attacks", "pgd", "--steps", "3",
                        "--no-train-margins"]}
    out: dict[str, Any] = {"dir": d}
    for name, argv in runs.items():
        res = CliRunner().invoke(main, [*argv, "--json", str(d / f"{name}.json")])
        assert res.exit_code == 0, res.stderr
        out[name] = json.loads((d / f"{name}.json").read_text())
    out["gates"] = yaml.safe_load((Path(__file__).resolve().parents[1] / "examples/ci/suite.yaml").read_text())["gates"]
    out["gates"].pop("baseline")
    out["suite"] = {"model": str(good), "data": {"source": str(d / "data.npz"), "limit": 4}, "norm": "l2",
                    "eps": [0, 0.1], "attacks": {"names": ["pgd"], "steps": [3]}, "seed": 0, "batch_size": 2,
                    "analysis": {"delegate_accuracy": 0.5}, "gates": dict(out["gates"])}
    (d / "gates.yaml").write_text(yaml.safe_dump(out["gates"]))
    return out


def assert_clean_outcome(res: Any, codes: tuple[int, ...] = (0, 1, 2)) -> None:
    assert res.exit_code in codes, (res.exit_code, res.stderr, res.exception)
    assert "internal error" not in res.stderr and "Traceback" not in res.output, res.stderr
    if res.exit_code == 2:
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), res.stderr
        assert len(lines[0]) < 600, "error messages must truncate the values they show"


def _write(d: Path, name: str, obj: Any) -> str:
    path = d / name
    path.write_text(json.dumps(obj))  # NaN and Infinity included: a hostile file may hold them
    return str(path)


@pytest.mark.parametrize("kind", ["certify", "attack", "analyze"])
@FUZZ
@given(data=st.data())
def test_gate_and_report_survive_mutated_results(kind, seeds, data, tmp_path_factory):
    d = tmp_path_factory.mktemp("m")
    path = _write(d, "results.json", data.draw(mutated(seeds[kind])))
    assert_clean_outcome(CliRunner().invoke(main, ["gate", path, "--config", str(seeds["dir"] / "gates.yaml"), "-q"]))
    assert_clean_outcome(CliRunner().invoke(main, ["report", path, "--md", str(d / "r.md"), "-q"]))


@FUZZ
@given(data=st.data())
def test_gate_survives_a_mutated_baseline(seeds, data, tmp_path_factory):
    d = tmp_path_factory.mktemp("b")
    results = _write(d, "results.json", seeds["certify"])
    baseline = _write(d, "baseline.json", data.draw(mutated(seeds["certify"])))
    assert_clean_outcome(CliRunner().invoke(main, ["gate", results, "--config", str(seeds["dir"] / "gates.yaml"),
                                                   "--baseline", baseline, "-q"]))


@FUZZ
@given(data=st.data())
def test_mutated_gate_configs_are_accepted_or_refused(seeds, data, tmp_path_factory):
    from certify.suites import load_gate_config

    d = tmp_path_factory.mktemp("g")
    path = d / "gates.yaml"
    path.write_text(yaml.safe_dump(data.draw(mutated(seeds["gates"]))))
    try:
        load_gate_config(path)
    except BadInputError as err:
        assert len(str(err)) < 600


@FUZZ
@given(data=st.data())
def test_mutated_suites_are_accepted_or_refused(seeds, data, tmp_path_factory):
    from certify.suites import load_suite

    d = tmp_path_factory.mktemp("s")
    path = d / "suite.yaml"
    path.write_text(yaml.safe_dump(data.draw(mutated(seeds["suite"]))))
    try:
        suite = load_suite(path)
    except BadInputError as err:
        assert len(str(err)) < 600
        return
    assert suite.batch_size >= 1 and 0 <= suite.delegate_accuracy <= 1 and 0 <= suite.seed < 2**63
    assert suite.limit is None or suite.limit >= 1
