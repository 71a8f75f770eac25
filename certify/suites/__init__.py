"""Suites and gates: ``lipcert run suite.yaml`` and ``lipcert gate``.

=====================  ==================================================================
module                 owns
=====================  ==================================================================
:mod:`~.schema`        the keys of suite and gate files, as data; validation with line numbers
:mod:`~.gates`         :class:`GateConfig`, :func:`evaluate_gates`, reading numbers from results
:mod:`~.suite`         :class:`Suite`, :func:`load_suite`, :func:`run_suite`
=====================  ==================================================================

``suite`` imports ``gates`` and both import ``schema``; nothing imports back.  ``certify.suite``
and ``certify.gate`` are aliases of these modules.
"""

from .gates import (
    GateConfig,
    GateReport,
    GateResult,
    evaluate_gates,
    gate_config,
    load_gate_config,
)
from .schema import GATE_KEYS, MODEL_KEYS, SUITE_KEYS
from .suite import (
    ModelSpec,
    Suite,
    SuiteRun,
    json_paths,
    load_suite,
    run_suite,
    suite_from_dict,
    with_overrides,
)

__all__ = [
    "GATE_KEYS", "MODEL_KEYS", "SUITE_KEYS", "GateConfig", "GateReport", "GateResult", "ModelSpec", "Suite",
    "SuiteRun", "evaluate_gates", "gate_config", "json_paths", "load_gate_config", "load_suite", "run_suite",
    "suite_from_dict", "with_overrides",
]
