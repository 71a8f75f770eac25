"""The certificate plan: which margin-to-radius rule applies, with which constant, and why it is
trusted ([L2NNN] Lemmas 1 and 6, [LINF-DIST] Fact 3.2; ``docs/soundness.md``).

- A named or declared rule (l2-multi, l2-single, linf-dist) is checked against the bounds the
  analyser computes from the weights: l2-multi needs every per-logit L2 bound ≤ C, l2-single the
  global L2 bound ≤ C, linf-dist the global ℓ∞ bound ≤ C, with C the given constant, else the
  declared one, else 1 (a relative tolerance of ``LIPSCHITZ_CLAIM_TOLERANCE`` absorbs the rounding
  allowance of the bounds; the certificate then uses the computed bound).  When it holds, the
  rule's formula is used with the tighter of C and the computed bound (unless a constant was given).
- When it fails, certification is refused (``LipschitzUnverifiedError``) unless the caller assumes
  the property; the plan then rests on C with ``lipschitz_verified=False``.
- ``auto`` uses the declared claim's rule, or without one the pairwise radius
  min_j (y_i − y_j)/L_ij.  A given constant cannot apply to pairwise bounds and is refused.

Every verified plan carries the analysed forward pass, which bounds each example's floating-point
error.  A plan is computed once per model and run, and passed to :func:`certify.certify` and
:func:`attacks.evaluate` (``plan=``) so a combined run analyses the model once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from ..checkpoints import LoadedModel
from ..defaults import LIPSCHITZ_CLAIM_TOLERANCE
from ..device import certificate_precision
from ..errors import BadInputError, LipschitzUnverifiedError, RuntimeFailure
from ..flags import Flag
from ..threat import Norm
from .margins import BOUND_CERTIFICATES, CERTIFICATES, CertificateKind, norm_conversion_factor, pairwise_radius, radius_from_gap


@dataclass(frozen=True)
class CertificatePlan:
    """Which radius rule is used, with which constant, and why it is trusted."""

    certificate: str  #: l2-multi, l2-single, linf-dist or pairwise (ibp, crown, alpha-crown: :mod:`.bound_plan`)
    certificate_norm: Norm  #: norm the rule certifies in
    norm: Norm  #: norm the user asked for (radii are converted to it)
    divisor: float
    lipschitz_constant: float
    lipschitz_verified: bool
    #: ``verified`` (bound computed from the weights), ``declared`` (metadata),
    #: ``assumed`` (the caller said so: ``assume_lipschitz`` or a named certificate)
    basis: str
    reason: str
    norm_factor: float = 1.0  #: radius conversion from certificate_norm to norm
    #: K×K sound Lipschitz bounds of y_i − y_j, for the pairwise rule
    pair_constants: torch.Tensor | None = field(default=None, repr=False, compare=False)
    #: the analysed forward pass (:class:`certify.lipschitz.forward.ForwardSet`): logits with a per-example
    #: bound on their floating-point error; None when no analysis backs the plan
    forward: Any = field(default=None, repr=False, compare=False)
    #: the analyser's report the plan rests on (a :class:`certify.lipschitz.LipschitzReport`), if any
    analysis: Any = field(default=None, repr=False, compare=False)

    def logits(self, module: Any, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        """The logits behind a certificate, and their error bound (a, b) when the analysis gives one."""
        with certificate_precision(x.device):
            if self.forward is None:
                return module(x), None
            fwd = self.forward.for_batch(int(x.shape[0]))
            if fwd is None:
                raise RuntimeFailure(f"the model's graph may change with the batch size and was not analysed at "
                                     f"{int(x.shape[0])}; rerun with another batch size")
            logits, a, b = fwd.to(x.device)(x)
            return logits, (a, b)

    def radii(self, logits: torch.Tensor, stats, err: tuple[torch.Tensor, torch.Tensor] | None = None  # type: ignore[no-untyped-def]
              ) -> torch.Tensor:
        """Radii in the user's norm.  With the error bound (a, b): each margin loses 2κa and each
        Lipschitz constant gains κb, κ = √2 in L2 and 2 in ℓ∞ (see ``docs/soundness.md``)."""
        if self.forward is not None and err is None:
            raise RuntimeFailure("internal: a verified plan needs the error bound of its forward pass")
        safety, slope = stats.safety, None
        if err is not None:
            kappa = Norm.parse(self.certificate_norm).kappa
            a, b = (t.to(stats.gap.device) for t in err)
            safety, slope = torch.maximum(safety, 2.0 * kappa * a), kappa * b
        if self.pair_constants is not None:
            r = pairwise_radius(logits, stats.prediction, self.pair_constants, safety, slope)
        else:
            r = radius_from_gap(stats.gap, safety, self.divisor, self.lipschitz_constant, slope)
        return r * self.norm_factor

    def assumption_flags(self) -> list[Flag]:
        """The ``lipschitz-assumed`` flag of a plan that is not verified (none for a verified one)."""
        if self.lipschitz_verified:
            return []
        return [Flag("lipschitz-assumed",
                     f"certificate {self.certificate} rests on a {self.basis} Lipschitz property: {self.reason}")]

    def check_fits(self, norm: Norm | str, certificate: str) -> None:
        """A plan handed to a run must be one planned for its norm and certificate."""
        asked = resolved_certificate_name(certificate)
        if Norm.parse(norm) is not self.norm or asked not in ("auto", self.certificate):
            raise BadInputError(f"plan was made for norm {self.norm} and certificate {self.certificate}, "
                                f"not norm {norm} and certificate {certificate}; plan again", param="plan")


@dataclass(frozen=True)
class NoCertificate:
    """Planning was tried and refused (``reason``): passed on so that later steps do not plan again."""

    reason: str

    def error(self) -> LipschitzUnverifiedError:
        return LipschitzUnverifiedError(self.reason)


def plan_or_refusal(model: LoadedModel, **kwargs: Any) -> CertificatePlan | NoCertificate:
    """:func:`plan_certificate`, with an unverifiable property returned as :class:`NoCertificate`."""
    try:
        return plan_certificate(model, **kwargs)
    except LipschitzUnverifiedError as err:
        return NoCertificate(str(err))


def resolved_certificate_name(certificate: str) -> str:
    return "auto" if certificate in ("auto", "pairwise") else certificate


def claim_certificate(claim: Any, norm: Norm | str) -> str | None:
    """Best rule a declared claim supports for ``norm``."""
    if claim is None:
        return None
    if Norm.parse(claim.norm) is Norm.LINF:
        return "linf-dist"
    if claim.kind == "vector" and Norm.parse(norm) is Norm.L2:
        return "l2-single"
    return "l2-multi"


def resolved_certificate(model: LoadedModel, norm: Norm | str, certificate: str) -> str:
    """The rule ``certificate`` stands for on this model: ``auto`` becomes the declared claim's rule,
    or stays ``auto`` (pairwise bounds from the weights, where a given constant cannot apply)."""
    if certificate != "auto":
        return certificate
    return claim_certificate(model.metadata.lipschitz, norm) or "auto"


def example_shape(model: LoadedModel, input_shape: tuple[int, ...] | None) -> tuple[int, ...]:
    shape = input_shape or model.metadata.input_shape
    if shape is None:
        raise BadInputError("bound propagation needs the input shape: give data or set input_shape in the model "
                            "metadata", param="input_shape")
    return tuple(int(s) for s in shape)


def batch_sizes_for(n: int, batch_size: int, start: int = 0) -> tuple[int, ...]:
    """The batch sizes a loop over examples ``start..n`` in batches of ``batch_size`` uses."""
    todo = max(n - start, 0)
    sizes = {min(batch_size, todo)} if todo else set()
    if todo % batch_size:
        sizes.add(todo % batch_size)
    return tuple(sorted(s for s in sizes if s > 0))


def plan_certificate(
    model: LoadedModel,
    *,
    norm: Norm | str,
    certificate: str = "auto",
    lipschitz_constant: float | None = None,
    assume_lipschitz: bool = False,
    input_dim: int,
    input_shape: tuple[int, ...] | None = None,
    batch_sizes: tuple[int, ...] | None = None,
    certificate_budget: str | None = None,
) -> CertificatePlan:
    """Choose the radius rule and verify it from the weights where possible (see the module docs).

    When a claim cannot be verified and ``assume_lipschitz`` is set, the plan records
    ``lipschitz_verified=False`` and the basis it rests on, and runs raise the ``lipschitz-assumed`` flag.
    """
    norm = Norm.parse(norm)
    if lipschitz_constant is not None and not (0 < lipschitz_constant < math.inf):
        raise BadInputError(f"lipschitz_constant must be positive and finite, got {lipschitz_constant}",
                            param="lipschitz_constant")
    asked, certificate = certificate, resolved_certificate(model, norm, certificate)
    if certificate in BOUND_CERTIFICATES:
        from .bound_plan import bound_plan  # bound propagation; may refuse

        return bound_plan(model, norm=norm, certificate=certificate, lipschitz_constant=lipschitz_constant,
                          input_shape=example_shape(model, input_shape))
    if certificate != "auto" and certificate not in CERTIFICATES:
        raise BadInputError(f"certificate must be auto or one of {sorted(CERTIFICATES) + list(BOUND_CERTIFICATES)}, "
                            f"got {certificate!r}", param="certificate")
    shape = dict(input_shape=input_shape, batch_sizes=batch_sizes)
    if certificate == "auto" and certificate_budget is None:
        return _pairwise_plan(model, norm, lipschitz_constant, shape)
    if certificate_budget is not None and resolved_certificate_name(asked) == "auto":
        return _combined_plan(model, norm, certificate, lipschitz_constant, assume_lipschitz, input_dim,
                              input_shape, shape, certificate_budget)
    return _rule_plan(model, norm, CERTIFICATES[certificate], lipschitz_constant, assume_lipschitz, input_dim, shape)


def _combined_plan(model: LoadedModel, norm: Norm, certificate: str, lipschitz_constant: float | None,
                   assume_lipschitz: bool, input_dim: int, input_shape: tuple[int, ...] | None,
                   shape: dict[str, Any], budget: str) -> CertificatePlan:
    """``auto`` with a certificate budget: the Lipschitz plan (if any) and bound propagation (:mod:`.auto_plan`)."""
    from ..budget import parse_budget
    from .auto_plan import auto_plan

    spec = parse_budget(budget)
    try:
        if certificate == "auto":
            lip: CertificatePlan | None = _pairwise_plan(model, norm, lipschitz_constant, shape)
        else:
            lip = _rule_plan(model, norm, CERTIFICATES[certificate], lipschitz_constant, assume_lipschitz,
                             input_dim, shape)
        refusal = None
    except LipschitzUnverifiedError as err:
        if lipschitz_constant is not None:  # the caller asked for this constant: say it does not hold
            raise
        lip, refusal = None, str(err)
    return auto_plan(model, norm=norm, lipschitz=lip, refusal=refusal, budget=spec, input_shape=input_shape)


def _pairwise_plan(model: LoadedModel, norm: Norm, lipschitz_constant: float | None,
                   shape: dict[str, Any]) -> CertificatePlan:
    from ..lipschitz.analysis import analyse_with_forward  # the analyser; may refuse

    if lipschitz_constant is not None:
        raise BadInputError(
            f"a Lipschitz constant ({lipschitz_constant:g}) cannot apply to the auto certificate: the model "
            "declares no Lipschitz claim, so auto uses pairwise bounds computed from the weights; name a "
            "certificate rule (l2-multi, l2-single or linf-dist) to certify with a given constant",
            param="lipschitz_constant")
    report, forward = analyse_with_forward(model, norm=norm, **shape)
    if not report.verified:
        raise LipschitzUnverifiedError(
            f"the auto certificate has no sound Lipschitz bound ({report.reason}); name a property "
            "(l2-multi, l2-single or linf-dist) and assume it to certify under it")
    pairs = torch.tensor(report.pair_bounds, dtype=torch.float64, device="cpu").clamp_min(1e-300)
    return CertificatePlan(certificate="pairwise", certificate_norm=norm, norm=norm, divisor=1.0,
                           lipschitz_constant=max(report.global_bound, 1e-300), lipschitz_verified=True,
                           basis="verified", reason=report.reason + "; pairwise radii min_j (y_i−y_j)/L_ij",
                           pair_constants=pairs, forward=forward, analysis=report)


def declared_constant(model: LoadedModel, kind: CertificateKind, lipschitz_constant: float | None
                      ) -> tuple[bool, float]:
    """(the metadata declares the property ``kind`` needs, the constant to check):
    the given constant, else the declared one, else 1."""
    claim = model.metadata.lipschitz
    declared = claim is not None and Norm.parse(claim.norm) is kind.norm and claim.kind in kind.implied_by
    if lipschitz_constant is not None:
        return declared, float(lipschitz_constant)
    return declared, (claim.constant if declared and claim is not None else 1.0)


def _check_not_below_claim(model: LoadedModel, declared: bool, constant: float) -> None:
    """An unverified plan may not rest on a constant below the declared one: that would over-claim."""
    claim = model.metadata.lipschitz
    if declared and claim is not None and constant < claim.constant:
        raise BadInputError(f"lipschitz_constant {constant} is below the declared constant {claim.constant}; "
                            "that would over-claim", param="lipschitz_constant")


def relevant_bound(report: Any, certificate: str) -> tuple[float, str]:
    """The computed bound a certificate rule depends on, and its name."""
    if certificate == "l2-multi":
        worst = max(report.per_logit_bounds) if report.per_logit_bounds else report.global_bound
        return worst, "largest per-logit L2 bound"
    return report.global_bound, f"global {report.norm} bound"


def claim_holds(report: Any, certificate: str, constant: float) -> tuple[bool, str, float]:
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


def _rule_plan(model: LoadedModel, norm: Norm, kind: CertificateKind, lipschitz_constant: float | None,
               assume_lipschitz: bool, input_dim: int, shape: dict[str, Any]) -> CertificatePlan:
    """A named rule: verified from the weights, else declared/assumed when the caller assumes it."""
    from ..lipschitz.analysis import analyse_with_forward  # the analyser; may refuse

    declared, constant = declared_constant(model, kind, lipschitz_constant)
    report, forward = analyse_with_forward(model, norm=kind.norm, **shape)
    ok, why, constant = claim_holds(report, kind.name, constant)
    base = CertificatePlan(certificate=kind.name, certificate_norm=kind.norm, norm=norm, divisor=kind.divisor,
                           lipschitz_constant=float(constant), lipschitz_verified=ok, basis="verified", reason=why,
                           norm_factor=norm_conversion_factor(kind.norm, norm, input_dim), forward=forward,
                           analysis=report)
    if ok:
        bound, _ = relevant_bound(report, kind.name)
        if lipschitz_constant is None and bound < constant:  # a tighter verified constant: larger, still sound radii
            return replace(base, lipschitz_constant=float(bound),
                           reason=f"{why}; certifying with the verified L = {bound:.6g}")
        return base
    if not assume_lipschitz:
        raise LipschitzUnverifiedError(
            f"certificate {kind.name} needs {kind.description.split(':')[0]} with L = {constant:g}, which "
            f"could not be verified ({why}); assume_lipschitz certifies under that assumption",
            param="assume_lipschitz")
    _check_not_below_claim(model, declared, constant)
    # the bound is above the claim, but the floating-point analysis (when there is one) still holds
    return replace(base, basis="declared" if declared else "assumed")
