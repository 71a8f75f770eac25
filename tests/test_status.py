"""Certified, broken or open: every point at every ε is exactly one (lipcert attack, analyses, report)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from certify.cli import main

from .helpers_analysis import make_model


@pytest.fixture(scope="module")
def attack_doc(tmp_path_factory) -> dict:
    model = make_model(tmp_path_factory.mktemp("status") / "m.pt2")
    res = CliRunner().invoke(main, ["attack", str(model), "--norm", "l2", "--eps", "0.1,0.5,1.5", "--attacks", "pgd",
                                    "--steps", "5", "--data", "demo", "--limit", "60", "--json", "-", "-q"])
    assert res.exit_code == 0, res.stderr
    return json.loads(res.stdout)


def test_every_point_is_certified_broken_or_open_and_never_both(attack_doc) -> None:
    pe, n = attack_doc["per_example"], attack_doc["data"]["n"]
    status = np.array(pe["status"], dtype=object)  # points × eps
    robust = np.array(pe["robust"], dtype=bool)
    correct = np.array(pe["label"]) == np.array(pe["prediction"])
    radius = np.array([np.nan if r is None else r for r in pe["radius"]], dtype=float)
    for i, row in enumerate(attack_doc["status"]):
        eps = row["eps"]
        certified = correct & (radius > eps)
        broken = ~robust[:, i]
        assert not (certified & broken).any()  # no adversarial example inside a certified radius
        assert list(status[:, i]) == ["certified" if c else "broken" if b else "open"
                                      for c, b in zip(certified, broken)]
        assert row["certified"] + row["broken"] + row["open"] == n
        assert row["certified_share"] + row["broken_share"] + row["open_share"] == pytest.approx(1.0)
        assert row["certified"] == attack_doc["certified_skipped"][f"{eps:g}"]
        (worst,) = [w for w in attack_doc["worst_case"] if w["eps"] == eps]
        assert row["broken"] == round(n * (1 - worst["robust_accuracy"]))
    assert {s for row in status for s in row} <= {"certified", "broken", "open"}
    assert any(r["open"] for r in attack_doc["status"])  # the fixture leaves a gap to show


def test_report_shows_the_open_share(attack_doc, tmp_path) -> None:
    path = tmp_path / "attack.json"
    path.write_text(json.dumps(attack_doc))
    res = CliRunner().invoke(main, ["report", str(path), "--md", "-", "-q"])
    assert res.exit_code == 0, res.stderr
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in res.stdout.splitlines()
            if line.startswith("| open (neither)")}
    for row in attack_doc["status"]:
        assert rows[f"open (neither) @ ℓ2 ε={row['eps']:.4g}"] == f"{100 * row['open_share']:.2f}%"


def test_attack_certify_first_with_crown(tmp_path) -> None:
    """A bound-propagation certificate named by --certificate feeds certify-first: certified points
    are skipped and never broken."""
    import torch
    from torch import nn

    from tests.helpers_lipschitz import npz_data, saved

    torch.manual_seed(0)
    saved(nn.Sequential(nn.Flatten(), nn.Linear(16, 24), nn.ReLU(), nn.Linear(24, 3)), (16,), tmp_path / "m.pt2")
    data = npz_data(tmp_path / "d.npz", (16,), n=30)
    res = CliRunner().invoke(main, ["attack", str(tmp_path / "m.pt2"), "--data", data, "--norm", "linf", "--eps",
                                    "0.005,0.05", "--attacks", "pgd", "--steps", "5", "--certificate", "crown",
                                    "--check-certificates", "5", "--json", "-", "-q"])
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["certificate"] == "crown" and doc["certificates_checked"] > 0 and doc["violations"] == []
    row = doc["status"][0]
    assert row["certified"] > 0 and row["certified"] + row["broken"] + row["open"] == 30
