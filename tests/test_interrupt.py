"""Interrupt-safe certify: SIGTERM midway writes a partial JSON; --resume completes it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]


class SlowUnitRows(nn.Module):
    """Unit-norm rows (1-Lipschitz logits) with a slow forward, to be interrupted.

    The ``0·exp`` term has no Lipschitz rule, so the analysis cannot back the certificate and
    certify runs this slow forward itself (an analysed model runs its exported graph instead).
    """

    def __init__(self) -> None:
        super().__init__()
        w = torch.randn(10, 784, generator=torch.Generator().manual_seed(0))
        self.register_buffer("w", w / w.norm(dim=1, keepdim=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        marker = os.environ.get("LIPCERT_TEST_MARKER")
        if marker and x.shape[0] == 5:  # a real batch (not the 8-example probe)
            Path(marker).touch()
        time.sleep(0.05)
        return x.flatten(1) @ self.w.T + 0.0 * torch.exp(x.flatten(1)[:, :1])


def lipcert(*args: str, env_extra: dict[str, str] | None = None, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env_extra or {})}
    return subprocess.Popen([sys.executable, "-m", "certify", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def interrupt_when_started(args: list[str], marker: Path) -> tuple[int, str]:
    """Run lipcert, wait until the model has seen a real batch (the marker file), then SIGTERM it."""
    proc = lipcert(*args, env_extra={"LIPCERT_TEST_MARKER": str(marker)})
    deadline = time.time() + 60
    while not marker.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err


def test_sigterm_writes_partial_json_and_resume_completes(tmp_path):
    model = tmp_path / "slow.pt"
    torch.save(SlowUnitRows(), model)
    common = ["certify", str(model), "--trust-checkpoint", "--data", "demo", "--limit", "600", "--batch-size", "5",
              "--norm", "l2", "--eps", "0.05", "--certificate", "l2-multi", "--assume-lipschitz", "-q"]
    out = tmp_path / "out.json"
    code, err = interrupt_when_started([*common, "--json", str(out)], tmp_path / "started")
    assert code == 130, err
    assert "Traceback" not in err
    partial = json.loads(out.read_text())
    assert partial["partial"] is True
    done = partial["data"]["n"]
    assert 0 < done < 600

    resumed = tmp_path / "resumed.json"
    proc = lipcert(*common, "--resume", str(out), "--json", str(resumed))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    full = json.loads(resumed.read_text())
    assert full["partial"] is False and full["data"]["n"] == 600
    assert full["per_example"]["index"] == list(range(600))

    fresh = tmp_path / "fresh.json"
    proc = lipcert(*common, "--json", str(fresh))
    proc.communicate(timeout=120)
    ref = json.loads(fresh.read_text())
    assert full["per_example"] == ref["per_example"]
    assert full["results"] == ref["results"]
