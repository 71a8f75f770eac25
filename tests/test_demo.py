"""``lipcert demo``: the shipped models, certified and attacked on the embedded data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from certify.checkpoints import load_model, save_model
from certify.cli import main
from certify.data import load_dataset
from certify.evaluation.demo import DEMO_MODELS, default_models_dir, run_demo
from certify.zoo.models import FAMILIES, baseline_cnn, l2nnn_mlp, linf_dist_net
from certify.zoo.training import TrainConfig, metadata_for

SHIPPED = default_models_dir()
FAMILY_OF = {"fmnist_l2nnn.pt2": "l2nnn", "fmnist_linf_dist.pt2": "linf_dist", "fmnist_baseline.pt2": "baseline",
             "fmnist_baseline_adv.pt2": "baseline_adv"}
needs_shipped = pytest.mark.skipif(not all((SHIPPED / n).is_file() for _, n in DEMO_MODELS),
                                   reason="shipped models not in examples/models")


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four untrained tiny models with the shipped names and metadata."""
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    builds = {"l2nnn": lambda: l2nnn_mlp(hidden=16, depth=1), "linf_dist": lambda: linf_dist_net(2, 16),
              "baseline": lambda: baseline_cnn((2, 4), 8), "baseline_adv": lambda: baseline_cnn((2, 4), 8)}
    for name, family in FAMILY_OF.items():
        cfg = TrainConfig(family=family, arch=next(iter(FAMILIES[family].builders)))
        save_model(builds[family]().eval(), root / name, metadata_for(cfg, None, "fashion-mnist"),
                   example_input=torch.rand(2, 1, 28, 28))
    return root


def test_demo_cli_prints_comparison_table(tiny_models: Path) -> None:
    result = CliRunner().invoke(main, ["demo", "--models-dir", str(tiny_models), "--limit", "40",
                                       "--attack-steps", "2"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    for label, _ in DEMO_MODELS:
        assert label in out
    for header in ("clean accuracy", "mean gap", "certified ℓ₂ 0.5", "certified ℓ∞ 0.1", "PGD ℓ₂ 0.5", "PGD ℓ∞ 0.1"):
        assert header in out
    assert "l2-multi" in out and "linf-dist" in out and "—" in out  # baselines have no certificate


def test_demo_json_to_stdout(tiny_models: Path) -> None:
    result = CliRunner().invoke(main, ["demo", "--models-dir", str(tiny_models), "--limit", "20",
                                       "--attack-steps", "1", "--json", "-"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["command"] == "demo" and data["n"] == 20
    rows = {r["label"]: r for r in data["rows"]}
    assert rows["CNN"]["certified"]["l2@0.5"] is None
    assert 0 <= rows["multi-L2NNN"]["certified"]["l2@0.5"] <= rows["multi-L2NNN"]["clean_accuracy"]


def test_demo_missing_models_dir_is_a_clear_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["demo", "--models-dir", str(tmp_path), "--attack-steps", "0"])
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: shipped demo models not found in")
    assert "--models-dir" in result.stderr


@needs_shipped
def test_shipped_models_are_small_and_declare_their_claims() -> None:
    for _, name in DEMO_MODELS:
        path = SHIPPED / name
        assert path.stat().st_size <= 5_000_000
        meta = load_model(path).metadata
        assert meta.lipschitz == FAMILIES[FAMILY_OF[name]].claim
        assert meta.input_shape == (1, 28, 28) and meta.bounds == (0.0, 1.0) and meta.num_classes == 10
        assert meta.dataset == "fashion-mnist" and meta.class_names is not None


@needs_shipped
def test_shipped_models_demo_is_sound_and_ordered() -> None:
    """Certified ≤ PGD-robust ≤ clean for every model (an attack inside a radius would raise)."""
    torch.set_num_threads(1)
    report = run_demo(load_dataset("demo", limit=200), attack_steps=5)
    for row in report.rows:
        assert row.violations == 0
        for k, robust in row.robust.items():
            assert robust <= row.clean_accuracy
            cert = row.certified[k]
            assert cert is None or cert <= robust
    rows = {r.label: r for r in report.rows}
    assert rows["multi-L2NNN"].certified["l2@0.1"] > 0.3
    assert rows["ℓ∞-dist Net"].certified["linf@0.1"] > 0.3
    assert rows["CNN"].clean_accuracy > 0.8
