"""Gate robustness from pytest through lipcert's Python API (no CLI).

Run from the repository root:  pytest examples/ci/test_robustness_gate.py
The suite's gates become one assertion per gate, with the failing ones named.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import certify

SUITE = Path(__file__).with_name("suite.yaml")


@pytest.fixture(scope="module")
def outcome():
    suite = certify.load_suite(SUITE, {"pdf_path": None, "md_path": None})
    missing = [m.path for m in suite.models if not Path(m.path).exists()]
    if missing:
        pytest.skip(f"shipped model(s) not found: {missing}; run from the repository root")
    return certify.run_suite(suite)


def test_every_gate_passes(outcome):
    failed = [f"{rep.name}: {row.gate} = {row.value} (needs {row.op} {row.threshold})"
              for rep in outcome.gates for row in rep.failed]
    assert not failed, "robustness gates failed:\n" + "\n".join(failed)


def test_certified_accuracy_is_a_lower_bound_of_robust_accuracy(outcome):
    for res in outcome.results:
        if res["certify"] is None or res["attack"] is None:
            pytest.skip("needs both certificates and attacks")
        for row in res["analysis"]["at_eps"]:
            assert row["certified_accuracy"] <= row["robust_accuracy"] + 1e-12
