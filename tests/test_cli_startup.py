"""``lipcert --help``, ``--version`` and ``CMD --help`` import neither torch nor foolbox.

They are answered from click alone; wall-time figures live in ``examples/benchmarks/bench_cli.py``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "foolbox", "numpy", "matplotlib", "scipy", "attacks")
COMMANDS = ("certify", "attack", "lipschitz", "data-lipschitz", "analyze", "report", "run", "gate", "demo")

PROBE = """
import json, sys
from certify.cli import main
try:
    main(args={args!r}, prog_name="lipcert")
except SystemExit:
    pass
print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)), file=sys.stderr)
"""


def loaded_after(*args: str) -> tuple[list[str], subprocess.CompletedProcess]:
    code = PROBE.format(args=list(args), heavy=HEAVY)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    return json.loads(proc.stderr.strip().splitlines()[-1]), proc


@pytest.mark.parametrize("args", [("--help",), ("--version",)] + [(c, "--help") for c in COMMANDS], ids=repr)
def test_help_and_version_import_no_heavy_module(args):
    heavy, proc = loaded_after(*args)
    assert heavy == [], f"lipcert {' '.join(args)} imported {heavy}"
    assert "Usage:" in proc.stdout or "version" in proc.stdout


def test_usage_errors_are_answered_before_torch_is_imported():
    heavy, proc = loaded_after("certify", "model.pt2", "--norm", "l2", "--eps", "-1")
    assert heavy == []
    assert "Error: --eps must be positive and finite" in proc.stderr
    heavy, proc = loaded_after("attack", "model.pt2", "--norm", "l2", "--eps", "1", "--device", "tpu")
    assert heavy == []
    assert "Error: expected --device auto, cpu, cuda or cuda:N, got 'tpu'" in proc.stderr


def test_import_certify_is_light_until_a_name_is_used():
    code = ("import sys, certify; a = 'torch' in sys.modules; certify.load_model; "
            "print(a, 'torch' in sys.modules, certify.__version__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}).stdout.split()
    assert out[:2] == ["False", "True"]


def test_version_matches_pyproject():
    from certify._version import __version__

    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r'^version = "([^"]+)"', text, re.M).group(1) == __version__
