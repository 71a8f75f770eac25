"""Certificates: margins and radii (:mod:`.margins`), the certificate plan (:mod:`.plan`), the one
batched forward loop (:mod:`.clean_pass`), :func:`certify` (:mod:`.run`) and resuming (:mod:`.resume`).

Every name that ``certify.certificates`` offered before it became a package is re-exported here.
"""

from __future__ import annotations

from ..threat import parse_eps, parse_number
from .clean_pass import (
    CleanPass,
    Examples,
    check_finite_logits,
    clean_pass,
    concat_examples,
    model_num_classes,
    sharded_clean_pass,
)
from .plan import (
    CertificatePlan,
    NoCertificate,
    batch_sizes_for,
    claim_certificate,
    claim_holds,
    plan_certificate,
    plan_or_refusal,
    relevant_bound,
    resolved_certificate,
)
from .resume import CertifyResume, certify_settings, check_resume_settings, check_resumed_rows, resume_examples
from .run import CertifyReport, EpsResult, certify

__all__ = [
    "CertificatePlan", "CertifyReport", "CertifyResume", "CleanPass", "EpsResult", "Examples", "NoCertificate",
    "batch_sizes_for",
    "certify", "certify_settings", "check_finite_logits", "check_resume_settings", "check_resumed_rows",
    "claim_certificate", "claim_holds", "clean_pass", "concat_examples", "model_num_classes", "parse_eps",
    "parse_number", "plan_certificate", "plan_or_refusal", "relevant_bound", "resolved_certificate", "resume_examples",
    "sharded_clean_pass",
]
