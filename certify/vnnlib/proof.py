"""Sound proofs that a VNN-LIB property's unsafe region is unreachable (``unsat``).

Both proofs use the ℓ∞ certificate plan of :mod:`certify.certificates` (the pairwise Lipschitz
bounds the analyser computes from the weights, with the per-example floating-point error bound of
the analysed forward pass, ``docs/soundness.md``) on the ℓ∞ ball that contains the box: its centre
is the float32 point nearest the box's centre, its radius ε the largest distance from that point to
a face, rounded up; the model's input bounds are widened to contain the ball.

- **Robustness** (every unsafe clause is ``Y_j ≥ Y_c``, j ≠ c): unsat when the centre is classified
  c and its certified ℓ∞ radius is strictly larger than ε, exactly as ``lipcert certify`` decides.
- **Any linear atoms**: a clause (a conjunction) is unreachable when one of its atoms ``a·y ≤ b``
  has ``min a·y > b`` over the ball, with the lower bound
  ``a·ŷ(c) − max(ulp, 2‖a‖₁·e_a) − (L_a + ‖a‖₁·e_b)·ε``: ŷ(c) the computed logits at the centre,
  (e_a, e_b) the error bound of the forward pass (``‖e(x')‖∞ ≤ e_a + e_b·‖x' − c‖∞``), and L_a a
  Lipschitz bound of a·y: the smaller of Σ|a_k|·L_k (per-logit bounds) and, when Σa_k = 0,
  min_r Σ_{k≠r} |a_k|·L_kr (pairwise bounds of y_k − y_r).  The property is unsat when every clause
  is.  The lower bound is formed in exact rational arithmetic from the float64 values.
"""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction
from typing import Any

import numpy as np
import torch

from ..checkpoints import LoadedModel
from ..defaults import FLOAT_SAFETY_ULPS
from ..device import model_device
from ..errors import LipschitzUnverifiedError
from ..threat import Norm
from .parser import Atom, Property


@dataclasses.dataclass(frozen=True)
class _Ball:
    centre: np.ndarray  #: float32, flat
    eps: float
    bounds: tuple[float, float]


def prove(model: LoadedModel, prop: Property, shape: tuple[int, ...]) -> tuple[bool, str]:
    """(True, how) when a sound certificate shows the unsafe region unreachable, else (False, why not)."""
    from ..certificates.plan import plan_certificate

    ball = ball_of(prop)
    boxed = dataclasses.replace(model, metadata=dataclasses.replace(model.metadata, bounds=ball.bounds,
                                                                    input_shape=shape))
    try:
        plan = plan_certificate(boxed, norm=Norm.LINF, input_dim=prop.num_inputs, input_shape=shape,
                                batch_sizes=(1,))
    except LipschitzUnverifiedError as err:
        return False, f"no sound ℓ∞ certificate: {err}"
    x = torch.from_numpy(ball.centre).reshape((1,) + shape).to(model_device(model.module))
    with torch.no_grad():
        logits, err = plan.logits(boxed.module, x)
    label = prop.robustness_label()
    if label is not None:
        return _robustness(plan, logits, err, label, ball.eps)
    return _linear(plan, prop, logits, err, ball.eps)


def ball_of(prop: Property) -> _Ball:
    """The ℓ∞ ball that contains the property's box (see the module docs)."""
    lo, hi = (np.asarray(v, dtype=np.float64) for v in prop.box())
    centre = ((lo + hi) / 2).astype(np.float32)
    c64 = centre.astype(np.float64)
    eps = float(np.nextafter(np.max(np.maximum(hi - c64, c64 - lo)), np.inf))
    bounds = _grid_bounds(float(np.nextafter(np.min(c64) - eps, -np.inf)),
                          float(np.nextafter(np.max(c64) + eps, np.inf)))
    return _Ball(centre, eps, bounds)


def _grid_bounds(lo: float, hi: float) -> tuple[float, float]:
    """[lo, hi] widened to multiples of 1/8, so properties on one model share one cached analysis
    (the input bounds only scale the floating-point allowance)."""
    lo, hi = math.floor(lo * 8) / 8, math.ceil(hi * 8) / 8
    return (lo, hi) if lo < hi else (lo, lo + 0.125)


def _robustness(plan: Any, logits: torch.Tensor, err: Any, label: int, eps: float) -> tuple[bool, str]:
    from ..certificates.margins import logit_stats

    stats = logit_stats(logits, torch.tensor([label], device=logits.device))
    radius = float(plan.radii(logits, stats, err)[0])
    predicted = int(stats.prediction[0])
    if predicted == label and radius > eps:
        return True, f"ℓ∞ certified radius {radius:.6g} > box radius {eps:.6g} ({plan.certificate})"
    if predicted != label:
        return False, f"the box centre is classified {predicted}, not {label}"
    return False, f"ℓ∞ certified radius {radius:.6g} ≤ box radius {eps:.6g} ({plan.certificate})"


def _linear(plan: Any, prop: Property, logits: torch.Tensor, err: Any, eps: float) -> tuple[bool, str]:
    report = plan.analysis
    if report is None or err is None or plan.pair_constants is None:
        return False, f"the {plan.certificate} certificate gives no per-logit bounds for linear output constraints"
    y = [Fraction(float(v)) for v in logits.detach().to(torch.float64).reshape(-1)]
    e_a, e_b = (float(t.reshape(-1)[0]) for t in err)
    ulp = FLOAT_SAFETY_ULPS * float(np.finfo(np.float32).eps) * (1.0 + max(abs(float(v)) for v in y))
    per_logit = [float(v) for v in report.per_logit_bounds]
    pairs = plan.pair_constants.to(torch.float64).cpu().numpy()
    worst = math.inf
    for clause in prop.clauses:
        slack = max(_atom_slack(atom, y, e_a, e_b, ulp, per_logit, pairs, eps) for atom in clause)
        if slack <= 0:
            return False, (f"an unsafe clause is not excluded by ℓ∞ Lipschitz bounds over the box "
                           f"(best atom slack {slack:.6g})")
        worst = min(worst, slack)
    return True, f"every unsafe clause excluded by ℓ∞ Lipschitz bounds over the box (least slack {worst:.6g})"


def _atom_slack(atom: Atom, y: list[Fraction], e_a: float, e_b: float, ulp: float, per_logit: list[float],
                pairs: np.ndarray, eps: float) -> float:
    """A sound lower bound of min a·y − b over the ball (> 0: the atom, and its clause, cannot hold)."""
    coeffs = dict(atom.coeffs)
    norm1 = sum(abs(c) for c in coeffs.values())
    value = sum((c * y[k] for k, c in coeffs.items()), Fraction(0))
    lip = _lipschitz_of(coeffs, per_logit, pairs)
    if not math.isfinite(lip):
        return -math.inf
    allowance = max(Fraction(ulp) * norm1 / 2, 2 * norm1 * Fraction(e_a))
    spread = (Fraction(lip) + norm1 * Fraction(e_b)) * Fraction(eps)
    return float(value - allowance - spread - atom.bound)


def _lipschitz_of(coeffs: dict[int, Fraction], per_logit: list[float], pairs: np.ndarray) -> float:
    """An upper bound of the ℓ∞ Lipschitz constant of Σ_k a_k·y_k (rounded up)."""
    best = math.fsum(abs(float(c)) * per_logit[k] for k, c in coeffs.items())
    if sum(coeffs.values()) == 0:
        for r in range(len(per_logit)):
            best = min(best, math.fsum(abs(float(c)) * float(pairs[k, r]) for k, c in coeffs.items() if k != r))
    return math.nextafter(best, math.inf) * (1 + 1e-12) if math.isfinite(best) else best
