"""Analyses of per-example results ([WCAT] §5.1 error curve; [L2NNN] Fig. 2 and Tables 1–2): curves, bins, hybrid, margins, singular values.

Everything here is a pure function of per-example arrays (labels, predictions,
confidence gaps, label margins, certified radii and minimum adversarial
distances) and returns frozen dataclasses; :mod:`certify.results` turns them
into JSON and :mod:`certify.reporting` into tables and PDF pages.

Conventions
-----------
* ``d(x)``, the minimum adversarial distance, is 0 for a point misclassified
  clean and ``inf`` when no attack found an adversarial example.
* The empirical error curve is ``C_err(ε) = P(d(x) ≤ ε)`` ([WCAT] §5.1); it is
  a *lower* bound on the true robust error.
* The certified error curve is ``1 − certified accuracy(ε)`` = ``P(c(x) ≤ ε)``
  with ``c(x) = radius`` for a correct point and 0 otherwise (a point is
  certified when correct and ``radius > ε``, strictly); it is an *upper* bound.
* The median adversarial distance is the smallest ε with ``C_err(ε) ≥ 1/2``:
  the ⌈n/2⌉-th smallest ``d``; ``inf`` when more than half are never broken.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from ..defaults import (
    CURVE_POINTS,
    DEFAULT_ANALYSIS_EPS,
    GAP_BINS,
    HYBRID_DELEGATE_ACCURACY,
    HYBRID_POINTS,
    MARGIN_HIST_BINS,
)
from ..errors import BadInputError


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class PerExample:
    """Per-example arrays of equal length (float64; ``nan`` radius = no certificate)."""

    label: np.ndarray
    prediction: np.ndarray
    gap: np.ndarray
    margin: np.ndarray
    radius: np.ndarray  #: nan where no certificate was computed
    min_adv_distance: np.ndarray | None = None  #: None when no attack ran; inf = none found

    def __len__(self) -> int:
        return int(self.label.shape[0])

    @property
    def correct(self) -> np.ndarray:
        return self.label == self.prediction

    @property
    def has_radius(self) -> bool:
        return bool(len(self)) and not bool(np.isnan(self.radius).all())

    def certified_distance(self) -> np.ndarray:
        """c(x): the radius for a correct point, 0 for a wrong one (0 when no certificate)."""
        r = np.nan_to_num(self.radius, nan=0.0)
        return np.where(self.correct, np.maximum(r, 0.0), 0.0)

    def adversarial_distance(self) -> np.ndarray | None:
        """d(x): 0 for a clean error, else the attack's minimum distance (inf if none found)."""
        if self.min_adv_distance is None:
            return None
        d = np.nan_to_num(self.min_adv_distance, nan=np.inf, posinf=np.inf)
        return np.where(self.correct, d, 0.0)


def _array(values: Any, name: str, n: int | None = None) -> np.ndarray:
    arr = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    if n is not None and arr.shape[0] != n:
        raise BadInputError(f"per_example.{name} has {arr.shape[0]} values, expected {n}")
    return arr


def per_example_from_json(certify_pe: Mapping[str, Any] | None,
                          attack_pe: Mapping[str, Any] | None = None) -> PerExample:
    """Build :class:`PerExample` from the ``per_example`` blocks of certify/attack JSON.

    A null ``min_adv_distance`` means no adversarial example was found (inf).
    """
    base = certify_pe or attack_pe
    if not base:
        raise BadInputError("the results hold no per_example arrays; rerun certify/attack with per-example output")
    n = len(base["label"])
    fields = {k: _array(base[k], k, n) for k in ("label", "prediction", "gap", "margin")}
    radius = _array(base.get("radius") or [None] * n, "radius", n)
    dist = None
    if attack_pe is not None and attack_pe.get("min_adv_distance") is not None:
        dist = np.nan_to_num(_array(attack_pe["min_adv_distance"], "min_adv_distance", n), nan=np.inf, posinf=np.inf)
    for k in ("label", "prediction"):
        v = fields[k]
        if not (np.isfinite(v).all() and (v == np.round(v)).all() and (np.abs(v) < 2**31).all()):
            raise BadInputError(f"per_example.{k} must hold class indices (integers); the results were edited")
    return PerExample(fields["label"].astype(np.int64), fields["prediction"].astype(np.int64),
                      fields["gap"], fields["margin"], radius, dist)


# --------------------------------------------------------------------------- curves


@dataclass(frozen=True)
class Curve:
    """``values[i]`` at ``eps[i]``; ``name`` is an attack, ``worst case`` or ``certified``."""

    name: str
    eps: tuple[float, ...]
    values: tuple[float, ...]


def error_curve(distance: np.ndarray, eps: Sequence[float]) -> np.ndarray:
    """C_err(ε) = P(d ≤ ε) for each ε (empty input → zeros)."""
    d = np.asarray(distance, dtype=np.float64)
    if d.size == 0:
        return np.zeros(len(eps))
    return np.array([float(np.mean(d <= e)) for e in eps])


def certified_accuracy_curve(ex: PerExample, eps: Sequence[float]) -> np.ndarray:
    """P(correct and radius > ε) for each ε (strict inequality)."""
    c = ex.certified_distance()
    if c.size == 0:
        return np.zeros(len(eps))
    return np.array([float(np.mean(ex.correct & (c > e))) for e in eps])


def median_distance(distance: np.ndarray) -> float:
    """Smallest ε with P(d ≤ ε) ≥ 1/2: the ⌈n/2⌉-th smallest value (inf when unbroken)."""
    d = np.sort(np.asarray(distance, dtype=np.float64))
    if d.size == 0:
        return math.nan
    return float(d[math.ceil(d.size / 2) - 1])


def eps_grid(ex: PerExample, eps: Sequence[float], points: int = CURVE_POINTS) -> tuple[float, ...]:
    """0 … a little past the largest finite distance, radius or chosen ε."""
    finite = [float(np.max(a[np.isfinite(a)])) for a in (ex.adversarial_distance(), ex.certified_distance())
              if a is not None and np.isfinite(a).any()]
    top = max(finite + [max(eps, default=0.0)])
    top = 1.05 * top if top > 0 else 1.0
    return tuple(float(v) for v in np.linspace(0.0, top, points))


# --------------------------------------------------------------------------- readings at chosen ε


@dataclass(frozen=True)
class EpsSummary:
    """%err and accuracies at one chosen ε (``None`` where no attack ran)."""

    eps: float
    empirical_error: float | None  #: C_err(ε) from the attacks (lower bound on the error)
    robust_accuracy: float | None  #: 1 − C_err(ε)
    certified_accuracy: float
    certified_error: float  #: 1 − certified accuracy (upper bound on the error)
    #: neither certified nor broken (no attack found an adversarial within ε): the gap a stronger verifier
    #: or attack could close; None where no attack ran
    open_share: float | None = None


def eps_summaries(ex: PerExample, eps: Sequence[float]) -> tuple[EpsSummary, ...]:
    d = ex.adversarial_distance()
    cert = certified_accuracy_curve(ex, eps)
    emp = error_curve(d, eps) if d is not None else None
    return tuple(EpsSummary(float(e), None if emp is None else float(emp[i]),
                            None if emp is None else float(1.0 - emp[i]),
                            float(cert[i]), float(1.0 - cert[i]), _open_share(ex, d, float(e)))
                 for i, e in enumerate(eps))


def _open_share(ex: PerExample, d: np.ndarray | None, eps: float) -> float | None:
    """Share of points neither certified (correct, radius > ε) nor broken (adversarial within ε)."""
    if d is None or len(d) == 0:
        return None
    c = ex.certified_distance()
    certified = ex.correct & (c > eps) if c is not None else np.zeros(len(d), dtype=bool)
    return float(np.mean(~certified & ~(np.asarray(d) <= eps)))


# --------------------------------------------------------------------------- binned gap accuracy


@dataclass(frozen=True)
class GapBin:
    """One of the equal-size bins of points sorted by confidence gap (bin 0 = smallest gaps)."""

    index: int
    n: int
    gap_min: float
    gap_max: float
    natural_accuracy: float
    attacked_accuracy: float | None  #: correct and d > ε (None: no attack)
    certified_accuracy: float | None  #: correct and radius > ε (None: no certificate)


def gap_bins(ex: PerExample, eps: float, bins: int = GAP_BINS) -> tuple[GapBin, ...]:
    """Sort by gap (stable), split into ``bins`` near-equal bins (np.array_split) ([L2NNN] Fig. 2)."""
    if bins < 1:
        raise BadInputError(f"gap bins must be at least 1, got {bins}")
    order = np.argsort(ex.gap, kind="stable")
    d = ex.adversarial_distance()
    out = []
    for i, idx in enumerate(np.array_split(order, bins)):
        if idx.size == 0:
            continue
        correct = ex.correct[idx]
        attacked = None if d is None else float(np.mean(correct & (d[idx] > eps)))
        certified = float(np.mean(correct & (ex.certified_distance()[idx] > eps))) if ex.has_radius else None
        out.append(GapBin(i, int(idx.size), float(ex.gap[idx].min()), float(ex.gap[idx].max()),
                          float(np.mean(correct)), attacked, certified))
    return tuple(out)


# --------------------------------------------------------------------------- hybrid threshold


@dataclass(frozen=True)
class HybridPoint:
    """Points with gap < threshold are delegated to another model ([L2NNN] §3.2).

    ``overall_accuracy`` assumes the other model gets ``delegate_accuracy`` of
    the delegated points right (1.0 by default: an upper bound for the hybrid).
    """

    threshold: float
    delegated_share: float
    kept_accuracy: float | None  #: accuracy on the points kept (None when none are kept)
    overall_accuracy: float


def hybrid_curve(ex: PerExample, thresholds: Sequence[float] | None = None, *,
                 delegate_accuracy: float = HYBRID_DELEGATE_ACCURACY,
                 points: int = HYBRID_POINTS) -> tuple[HybridPoint, ...]:
    n = len(ex)
    if thresholds is None:
        top = float(np.quantile(ex.gap, 0.95)) if n else 1.0
        thresholds = np.linspace(0.0, top if top > 0 else 1.0, points)
    out = []
    for t in thresholds:
        kept = ex.gap >= t
        n_kept = int(kept.sum())
        right = int((ex.correct & kept).sum())
        delegated = n - n_kept
        out.append(HybridPoint(float(t), delegated / n if n else 0.0,
                               right / n_kept if n_kept else None,
                               (right + delegate_accuracy * delegated) / n if n else 0.0))
    return tuple(out)


# --------------------------------------------------------------------------- margins


@dataclass(frozen=True)
class MarginHistograms:
    """Label-margin histograms sharing ``edges`` ([AR-REG] Fig. 4); counts per split."""

    edges: tuple[float, ...]
    test: tuple[int, ...]
    train: tuple[int, ...] | None
    test_mean: float
    train_mean: float | None


def margin_histograms(test: np.ndarray, train: np.ndarray | None = None,
                      bins: int = MARGIN_HIST_BINS) -> MarginHistograms:
    both = np.concatenate([test] + ([train] if train is not None else []))
    both = both[np.isfinite(both)]
    lo, hi = (float(both.min()), float(both.max())) if both.size else (0.0, 1.0)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    test_counts = np.histogram(test, bins=edges)[0]
    train_counts = None if train is None else tuple(int(c) for c in np.histogram(train, bins=edges)[0])
    return MarginHistograms(tuple(float(e) for e in edges), tuple(int(c) for c in test_counts), train_counts,
                            float(np.mean(test)) if test.size else math.nan,
                            None if train is None or not train.size else float(np.mean(train)))


def label_margins(model: Any, data: Any, *, batch_size: int = 256, device: Any = None) -> np.ndarray:
    """Float64 label margins y_label − max_{j≠label} y_j of ``model`` on ``data``."""
    return forward_examples(model, data, batch_size=batch_size, device=device).margin


def forward_examples(model: Any, data: Any, *, batch_size: int = 256, device: Any = None) -> PerExample:
    """Labels, predictions, gaps and margins from a forward pass (no certificate: radius nan), through
    certify's one batched loop (:func:`certify.certificates.clean_pass`; sharded over the ranks under
    torchrun).  ``model``: a loaded model or a module; ``device=None``: the model's device."""
    import torch

    from ..certificates.clean_pass import sharded_clean_pass
    from ..device import run_device

    module = getattr(model, "module", model)
    if hasattr(module, "parameters"):
        device = run_device(module, device)
    elif device is None:
        device = torch.device("cpu")
    done = sharded_clean_pass(module, data, device, batch_size=batch_size)
    if done.partial:
        raise KeyboardInterrupt
    ex = done.examples
    return PerExample(ex.label, ex.prediction, ex.gap, ex.margin, np.full(len(ex), np.nan))


# --------------------------------------------------------------------------- singular values


@dataclass(frozen=True)
class LayerSpread:
    """Singular values of one weight tensor reshaped to (out, in·k·k) ([AR-REG] Fig. 5).

    For a convolution these are the singular values of the reshaped kernel,
    *not* of the convolution operator (which are larger, up to √(k·k) times).
    ``std`` is the population standard deviation (ddof=0).
    """

    name: str
    shape: tuple[int, ...]
    count: int
    std: float
    largest: float
    smallest: float


def singular_value_spreads(model: Any) -> tuple[LayerSpread, ...]:
    """Per weight of rank ≥ 2 (linear and conv layers) of an nn.Module or LoadedModel.

    For exported graphs (torch.export) the layer types are not visible, so
    every parameter of rank ≥ 2 is taken, in parameter order.
    """
    import torch

    module = getattr(model, "module", model)
    out = []
    for name, p in module.named_parameters():
        if p.dim() < 2:
            continue
        w = p.detach().to("cpu", torch.float64).reshape(p.shape[0], -1)
        s = torch.linalg.svdvals(w).numpy()
        out.append(LayerSpread(name, tuple(int(v) for v in p.shape), int(s.size), float(np.std(s)),
                               float(s.max()), float(s.min())))
    return tuple(out)


# --------------------------------------------------------------------------- tightness


@dataclass(frozen=True)
class Tightness:
    """Certified radius against adversarial distance, over correct points with both finite and d > 0.

    ``ratio = radius / d`` lies in [0, 1] for a sound certificate; 1 means tight.
    ``violations`` counts points with radius > d (an attack inside a certified radius).
    """

    compared: int
    median_ratio: float | None
    mean_ratio: float | None
    violations: int


def tightness(ex: PerExample) -> Tightness | None:
    d = ex.adversarial_distance()
    if d is None or not ex.has_radius:
        return None
    r = ex.certified_distance()
    ok = ex.correct & np.isfinite(d) & (d > 0)
    ratio = r[ok] / d[ok]
    return Tightness(int(ok.sum()), float(np.median(ratio)) if ratio.size else None,
                     float(np.mean(ratio)) if ratio.size else None, int((r[ok] > d[ok]).sum()))


# --------------------------------------------------------------------------- everything at once


@dataclass(frozen=True)
class Analysis:
    """All analyses of one model's per-example results (see the module docs)."""

    norm: str
    n: int
    clean_accuracy: float
    eps: tuple[float, ...]  #: the chosen ε of the summary
    curves: tuple[Curve, ...]  #: empirical error per attack, worst case, and certified error
    certified_accuracy: Curve
    at_eps: tuple[EpsSummary, ...]
    median_adv_distance: float | None  #: None: no attack; inf: more than half unbroken
    median_certified_radius: float | None
    bin_eps: float
    gap_bins: tuple[GapBin, ...]
    hybrid: tuple[HybridPoint, ...]
    hybrid_delegate_accuracy: float
    margins: MarginHistograms
    singular_values: tuple[LayerSpread, ...]
    tightness: Tightness | None


def analyse_examples(ex: PerExample, *, norm: str, eps: Sequence[float] | None = None,
                     attack_points: Mapping[str, Mapping[float, float]] | None = None,
                     bin_eps: float | None = None, train_margins: np.ndarray | None = None,
                     spreads: Sequence[LayerSpread] = (),
                     delegate_accuracy: float = HYBRID_DELEGATE_ACCURACY) -> Analysis:
    """Compute every analysis.

    ``attack_points`` maps an attack name to ``{ε: error}`` read off the attack
    results (one curve per attack); ``bin_eps`` is the ε of the binned-gap
    bars (default: the largest positive chosen ε).
    """
    if norm not in DEFAULT_ANALYSIS_EPS:
        raise BadInputError(f"expected norm l2 or linf, got {norm!r}")
    chosen = tuple(float(e) for e in (DEFAULT_ANALYSIS_EPS[norm] if eps is None else eps))
    grid = eps_grid(ex, chosen)
    curves = [Curve(name, tuple(sorted(pts)), tuple(pts[k] for k in sorted(pts)))
              for name, pts in (attack_points or {}).items()]
    d = ex.adversarial_distance()
    if d is not None:
        curves.append(Curve("worst case", grid, tuple(float(v) for v in error_curve(d, grid))))
    cert_acc = certified_accuracy_curve(ex, grid)
    if ex.has_radius:
        curves.append(Curve("certified", grid, tuple(float(1.0 - v) for v in cert_acc)))
    positive = [e for e in chosen if e > 0]
    b_eps = float(bin_eps) if bin_eps is not None else (max(positive) if positive else 0.0)
    return Analysis(
        norm=norm, n=len(ex), clean_accuracy=float(np.mean(ex.correct)) if len(ex) else 0.0, eps=chosen,
        curves=tuple(curves), certified_accuracy=Curve("certified accuracy", grid, tuple(float(v) for v in cert_acc)),
        at_eps=eps_summaries(ex, chosen),
        median_adv_distance=None if d is None else median_distance(d),
        median_certified_radius=median_distance(ex.certified_distance()) if ex.has_radius else None,
        bin_eps=b_eps, gap_bins=gap_bins(ex, b_eps), hybrid=hybrid_curve(ex, delegate_accuracy=delegate_accuracy),
        hybrid_delegate_accuracy=float(delegate_accuracy),
        margins=margin_histograms(ex.margin, train_margins), singular_values=tuple(spreads),
        tightness=tightness(ex))


def attack_points_from_json(attack: Mapping[str, Any] | None) -> dict[str, dict[float, float]]:
    """{attack: {ε: 1 − robust accuracy}} from attack JSON ``results``, at each attack's largest budget."""
    if not attack:
        return {}
    best: dict[tuple[str, float], tuple[float, float]] = {}
    for row in attack.get("results") or []:
        key = (str(row["attack"]), float(row["eps"]))
        budget = float(row.get("steps") or 0) * float(row.get("restarts") or 1)
        if row.get("robust_accuracy") is None:
            continue
        if key not in best or budget >= best[key][0]:
            best[key] = (budget, 1.0 - float(row["robust_accuracy"]))
    out: dict[str, dict[float, float]] = {}
    for (name, e), (_, err) in sorted(best.items()):
        out.setdefault(name, {})[e] = err
    return out
