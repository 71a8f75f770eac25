"""Analyses against hand-computed values on tiny inputs (certify.analysis)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from certify.evaluation.analyses import (
    PerExample,
    analyse_examples,
    attack_points_from_json,
    certified_accuracy_curve,
    eps_summaries,
    error_curve,
    gap_bins,
    hybrid_curve,
    margin_histograms,
    median_distance,
    per_example_from_json,
    singular_value_spreads,
    tightness,
)
from certify.errors import BadInputError


def ex(label, pred, gap=None, radius=None, dist=None, margin=None) -> PerExample:
    n = len(label)
    f = lambda v, d: np.asarray(v if v is not None else d, dtype=np.float64)  # noqa: E731
    return PerExample(np.asarray(label), np.asarray(pred), f(gap, np.zeros(n)), f(margin, np.zeros(n)),
                      f(radius, np.full(n, np.nan)), None if dist is None else f(dist, None))


# --------------------------------------------------------------------------- curves and medians


def test_error_curve_counts_d_at_most_eps():
    d = np.array([0.0, 0.2, 0.5, np.inf])
    assert error_curve(d, [0, 0.1, 0.2, 0.5, 1.0]).tolist() == [0.25, 0.25, 0.5, 0.75, 0.75]


@pytest.mark.parametrize("d, expected", [
    ([0.0, 0.2, 0.5, np.inf], 0.2),  # C_err(0.2) = 1/2 first
    ([0.1, 0.2, 0.3], 0.2),
    ([0.3, np.inf, np.inf], np.inf),  # more than half never broken
    ([0.7], 0.7),
])
def test_median_distance_is_smallest_eps_with_half_error(d, expected):
    assert median_distance(np.array(d)) == expected
    if math.isfinite(expected):
        assert error_curve(np.array(d), [expected])[0] >= 0.5


def test_adversarial_distance_is_zero_for_clean_errors_and_inf_when_unbroken():
    e = ex([0, 1, 1, 0], [0, 1, 0, 0], dist=[0.4, 0.1, 0.7, np.inf])
    assert e.adversarial_distance().tolist() == [0.4, 0.1, 0.0, np.inf]


def test_certified_accuracy_is_strict_and_counts_only_correct_points():
    e = ex([0, 1, 1, 0], [0, 1, 0, 0], radius=[0.3, 0.05, 0.9, 0.0])
    assert certified_accuracy_curve(e, [0.0, 0.05, 0.3]).tolist() == [0.5, 0.25, 0.0]


def test_eps_summaries_hand_computed():
    e = ex([0, 1, 1, 0], [0, 1, 0, 0], radius=[0.3, 0.05, 0.9, 0.0], dist=[0.4, 0.1, 0.7, np.inf])
    (s0, s1) = eps_summaries(e, [0.0, 0.1])
    assert (s0.empirical_error, s0.certified_accuracy, s0.certified_error) == (0.25, 0.5, 0.5)
    assert (s1.empirical_error, s1.robust_accuracy, s1.certified_accuracy) == (0.5, 0.5, 0.25)


def test_no_attack_gives_none_not_zero():
    (s,) = eps_summaries(ex([0, 1], [0, 1], radius=[1.0, 1.0]), [0.5])
    assert s.empirical_error is None and s.robust_accuracy is None and s.certified_accuracy == 1.0


# --------------------------------------------------------------------------- bins


def _twenty():
    gap = np.arange(20, dtype=float)
    rng = np.random.default_rng(0)
    perm = rng.permutation(20)  # bins must not depend on the input order
    label = np.zeros(20, dtype=int)
    pred = np.where(gap < 2, 1, 0)  # the two smallest gaps are wrong
    return ex(label[perm], pred[perm], gap=gap[perm], radius=(0.05 * gap)[perm], dist=(0.1 * gap)[perm])


def test_gap_bins_hand_computed():
    bins = gap_bins(_twenty(), eps=0.5)
    assert [b.n for b in bins] == [2] * 10
    assert [(b.gap_min, b.gap_max) for b in bins][:3] == [(0, 1), (2, 3), (4, 5)]
    assert [b.natural_accuracy for b in bins] == [0.0] + [1.0] * 9
    # after attack: d = 0.1·gap > 0.5 ⇔ gap > 5
    assert [b.attacked_accuracy for b in bins] == [0.0, 0.0, 0.0] + [1.0] * 7
    # certified: radius = 0.05·gap > 0.5 ⇔ gap > 10 (strict: gap 10 is not certified)
    assert [b.certified_accuracy for b in bins] == [0.0] * 5 + [0.5] + [1.0] * 4


def test_gap_bins_unequal_n_uses_near_equal_bins():
    e = ex(np.zeros(23, int), np.zeros(23, int), gap=np.arange(23.0))
    assert [b.n for b in gap_bins(e, 0.1)] == [3, 3, 3, 2, 2, 2, 2, 2, 2, 2]
    assert all(b.attacked_accuracy is None and b.certified_accuracy is None for b in gap_bins(e, 0.1))


# --------------------------------------------------------------------------- hybrid


def test_hybrid_curve_hand_computed():
    e = ex([0, 0, 0, 0], [1, 0, 1, 0], gap=[0.5, 1.5, 2.5, 3.5])
    p0, p2, p4 = hybrid_curve(e, [0.0, 2.0, 4.0])
    assert (p0.delegated_share, p0.kept_accuracy, p0.overall_accuracy) == (0.0, 0.5, 0.5)
    assert (p2.delegated_share, p2.kept_accuracy, p2.overall_accuracy) == (0.5, 0.5, 0.75)
    assert (p4.delegated_share, p4.kept_accuracy, p4.overall_accuracy) == (1.0, None, 1.0)
    (q2,) = hybrid_curve(e, [2.0], delegate_accuracy=0.0)
    assert q2.overall_accuracy == 0.25


# --------------------------------------------------------------------------- margins, singular values, tightness


def test_margin_histograms_share_edges():
    h = margin_histograms(np.array([-1.0, 0.0, 1.0, 2.0]), np.array([0.5]), bins=3)
    assert h.edges == (-1.0, 0.0, 1.0, 2.0)
    assert h.test == (1, 1, 2) and h.train == (0, 1, 0)
    assert h.test_mean == 0.5 and h.train_mean == 0.5


def test_singular_value_std_linear_and_conv():
    lin = nn.Linear(2, 2)
    conv = nn.Conv2d(1, 2, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.diag(torch.tensor([3.0, 4.0])))
        conv.weight.zero_()
        conv.weight[0, 0, 0, 0] = 2.0
        conv.weight[1, 0, 0, 1] = 6.0  # reshaped kernel rows are orthogonal: singular values 6, 2
    (s_lin, s_conv) = singular_value_spreads(nn.Sequential(lin, conv))
    assert s_lin.std == pytest.approx(0.5) and s_lin.largest == pytest.approx(4.0)
    assert s_conv.shape == (2, 1, 2, 2) and s_conv.std == pytest.approx(2.0)
    assert s_conv.smallest == pytest.approx(2.0)


def test_tightness_ratio_and_violations():
    e = ex([0, 0, 0], [0, 0, 0], radius=[0.5, 0.2, 0.3], dist=[1.0, 0.4, 0.2])
    t = tightness(e)
    assert t.compared == 3 and t.median_ratio == 0.5 and t.violations == 1  # 0.3 > 0.2


# --------------------------------------------------------------------------- JSON inputs


def test_per_example_from_json_null_distance_is_inf_and_null_radius_nan():
    cert = {"label": [0, 1], "prediction": [0, 0], "gap": [1.0, 2.0], "margin": [1.0, -2.0], "radius": [0.5, None]}
    e = per_example_from_json(cert, {"min_adv_distance": [None, 0.3]})
    assert e.adversarial_distance().tolist() == [np.inf, 0.0]
    assert np.isnan(e.radius[1])


def test_per_example_from_json_length_mismatch_is_bad_input():
    cert = {"label": [0, 1], "prediction": [0, 0], "gap": [1.0, 2.0], "margin": [1.0, -2.0], "radius": [0.5, 0.1]}
    with pytest.raises(BadInputError, match="min_adv_distance has 1 values"):
        per_example_from_json(cert, {"min_adv_distance": [0.1]})


def test_attack_points_take_the_largest_budget():
    attack = {"results": [
        {"attack": "A", "eps": 0.1, "steps": 10, "restarts": 1, "robust_accuracy": 0.9},
        {"attack": "A", "eps": 0.1, "steps": 100, "restarts": 1, "robust_accuracy": 0.7},
        {"attack": "B", "eps": 0.3, "steps": 100, "restarts": 1, "robust_accuracy": 0.25},
    ]}
    assert attack_points_from_json(attack) == {"A": {0.1: pytest.approx(0.3)}, "B": {0.3: 0.75}}


def test_analyse_examples_defaults_per_norm():
    e = ex([0, 0], [0, 0], gap=[1.0, 2.0], radius=[0.5, 1.0], dist=[0.6, 2.0])
    a = analyse_examples(e, norm="l2")
    assert a.eps == (0.0, 0.1, 1.5) and a.bin_eps == 1.5
    assert [c.name for c in a.curves] == ["worst case", "certified"]
    assert a.median_adv_distance == 0.6 and a.median_certified_radius == 0.5
    assert analyse_examples(e, norm="linf").eps == (8 / 255,)
    with pytest.raises(BadInputError):
        analyse_examples(e, norm="l1")


# --------------------------------------------------------------------------- properties


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 5), st.floats(0, 5), st.booleans()), min_size=1, max_size=30),
       st.lists(st.floats(0, 6), min_size=1, max_size=5))
def test_certified_error_bounds_empirical_error_when_sound(points, eps):
    """With d(x) ≥ radius (a sound certificate), certified error ≥ empirical error at every ε."""
    radius = np.array([p[0] for p in points])
    dist = radius + np.array([p[1] for p in points])
    correct = np.array([p[2] for p in points])
    e = ex(np.zeros(len(points), int), np.where(correct, 0, 1), radius=radius, dist=dist)
    emp = error_curve(e.adversarial_distance(), eps)
    cert = 1.0 - certified_accuracy_curve(e, eps)
    assert np.all(cert >= emp - 1e-12)
    assert np.all(np.diff(error_curve(e.adversarial_distance(), sorted(eps))) >= 0)  # monotone
