"""Interrupt-safe attack and suite runs: SIGTERM midway writes a valid JSON marked "partial": true,
exits 130, and (for run) evaluates no gate on partial results."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import torch

from .test_interrupt import SlowUnitRows, interrupt_when_started, lipcert


class SlowAttackedRows(SlowUnitRows):
    """Touches the marker only once an attack runs (a gradient-carrying batch of 5), not in the clean pass.

    An interrupt during the clean pass is not covered: the run then stops with exit 130 and no JSON.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        marker = os.environ.get("LIPCERT_TEST_MARKER")
        if marker and x.shape[0] == 5 and x.requires_grad:
            Path(marker).touch()
        time.sleep(0.05)
        return x.flatten(1) @ self.w.T


def test_sigterm_during_attack_writes_partial_json(tmp_path):
    model = tmp_path / "slow.pt"
    torch.save(SlowAttackedRows(), model)
    out = tmp_path / "attack.json"
    code, err = interrupt_when_started(
        ["attack", str(model), "--trust-checkpoint", "--data", "demo", "--limit", "200", "--batch-size", "5",
         "--norm", "l2", "--eps", "0.05", "--attacks", "pgd", "--steps", "200", "--no-certify-first",
         "--json", str(out), "-q"], tmp_path / "started")
    assert code == 130, err
    assert "Traceback" not in err and "interrupted" in err
    partial = json.loads(out.read_text())
    assert partial["command"] == "attack" and partial["partial"] is True
    # Only completed chunks are kept (ATTACK_CHUNK points each): 200 points are one chunk, cut short.
    assert partial["data"]["n"] == len(partial["per_example"]["index"]) == 0
    assert partial["results"] == [] and partial["worst_case"] == [{"eps": 0.05, "robust_accuracy": 0.0}]


def test_sigterm_during_run_writes_partial_json_and_skips_gates(tmp_path):
    model = tmp_path / "slow.pt"
    torch.save(SlowUnitRows(), model)
    out, junit = tmp_path / "run.json", tmp_path / "gates.xml"
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"model: {{path: {model}, trust_checkpoint: true}}\ndata: {{source: demo, limit: 400}}\n"
                     "norm: l2\neps: [0.05]\ncertify: {certificate: l2-multi, assume_lipschitz: true}\n"
                     "attacks: {names: [pgd], steps: [100]}\nbatch_size: 5\nlipschitz: false\n"
                     "analysis: {train_margins: false}\ngates: {min_clean_accuracy: 0.0}\n")
    code, err = interrupt_when_started(["run", str(suite), "--json", str(out), "--junit", str(junit), "-q"],
                                       tmp_path / "started")
    assert code == 130, err
    assert "Traceback" not in err and "gates not evaluated" in err
    partial = json.loads(out.read_text())
    assert partial["command"] == "run" and partial["partial"] is True
    assert not junit.exists()


class SelfInterrupting(SlowUnitRows):
    """Unit rows that send their own process SIGTERM at the N-th gradient-carrying forward
    (``LIPCERT_TEST_KILL_AFTER``): the interrupt lands at the same point of the run every time."""

    calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kill_after = int(os.environ.get("LIPCERT_TEST_KILL_AFTER", "0"))
        if x.requires_grad and kill_after:
            SelfInterrupting.calls += 1
            if SelfInterrupting.calls == kill_after:
                os.kill(os.getpid(), signal.SIGTERM)
        return x.flatten(1) @ self.w.T


def without_volatile(out: dict) -> dict:
    drop = {"created", "seconds", "argv"}
    return {k: ([{c: v for c, v in r.items() if c != "seconds"} for r in val] if k == "results" else val)
            for k, val in out.items() if k not in drop}


def test_sigterm_then_resume_equals_an_uninterrupted_attack(tmp_path):
    """1000 points = chunks of 512 + 488; the kill lands in the second chunk (the first needs ~110
    gradient forwards), so the partial JSON keeps 512 points and --resume attacks the other 488."""
    model = tmp_path / "rows.pt"
    torch.save(SelfInterrupting(), model)
    common = ["attack", str(model), "--trust-checkpoint", "--data", "demo", "--limit", "1000", "--batch-size", "256",
              "--norm", "l2", "--eps", "0.02,0.05", "--attacks", "pgd", "--steps", "5,10", "--certificate",
              "l2-multi", "--assume-lipschitz", "-q"]
    partial_path, resumed_path, fresh_path = tmp_path / "partial.json", tmp_path / "resumed.json", tmp_path / "f.json"
    proc = lipcert(*common, "--json", str(partial_path), env_extra={"LIPCERT_TEST_KILL_AFTER": "180"})
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    partial = json.loads(partial_path.read_text())
    assert partial["partial"] is True and partial["data"]["n"] == 512
    assert partial["per_example"]["index"] == list(range(512)) and len(partial["per_example"]["robust"]) == 512

    proc = lipcert(*common, "--resume", str(partial_path), "--json", str(resumed_path))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    proc = lipcert(*common, "--json", str(fresh_path))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    resumed, fresh = json.loads(resumed_path.read_text()), json.loads(fresh_path.read_text())
    assert resumed["partial"] is False and resumed["data"]["n"] == 1000
    assert resumed["per_example"] == fresh["per_example"]
    assert without_volatile(resumed) == without_volatile(fresh)
    assert resumed["seconds"] >= partial["seconds"]
    robust = [sum(r[i] for r in fresh["per_example"]["robust"]) / 1000 for i in range(2)]
    assert [w["robust_accuracy"] for w in fresh["worst_case"]] == robust


def test_sigterm_during_the_attacks_of_run_writes_partial_json(tmp_path):
    """The partial attack section holds fewer points than certify's: the analysis leaves it out."""
    model = tmp_path / "rows.pt"
    torch.save(SelfInterrupting(), model)
    out = tmp_path / "run.json"
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"model: {{path: {model}, trust_checkpoint: true}}\ndata: {{source: demo, limit: 40}}\n"
                     "norm: l2\neps: [0.05]\ncertify: {certificate: l2-multi, assume_lipschitz: true}\n"
                     "attacks: {names: [pgd], steps: [5]}\nlipschitz: false\n"
                     "analysis: {train_margins: false}\ngates: {min_clean_accuracy: 0.0}\n")
    proc = lipcert("run", str(suite), "--json", str(out), "-q", env_extra={"LIPCERT_TEST_KILL_AFTER": "2"})
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    res = json.loads(out.read_text())
    assert res["partial"] is True and res["attack"]["partial"] is True
    assert res["certify"]["data"]["n"] == 40 and res["attack"]["data"]["n"] == 0
