"""The examples a user is shown must work as shown.

Fast tests: every ``examples/…`` path the READMEs mention exists, and the shipped CI suite and its
gates load.  Slow tests (``-m slow``) run ``lipcert run examples/ci/suite.yaml`` as a user would,
from a fresh directory, and require exit 0 (every gate passes).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
READMES = [REPO / "README.md", REPO / "examples" / "README.md", REPO / "examples" / "ci" / "README.md"]
SUITE = REPO / "examples" / "ci" / "suite.yaml"


def shown_example_paths() -> list[str]:
    found = set()
    for readme in READMES:
        for path in re.findall(r"(examples/[\w./\-*]+)(?![$\{\w])", readme.read_text(encoding="utf-8")):
            found.add(path.rstrip(".,)`"))
    return sorted(found)


@pytest.mark.parametrize("path", shown_example_paths())
def test_every_example_the_readmes_show_exists(path):
    matches = list(REPO.glob(path)) if "*" in path else [REPO / path]
    assert matches and all(m.exists() for m in matches), f"{path} is shown in a README but missing"


def test_shipped_suite_and_its_gates_load():
    import certify
    from certify.suites import load_gate_config

    suite = certify.load_suite(SUITE)
    assert [Path(m.path).name for m in suite.models] == ["fmnist_l2nnn.pt2"]
    config = load_gate_config(SUITE)
    # the multi-L2NNN promises 1-Lipschitz logits, not a 1-Lipschitz logit vector
    assert config.max_per_logit_lipschitz is not None and config.max_lipschitz_bound is None


def lipcert_in(cwd: Path, *args: str, timeout: int) -> subprocess.CompletedProcess:
    (cwd / "examples").symlink_to(REPO / "examples")  # suite paths are relative to where lipcert runs
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "certify", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.slow
def test_shipped_ci_suite_passes_as_shown(tmp_path):
    """README: ``lipcert run examples/ci/suite.yaml --junit junit.xml --summary-md summary.md``."""
    res = lipcert_in(tmp_path, "run", "examples/ci/suite.yaml", "--junit", "junit.xml", "--summary-md",
                     "summary.md", "-q", timeout=3600)
    assert res.returncode == 0, res.stderr
    assert 'failures="0"' in (tmp_path / "junit.xml").read_text()
    for out in ("lipcert-results.json", "lipcert-report.pdf", "lipcert-report.md", "summary.md"):
        assert (tmp_path / out).exists(), out


@pytest.mark.slow
def test_shipped_ci_suite_passes_on_a_small_sample(tmp_path):
    res = lipcert_in(tmp_path, "run", "examples/ci/suite.yaml", "--limit", "100", "--steps", "5", "-q",
                     timeout=1200)
    assert res.returncode == 0, res.stderr
