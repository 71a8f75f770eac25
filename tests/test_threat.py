"""The threat model: Norm objects against their definitions, one ε parser, errors in values."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from certify.errors import BadInputError, in_terms_of
from certify.threat import NORMS, Norm, Threat, parse_eps, parse_eps_list

shapes = st.tuples(st.integers(1, 4), st.integers(1, 3), st.integers(1, 5))


@st.composite
def batches(draw):
    shape = draw(shapes)
    seed = draw(st.integers(0, 2**31 - 1))
    scale = draw(st.floats(1e-3, 1e3))
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale


@given(batches(), st.sampled_from(list(Norm)), st.floats(1e-3, 10.0))
@settings(max_examples=60, deadline=None)
def test_project_lands_in_the_ball_and_keeps_points_inside(delta, norm, eps):
    e = torch.full((delta.shape[0],), eps, dtype=torch.float64)
    out = norm.project(delta, e)
    assert (norm.distance(out) <= eps * (1 + 1e-12)).all()
    inside = norm.distance(delta) <= eps
    assert torch.equal(out[inside], delta[inside])
    p = 2 if norm is Norm.L2 else math.inf
    assert torch.allclose(norm.distance(delta), torch.linalg.vector_norm(delta.flatten(1), ord=p, dim=1))


@given(batches(), st.sampled_from(list(Norm)))
@settings(max_examples=60, deadline=None)
def test_ascent_is_unit_and_attains_the_dual_norm(grad, norm):
    step = norm.ascent(grad)
    assert torch.allclose(norm.distance(step)[grad.flatten(1).abs().amax(1) > 0], torch.tensor(1.0, dtype=torch.float64))
    dual = torch.linalg.vector_norm(grad.flatten(1), ord=norm.dual_p, dim=1)
    assert torch.allclose((step * grad).flatten(1).sum(1), dual)


@pytest.mark.parametrize("norm", list(Norm))
@pytest.mark.parametrize("n", [1, 2, 7, 784])
def test_conversions_and_kappa_match_their_definitions(norm, n):
    ones = torch.ones(1, n, dtype=torch.float64)
    assert norm.ones(n) == pytest.approx(float(norm.distance(ones)))
    assert norm.dual_ones(n) == pytest.approx(float(torch.linalg.vector_norm(ones, ord=norm.dual_p)))
    e = torch.zeros(1, max(n, 2), dtype=torch.float64)
    e[0, 0], e[0, 1] = 1.0, -1.0
    assert norm.kappa == pytest.approx(float(torch.linalg.vector_norm(e, ord=norm.dual_p)))
    x = torch.randn(200, n, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
    for other in Norm:
        assert (norm.distance(x) <= norm.from_norm(other, n) * other.distance(x) * (1 + 1e-12)).all()


def test_norm_is_its_name_everywhere_a_string_was():
    import json

    assert Norm.parse(" L2 ") is Norm.L2 and Norm.L2 == "l2" and NORMS == ("l2", "linf")
    assert f"{Norm.LINF}" == str(Norm.LINF) == "linf" and json.dumps([Norm.L2]) == '["l2"]'
    with pytest.raises(BadInputError, match="norm must be one of l2, linf; got 'l1'") as err:
        Norm.parse("l1")
    assert err.value.param == "norm"


def test_norm_symbols_for_tables_and_reports():
    assert (Norm.L2.symbol, Norm.LINF.symbol) == ("ℓ₂", "ℓ∞")
    assert (Norm.L2.plain_symbol, Norm.LINF.plain_symbol) == ("ℓ2", "ℓ∞")
    assert (Norm.L2.operator_symbol, Norm.LINF.operator_symbol) == ("ℓ₂→ℓ₂", "ℓ∞→ℓ∞")
    assert Norm.parse("linf").plain_symbol == "ℓ∞"


@pytest.mark.parametrize("values,allow_zero,expected", [
    (["0.5,1", "8/255"], False, (0.5, 1.0, 8 / 255)),
    ([0.25, " 2 "], False, (0.25, 2.0)),
    (["0,0.1"], True, (0.0, 0.1)),
])
def test_parse_eps_accepts(values, allow_zero, expected):
    assert parse_eps(values, allow_zero=allow_zero) == pytest.approx(expected)


@pytest.mark.parametrize("values,allow_zero,message", [
    (["0"], False, "eps must be positive and finite"),
    (["-0.1"], True, "eps must be non-negative and finite"),
    (["inf"], True, "must be non-negative and finite"),
    (["nan"], False, "must be positive and finite"),
    (["1/0"], False, "eps expects numbers like"),
    (["abc"], False, "eps expects numbers like"),
    ([None], False, "eps expects numbers like"),
    (["0.1,0.1"], False, "eps 0.1 is given twice"),
    ([","], False, "give at least one eps value"),
])
def test_parse_eps_rejects_in_values(values, allow_zero, message):
    with pytest.raises(BadInputError, match=message) as err:
        parse_eps(values, allow_zero=allow_zero)
    assert err.value.param == "eps" and "--" not in str(err.value)


def test_threat_parses_once_and_empty_lists_mean_default():
    assert Threat.parse("linf", ["8/255"]) == Threat(Norm.LINF, (8 / 255,))
    assert parse_eps_list([]) is None and parse_eps_list(["0"]) == (0.0,)


@pytest.mark.parametrize("message,param,expected", [
    ("eps must be positive", "eps", "--eps must be positive"),
    ("give at least one eps value", "eps", "give at least one --eps value"),
    ("epsilon is fine; eps is not", "eps", "epsilon is fine; --eps is not"),
    ("batch_size must be at least 1", "batch_size", "--batch-size must be at least 1"),
    ("no such file", "data_source", "--data: no such file"),
    ("unrelated", None, "unrelated"),
    ("steps must be positive", "steps", "steps must be positive"),  # a name the command does not have
    ("'/data/eps/m.pt' has no eps", "eps", "'/data/eps/m.pt' has no --eps"),  # quotes are values
    ("/data/eps/m.pt: eps.yaml lacks eps.", "eps", "/data/eps/m.pt: eps.yaml lacks --eps."),  # paths too
    ("pass eps, or give data_source", ("eps", "data_source"), "pass --eps, or give --data"),
    ("nothing named", ("eps", "data_source"), "--eps: nothing named"),
])
def test_the_cli_names_the_flag_the_library_named_the_value(message, param, expected):
    flags = {"eps": "--eps", "batch_size": "--batch-size", "data_source": "--data"}
    assert in_terms_of(BadInputError(message, param=param), flags) == expected


def test_the_cli_choices_are_the_library_values():
    from certify.certificates.margins import CERTIFICATES
    from certify.defaults import CERTIFICATE_CHOICES

    assert CERTIFICATE_CHOICES == ("auto", *CERTIFICATES)
