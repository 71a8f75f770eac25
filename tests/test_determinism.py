"""Determinism on CPU: the same inputs and seed give identical JSON, apart from timestamps and timings
("created", "seconds").  See docs/determinism.md for what may differ on GPU."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from certify import LipschitzClaim, ModelMetadata, save_model
from certify.cli import main

from .helpers_attacks import blob_data, lipschitz_mlp

VOLATILE = {"created", "seconds"}
SHAPE = (1, 4, 4)


def stable(value: Any) -> Any:
    """The JSON without its volatile keys, at any depth."""
    if isinstance(value, dict):
        return {k: stable(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [stable(v) for v in value]
    return value


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("det")
    meta = ModelMetadata(input_shape=SHAPE, lipschitz=LipschitzClaim("l2", "vector", 3.0))
    model = save_model(lipschitz_mlp(16, 24, 3, seed=4, scale=3.0), d / "m.pt2", meta,
                       example_input=torch.zeros(2, *SHAPE))
    data = blob_data(40, SHAPE, 3, seed=5)
    np.savez(d / "data.npz", x=data.x.numpy(), y=data.y.numpy())
    return {"model": str(model), "data": str(d / "data.npz")}


COMMANDS = {
    "certify": ["certify", "{model}", "--data", "{data}", "--norm", "l2", "--eps", "0.05,0.2"],
    "attack-pgd": ["attack", "{model}", "--data", "{data}", "--norm", "l2", "--eps", "0.05,0.2",
                   "--attacks", "pgd", "--steps", "10,20", "--restarts", "2", "--check-certificates", "5"],
    "attack-foolbox": ["attack", "{model}", "--data", "{data}", "--norm", "linf", "--eps", "0.02",
                       "--attacks", "fb-pgd,fmn", "--steps", "10", "--no-certify-first"],
    "lipschitz": ["lipschitz", "{model}", "--data", "{data}", "--limit", "20"],
}


def run_once(argv: list[str], files: dict[str, str], out: Path, seed: int) -> dict[str, Any]:
    args = [a.format(**files) for a in argv] + ["--seed", str(seed), "--json", str(out), "-q"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, (res.stdout, res.stderr)
    return json.loads(out.read_text())


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_same_inputs_and_seed_give_identical_json(name, files, tmp_path):
    first = run_once(COMMANDS[name], files, tmp_path / "a.json", seed=7)
    second = run_once(COMMANDS[name], files, tmp_path / "b.json", seed=7)
    assert "created" in first  # the volatile keys exist and are the only ones dropped
    assert stable(first) == stable(second)


def test_seed_is_recorded(files, tmp_path):
    for seed in (1, 2):
        assert run_once(COMMANDS["attack-pgd"], files, tmp_path / "a.json", seed=seed)["seed"] == seed
