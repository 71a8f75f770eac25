"""Confidence gaps, label margins and the radii they certify ([L2NNN] Lemmas 1 and 6; [LINF-DIST] Fact 3.2; docs/soundness.md).

Everything here works on float64: logits are promoted before any difference
is taken, and a documented safety margin (:data:`~certify.defaults.FLOAT_SAFETY_ULPS`)
is subtracted from every gap so float32 rounding never turns into an
over-claimed radius.  A point is certified at ε only when it is correctly
classified *and* ``radius > eps`` (strict).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..defaults import BOUND_CERTIFICATES as DEFAULT_BOUND_CERTIFICATES
from ..defaults import FLOAT_SAFETY_ULPS
from ..errors import BadInputError
from ..threat import Norm


@dataclass(frozen=True)
class CertificateKind:
    """A margin-to-radius rule: r = gap / (divisor · L) in ``norm``."""

    name: str
    norm: Norm
    divisor: float
    #: which declared Lipschitz kinds imply the property this rule needs
    implied_by: tuple[str, ...]
    description: str


CERTIFICATES: dict[str, CertificateKind] = {
    "l2-multi": CertificateKind(
        "l2-multi", Norm.L2, 2.0, ("per-logit", "vector"),
        "every logit is L-Lipschitz in L2 (multi-L2NNN, [L2NNN] Lemma 6): r = g / (2L)",
    ),
    "l2-single": CertificateKind(
        "l2-single", Norm.L2, math.sqrt(2.0), ("vector",),
        "the logit vector is L-Lipschitz L2→L2 (single-L2NNN, [L2NNN] Lemma 1): r = g / (√2 L)",
    ),
    "linf-dist": CertificateKind(
        "linf-dist", Norm.LINF, 2.0, ("per-logit", "vector"),
        "the logit vector is L-Lipschitz ℓ∞→ℓ∞ (ℓ∞-dist Net, [LINF-DIST] Fact 3.2): r = g / (2L)",
    ),
}
CERTIFICATE_NAMES = tuple(CERTIFICATES)
#: certificates from bound propagation (:mod:`certify.bounds`, planned by :mod:`.bound_plan`)
BOUND_CERTIFICATES = DEFAULT_BOUND_CERTIFICATES


@dataclass(frozen=True)
class LogitStats:
    """Per-example float64 statistics of a batch of logits."""

    prediction: torch.Tensor  #: argmax (int64)
    gap: torch.Tensor  #: top logit − runner-up, ≥ 0
    margin: torch.Tensor  #: y_label − max_{j≠label} y_j (negative when wrong)
    safety: torch.Tensor  #: float rounding allowance subtracted from gaps


def float_safety(logits: torch.Tensor) -> torch.Tensor:
    """Per-example rounding allowance for logits computed in ``logits.dtype``."""
    dtype = logits.dtype if logits.is_floating_point() else torch.float64
    eps = torch.finfo(dtype).eps
    scale = 1.0 + logits.detach().to(torch.float64).abs().amax(dim=1)
    return FLOAT_SAFETY_ULPS * eps * scale


def logit_stats(logits: torch.Tensor, labels: torch.Tensor) -> LogitStats:
    """Gap, label margin and prediction, in float64."""
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise BadInputError(f"expected logits of shape batch×classes with ≥2 classes, got {tuple(logits.shape)}")
    y = logits.detach().to(torch.float64)
    top2 = y.topk(2, dim=1)
    pred = top2.indices[:, 0]
    gap = top2.values[:, 0] - top2.values[:, 1]
    label_logit = y.gather(1, labels.view(-1, 1)).squeeze(1)
    others = y.scatter(1, labels.view(-1, 1), float("-inf"))
    margin = label_logit - others.amax(dim=1)
    return LogitStats(pred, gap, margin, float_safety(logits))


def radius_from_gap(gap: torch.Tensor, safety: torch.Tensor | float, divisor: float,
                    lipschitz_constant: float, slope: torch.Tensor | None = None) -> torch.Tensor:
    """r = max(g − safety, 0) / (divisor · L + slope), in float64.  Never negative.

    ``slope``: per example, how fast the floating-point allowance grows with the radius.
    """
    if not lipschitz_constant > 0:
        raise BadInputError(f"the Lipschitz constant must be positive, got {lipschitz_constant}")
    g = gap.to(torch.float64) - torch.as_tensor(safety, dtype=torch.float64, device=gap.device)
    denom = divisor * float(lipschitz_constant) + (0.0 if slope is None else slope.to(torch.float64))
    return g.clamp_min(0.0) / denom


def pairwise_radius(logits: torch.Tensor, prediction: torch.Tensor, pair_constants: torch.Tensor,
                    safety: torch.Tensor, slope: torch.Tensor | None = None) -> torch.Tensor:
    """r = min_{j≠i} (y_i − y_j − safety) / (L_ij + slope) with i the prediction (Tsuzuku et al.; GloRo).

    ``pair_constants[i, j]`` must be a sound Lipschitz bound of y_i − y_j.
    """
    y = logits.detach().to(torch.float64)
    lij = pair_constants.to(device=y.device, dtype=torch.float64)
    yi = y.gather(1, prediction.view(-1, 1))
    diffs = (yi - y - safety.view(-1, 1)).clamp_min(0.0)
    denom = lij[prediction]  # batch × K
    if slope is not None:
        denom = denom + slope.to(device=y.device, dtype=torch.float64).view(-1, 1)
    r = diffs / denom
    r = r.scatter(1, prediction.view(-1, 1), float("inf"))
    return r.amin(dim=1)


def convert_radius(radius: torch.Tensor, from_norm: Norm | str, to_norm: Norm | str, input_dim: int) -> torch.Tensor:
    """Turn a radius in one norm into a sound radius in another.

    With ‖x‖_from ≤ c·‖x‖_to (c = √d from L2 to ℓ∞, else 1), the ``to`` ball of radius r/c lies
    inside the ``from`` ball of radius r: an L2 ball of radius r contains the ℓ∞ ball of radius
    r/√d, and an ℓ∞ ball of radius r contains the L2 ball of radius r.
    """
    source, target = Norm.parse(from_norm, param="from_norm"), Norm.parse(to_norm, param="to_norm")
    return radius if source is target else radius / source.from_norm(target, input_dim)


def norm_conversion_factor(from_norm: Norm | str, to_norm: Norm | str, input_dim: int, device: "torch.device | str" = "cpu") -> float:
    """The factor :func:`convert_radius` multiplies radii by (computed on ``device``, a float64 scalar)."""
    return float(convert_radius(torch.ones(1, dtype=torch.float64, device=device), from_norm, to_norm, input_dim))


def certified_mask(radius: torch.Tensor, correct: torch.Tensor, eps: float) -> torch.Tensor:
    """Certified at ε: correct and radius > ε (strict)."""
    return correct & (radius > eps)
