"""lipcert attacks: foolbox-style attack classes, a registry, and :func:`evaluate`.

Library use::

    from certify import load_model, load_dataset
    from attacks import evaluate
    report = evaluate(load_model("model.pt2"), load_dataset("demo"), norm="l2", eps=[0.5, 1.5])
    report.worst_case[0].robust_accuracy
"""

from __future__ import annotations

from .base import Attack, AttackOutcome, FixedEpsilonAttack, MinimizationAttack, run_batched
from .evaluate import evaluate
from .report import AttackExamples, AttackReport, AttackResult, Violation, WorstCase
from .registry import ATTACKS, attack_class
from .resume import AttackResume, resume_state

__all__ = [
    "ATTACKS", "Attack", "AttackExamples", "AttackResume", "AttackOutcome", "AttackReport", "AttackResult",
    "FixedEpsilonAttack", "MinimizationAttack", "Violation", "WorstCase", "attack_class", "evaluate",
    "resume_state", "run_batched",
]
