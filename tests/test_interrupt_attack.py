"""Interrupt-safe attack and suite runs: SIGTERM midway writes a valid JSON marked "partial": true,
exits 130, and (for run) evaluates no gate on partial results."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import torch

from .test_interrupt import SlowUnitRows, lipcert


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


def interrupt_when_started(args: list[str], marker: Path) -> tuple[int, str]:
    proc = lipcert(*args, env_extra={"LIPCERT_TEST_MARKER": str(marker)})
    deadline = time.time() + 60
    while not marker.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err


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
    assert len(partial["per_example"]["index"]) == 200


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
