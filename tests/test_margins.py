"""Gaps, margins and radii: hand-computed values and properties."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from certify.errors import BadInputError
from certify.margins import (
    CERTIFICATES,
    certified_mask,
    convert_radius,
    float_safety,
    logit_stats,
    pairwise_radius,
    radius_from_gap,
)


def test_gap_margin_prediction_by_hand():
    logits = torch.tensor([[3.0, 1.0, 0.5], [0.0, 2.0, 1.5]])
    labels = torch.tensor([0, 0])
    s = logit_stats(logits, labels)
    assert s.prediction.tolist() == [0, 1]
    assert s.gap.dtype == torch.float64
    assert s.gap.tolist() == pytest.approx([2.0, 0.5])
    # label 0 on the second row: y_0 - max(y_1, y_2) = 0 - 2 = -2 (misclassified → negative)
    assert s.margin.tolist() == pytest.approx([2.0, -2.0])


@pytest.mark.parametrize(
    "name, divisor",
    [("l2-multi", 2.0), ("l2-single", math.sqrt(2.0)), ("linf-dist", 2.0)],
)
def test_radius_formulas(name, divisor):
    gap = torch.tensor([1.0, 3.0], dtype=torch.float64)
    r = radius_from_gap(gap, 0.0, CERTIFICATES[name].divisor, 1.0)
    assert r.tolist() == pytest.approx([1.0 / divisor, 3.0 / divisor], rel=1e-15)
    r_l = radius_from_gap(gap, 0.0, CERTIFICATES[name].divisor, 4.0)
    assert r_l.tolist() == pytest.approx([0.25 / divisor, 0.75 / divisor], rel=1e-15)


def test_strict_comparison_at_boundary():
    radius = torch.tensor([0.5, 0.5000001, 0.4999999], dtype=torch.float64)
    correct = torch.tensor([True, True, True])
    assert certified_mask(radius, correct, 0.5).tolist() == [False, True, False]


def test_misclassified_points_are_never_certified():
    radius = torch.tensor([10.0], dtype=torch.float64)
    assert certified_mask(radius, torch.tensor([False]), 0.1).tolist() == [False]


def test_float_safety_keeps_exact_boundary_uncertified():
    # gap exactly 2*eps in float32 → radius would equal eps; the safety margin pushes it below
    logits = torch.tensor([[1.0, 0.0]], dtype=torch.float32)
    s = logit_stats(logits, torch.tensor([0]))
    r = radius_from_gap(s.gap, s.safety, 2.0, 1.0)
    assert r.item() < 0.5
    assert r.item() > 0.5 - 1e-4
    assert not certified_mask(r, torch.tensor([True]), 0.5).item()


def test_safety_is_smaller_for_float64():
    y = torch.tensor([[10.0, 1.0]])
    assert float_safety(y.double()).item() < float_safety(y).item() * 1e-6


def test_pairwise_radius_by_hand():
    logits = torch.tensor([[3.0, 1.0, 0.0]], dtype=torch.float64)
    lij = torch.tensor([[0.0, 2.0, 1.0], [2.0, 0.0, 1.0], [1.0, 1.0, 0.0]], dtype=torch.float64)
    r = pairwise_radius(logits, torch.tensor([0]), lij, torch.zeros(1, dtype=torch.float64))
    # min((3-1)/2, (3-0)/1) = 1
    assert r.item() == pytest.approx(1.0)


def test_norm_conversion():
    r = torch.tensor([2.0], dtype=torch.float64)
    assert convert_radius(r, "l2", "linf", 4).item() == pytest.approx(1.0)
    assert convert_radius(r, "linf", "l2", 4).item() == pytest.approx(2.0)


def test_rejects_bad_inputs():
    with pytest.raises(BadInputError):
        radius_from_gap(torch.ones(1), 0.0, 2.0, 0.0)
    with pytest.raises(BadInputError):
        logit_stats(torch.ones(3), torch.zeros(3, dtype=torch.long))


gaps = st.floats(min_value=0.0, max_value=1e4, allow_nan=False)
consts = st.floats(min_value=1e-3, max_value=1e3, allow_nan=False)


@given(g=gaps, L=consts, name=st.sampled_from(sorted(CERTIFICATES)))
def test_radius_never_negative(g, L, name):
    r = radius_from_gap(torch.tensor([g], dtype=torch.float64), 1e-6, CERTIFICATES[name].divisor, L)
    assert r.item() >= 0.0


@given(g1=gaps, g2=gaps, L=consts)
def test_radius_monotone_in_gap(g1, g2, L):
    lo, hi = sorted((g1, g2))
    r = radius_from_gap(torch.tensor([lo, hi], dtype=torch.float64), 1e-6, 2.0, L)
    assert r[0].item() <= r[1].item()


@given(g=gaps, L=consts, k=st.floats(min_value=1.0, max_value=100.0))
@settings(max_examples=50)
def test_radius_scales_as_one_over_L(g, L, k):
    gap = torch.tensor([g], dtype=torch.float64)
    r1 = radius_from_gap(gap, 0.0, 2.0, L).item()
    rk = radius_from_gap(gap, 0.0, 2.0, L * k).item()
    assert rk == pytest.approx(r1 / k, rel=1e-12, abs=1e-300)


@given(st.lists(st.floats(min_value=-50, max_value=50, allow_nan=False), min_size=2, max_size=8))
def test_gap_is_nonnegative_and_margin_bounded_by_gap(values):
    y = torch.tensor([values], dtype=torch.float32)
    for label in range(len(values)):
        s = logit_stats(y, torch.tensor([label]))
        assert s.gap.item() >= 0.0
        assert s.margin.item() <= s.gap.item() + 1e-12
