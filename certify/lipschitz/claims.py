"""Turning the analysis into a certificate plan: check a named or declared Lipschitz claim
against the bounds computed from the weights, or use the pairwise bounds (``auto``).

- A named or declared rule (l2-multi, l2-single, linf-dist) is checked against the computed
  bound: l2-multi needs every per-logit L2 bound ≤ C, l2-single the global L2 bound ≤ C,
  linf-dist the global ℓ∞ bound ≤ C, with C the given constant, else the declared one, else 1
  (a relative tolerance of ``LIPSCHITZ_CLAIM_TOLERANCE`` absorbs the rounding allowance of the
  bounds; the certificate then uses the computed bound).  When it holds, the rule's formula is
  used with the tighter of C and the computed bound (unless a constant was given explicitly).
- When it fails, certification is refused (``LipschitzUnverifiedError``) unless the user assumes
  the property; the plan then rests on C with ``lipschitz_verified=False``.
- ``auto`` without a declared claim uses the pairwise radius min_j (y_i − y_j)/L_ij.  A given
  constant cannot apply to it and is refused rather than ignored.

Every verified plan carries the analysed forward pass, which bounds each example's floating-point
error (``docs/soundness.md``).
"""

from __future__ import annotations

from typing import Any

import torch

from ..checkpoints import LoadedModel
from ..defaults import LIPSCHITZ_CLAIM_TOLERANCE
from ..errors import BadInputError, LipschitzUnverifiedError
from .analysis import analyse_with_forward
from .report import LipschitzReport


def relevant_bound(report: LipschitzReport, certificate: str) -> tuple[float, str]:
    """The computed bound a certificate rule depends on, and its name."""
    if certificate == "l2-multi":
        worst = max(report.per_logit_bounds) if report.per_logit_bounds else report.global_bound
        return worst, "largest per-logit L2 bound"
    return report.global_bound, f"global {report.norm} bound"


def claim_holds(report: LipschitzReport, certificate: str, constant: float) -> tuple[bool, str, float]:
    """(holds, why, L to certify with): L = max(constant, computed bound), so never below the truth."""
    limit = constant * (1 + LIPSCHITZ_CLAIM_TOLERANCE)
    if not report.verified:
        return False, report.reason, constant
    worst, what = relevant_bound(report, certificate)
    if worst <= constant:
        return True, f"{what} {worst:.6g} ≤ {constant:g}, computed from the weights", constant
    if worst <= limit:
        return True, (f"{what} {worst:.7g} computed from the weights is within float tolerance of the declared "
                      f"{constant:g}; certifying with L = {worst:.7g}"), worst
    return False, f"the {what} computed from the weights is {worst:.6g} > {constant:g}", constant


def verify_certificate(model: LoadedModel, *, norm: str, certificate: str, requested: str,
                       lipschitz_constant: float | None, assume_lipschitz: bool, input_dim: int,
                       input_shape: tuple[int, ...] | None = None,
                       batch_sizes: tuple[int, ...] | None = None) -> Any:
    """The certificate plan, verified from the weights where possible (see the module docs)."""
    from ..certificates import CertificatePlan, declared_plan
    from ..margins import CERTIFICATES, norm_conversion_factor

    if certificate == "auto":
        if lipschitz_constant is not None:
            raise BadInputError(
                f"a Lipschitz constant ({lipschitz_constant:g}) cannot apply to the auto certificate: the model "
                "declares no Lipschitz claim, so auto uses pairwise bounds computed from the weights; name a "
                "certificate rule (l2-multi, l2-single or linf-dist) to certify with a given constant")
        report, forward = analyse_with_forward(model, norm=norm, input_shape=input_shape, batch_sizes=batch_sizes)
        if not report.verified:
            raise LipschitzUnverifiedError(
                f"the auto certificate has no sound Lipschitz bound ({report.reason}); name a property "
                "(l2-multi, l2-single or linf-dist) and assume it to certify under it")
        pairs = torch.tensor(report.pair_bounds, dtype=torch.float64, device="cpu").clamp_min(1e-300)
        return CertificatePlan(certificate="pairwise", certificate_norm=norm, norm=norm, divisor=1.0,
                               lipschitz_constant=max(report.global_bound, 1e-300), lipschitz_verified=True,
                               basis="verified", reason=report.reason + "; pairwise radii min_j (y_i−y_j)/L_ij",
                               pair_constants=pairs, forward=forward)
    kind = CERTIFICATES[certificate]
    claim = model.metadata.lipschitz
    declared = claim is not None and claim.norm == kind.norm and claim.kind in kind.implied_by
    constant = lipschitz_constant if lipschitz_constant is not None else (
        claim.constant if declared and claim is not None else 1.0)
    report, forward = analyse_with_forward(model, norm=kind.norm, input_shape=input_shape, batch_sizes=batch_sizes)
    ok, why, verified_constant = claim_holds(report, certificate, constant)
    if ok:
        constant = verified_constant
        bound, _ = relevant_bound(report, certificate)
        if lipschitz_constant is None and bound < constant:  # a tighter verified constant: larger, still sound radii
            why += f"; certifying with the verified L = {bound:.6g}"
            constant = bound
        return CertificatePlan(certificate=certificate, certificate_norm=kind.norm, norm=norm, divisor=kind.divisor,
                               lipschitz_constant=float(constant), lipschitz_verified=True, basis="verified",
                               reason=why, norm_factor=norm_conversion_factor(kind.norm, norm, input_dim),
                               forward=forward)
    if not assume_lipschitz:
        raise LipschitzUnverifiedError(
            f"certificate {certificate} needs {kind.description.split(':')[0]} with L = {constant:g}, which "
            f"could not be verified ({why}); assume the property explicitly to certify under it")
    plan = declared_plan(model, norm=norm, certificate=certificate, lipschitz_constant=lipschitz_constant,
                         assume_lipschitz=True, input_dim=input_dim, reason_unverified=why)
    if forward is not None:  # the bound is above the claim, but the floating-point analysis still holds
        from dataclasses import replace

        plan = replace(plan, forward=forward)
    return plan
