"""VNN-LIB: the parser's subset and refusals, and verify() against exact answers (by hand, MILP)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("onnx")

from certify.checkpoints import load_model
from certify.errors import BadInputError
from certify.vnnlib import parse_vnnlib, read_vnnlib
from certify.vnnlib.falsify import SearchBudget
from certify.vnnlib.verify import verify
from tests.helpers_vnnlib import (
    box_text,
    declarations,
    forward,
    milp_max,
    mlp_onnx,
    random_weights,
    robustness_vnnlib,
)

# --------------------------------------------------------------------------- parser

ROBUST = """; a robustness property, as VNN-COMP writes them
(declare-const X_0 Real)
(declare-const X_1 Real)
(declare-const Y_0 Real)
(declare-const Y_1 Real)
(declare-const Y_2 Real)
(assert (<= X_0 0.5))
(assert (>= X_0 -0.5))
(assert (and (<= X_1 1e-1) (>= 0 X_1) (>= X_1 -1/10)))
(assert (or
    (and (>= Y_1 Y_0))
    (and (>= Y_2 Y_0))
))
"""


def test_parser_reads_the_robustness_subset() -> None:
    prop = parse_vnnlib(ROBUST)
    assert prop.num_inputs == 2 and prop.num_outputs == 3
    assert prop.lower == (Fraction(-1, 2), Fraction(-1, 10)) and prop.upper == (Fraction(1, 2), Fraction(0))
    assert prop.robustness_label() == 0
    assert prop.unsafe([0.0, 0.0, -1.0]) and not prop.unsafe([0.1, 0.0, 0.0])
    lo, hi = prop.box()
    assert lo[1] <= -0.1 and Fraction(lo[1]) <= Fraction(-1, 10) and hi[0] == 0.5


def test_parser_linear_terms_and_dnf() -> None:
    text = declarations(1, 2) + "(assert (<= X_0 1))\n(assert (>= X_0 0))\n" \
        "(assert (or (and (<= (+ Y_0 (* 2 Y_1)) 3.5) (> (- Y_1 Y_0) -1)) (< Y_0 (- 2))))\n" \
        "(assert (>= (* Y_1 -1) -10))\n"
    prop = parse_vnnlib(text)
    assert len(prop.clauses) == 2 and prop.robustness_label() is None
    assert prop.unsafe([1.0, 1.0])        # 3 ≤ 3.5, 0 > −1, −1 ≥ −10
    assert not prop.unsafe([3.0, 1.0])    # 5 > 3.5 and 3 ≥ −2
    assert prop.unsafe([-3.0, 1.0])       # second clause
    assert not prop.unsafe([-3.0, 11.0])  # the last assertion fails
    assert prop.unsafe([1.5, 1.0]) and not prop.unsafe([1.75, 1.0])  # exact at the border: 1.5 + 2 = 3.5 ≤ 3.5
    strict = parse_vnnlib(declarations(1, 2) + "(assert (<= X_0 1))\n(assert (>= X_0 0))\n(assert (> Y_1 Y_0))\n")
    assert not strict.unsafe([1.0, 1.0]) and strict.unsafe([1.0, 1.5])


@pytest.mark.parametrize("text,match", [
    ("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (<= X_0 1))\n(assert (>= X_0 0))\n"
     "(assert (=> (>= Y_0 0) (<= Y_0 1)))\n", r":5: '\(=> …\)' is not in the supported VNN-LIB subset"),
    ("(define-fun f () Real 1.0)\n", r"'\(define-fun …\)'"),
    ("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n(assert (<= X_0 1))\n"
     "(assert (>= X_0 0))\n(assert (>= (* Y_0 Y_1) 0))\n", "product of two variables"),
    ("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (<= X_0 1))\n(assert (>= X_0 0))\n"
     "(assert (>= Y_0 (+ X_0 1)))\n", r"the term 'X_0' in an output constraint"),
    ("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (<= X_0 1))\n(assert (>= Y_0 0))\n",
     "X_0 needs both a lower and an upper bound"),
    ("(declare-const X_0 Real)\n(declare-const X_2 Real)\n", "without gaps"),
    ("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (<= X_0 1))\n(assert (>= X_0 0))\n"
     "(assert (>= Y_3 0))\n", "Y_3 is used but not declared"),
    ("(declare-const X_0 Int)\n", "expected X_i or Y_j of sort Real"),
    ("(assert (<= X_0 1)", "unbalanced"),
    ("(assert " * 100 + ")" * 100, "nesting deeper"),
    ("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (<= X_0 0))\n(assert (>= X_0 1))\n"
     "(assert (>= Y_0 0))\n", "empty range"),
    ("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (<= X_0 1))\n(assert (>= X_0 0))\n"
     "(assert (or (and (<= X_0 0.5) (>= Y_0 0)) (>= Y_0 1)))\n", "the term 'X_0' in an output constraint"),
    ("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (<= X_0 1e999))\n", "beyond ±1e30"),
    ("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (<= X_0 1))\n(assert (>= X_0 0))\n"
     "(assert (>= (* 1e20 (* 1e20 Y_0)) 0))\n", "beyond ±1e30"),
], ids=["implies", "define-fun", "nonlinear", "x-in-output", "half-bounded", "gap", "undeclared-y", "int-sort",
        "unbalanced", "deep", "empty-range", "input-disjunction", "huge-bound", "huge-coefficient"])
def test_parser_refuses_outside_the_subset(text: str, match: str) -> None:
    with pytest.raises(BadInputError, match=match) as err:
        parse_vnnlib(text)
    assert err.value.param == "property"


# --------------------------------------------------------------------------- verify, decided by hand


def test_verify_by_hand_on_a_linear_net(tmp_path: Path) -> None:
    """Y_0 = X_0 − X_1, Y_1 = 0 (exactly representable): Y_0 ≥ Y_1 is reachable iff max(X_0 − X_1) ≥ 0."""
    w = [(np.array([[1.0, -1.0], [0.0, 0.0]]), np.zeros(2))]
    model = load_model(mlp_onnx(tmp_path / "lin.onnx", w))
    cases = {((0.0, 1.0), (0.5, 2.0)): "sat",      # X_0 = 1, X_1 = 0.5
             ((0.0, 0.25), (0.5, 2.0)): "unsat",   # X_0 − X_1 ≤ −0.25
             ((0.0, 0.5), (0.5, 2.0)): "sat"}      # only the corner X_0 = X_1 = 0.5 (Y_0 = 0 ≥ 0)
    for (x0, x1), expected in cases.items():
        text = declarations(2, 2) + box_text(np.array([x0[0], x1[0]]), np.array([x0[1], x1[1]])) + \
            "(assert (>= Y_0 Y_1))\n"
        result = verify(model, parse_vnnlib(text), timeout=30)
        assert result.result in (expected, "unknown"), (x0, x1, result)
        if result.result == "sat":
            ce = result.counterexample
            assert ce.x[0] - ce.x[1] >= 0 and x0[0] <= ce.x[0] <= x0[1] and x1[0] <= ce.x[1] <= x1[1]
            assert ce.checked_by == ("torch", "onnxruntime")
            assert result.vnncomp().startswith("sat\n((X_0 ") and "(Y_1 " in result.vnncomp()
    # the corner case is found by the attack (it starts at the centre and the gradient points to the corner)
    text = declarations(2, 2) + box_text(np.array([0.0, 0.5]), np.array([0.5, 2.0])) + "(assert (>= Y_0 Y_1))\n"
    assert verify(model, parse_vnnlib(text), timeout=30).result == "sat"


def test_verify_robustness_unsat_and_sat_by_hand(tmp_path: Path) -> None:
    """Y = (X_0, X_1, 0.5): label 0 on X_0 ∈ [0.9, 1], X_1 ∈ [0, 0.1] is robust; widen X_1 to [0, 0.95] and it is not."""
    w = [(np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]), np.array([0.0, 0.0, 0.5]))]
    model = load_model(mlp_onnx(tmp_path / "id.onnx", w))
    robust = robustness_vnnlib(np.array([0.9, 0.0]), np.array([1.0, 0.1]), 3, 0)
    assert verify(model, parse_vnnlib(robust), timeout=30).result == "unsat"
    broken = robustness_vnnlib(np.array([0.9, 0.0]), np.array([1.0, 0.95]), 3, 0)
    result = verify(model, parse_vnnlib(broken), timeout=30)
    assert result.result == "sat" and result.counterexample.y[1] >= result.counterexample.y[0]


# --------------------------------------------------------------------------- verify against MILP


@pytest.mark.parametrize("seed", range(3))
def test_verify_never_contradicts_milp(tmp_path: Path, seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    weights = [(w.astype(np.float32).astype(np.float64), b.astype(np.float32).astype(np.float64))
               for w, b in random_weights([3, 10, 8, 4], seed)]
    model = load_model(mlp_onnx(tmp_path / f"net{seed}.onnx", weights))
    tally = {"sat": 0, "unsat": 0, "unknown": 0, "timeout": 0}
    for case in range(8):
        centre = rng.uniform(-1, 1, 3)
        eps = float(rng.choice([0.002, 0.005, 0.5, 1.0]))
        lo, hi = centre - eps, centre + eps
        label = int(np.argmax(forward(weights, centre)))
        prop = parse_vnnlib(robustness_vnnlib(lo, hi, 4, label))
        lo_f, hi_f = (np.array(v) for v in prop.box())
        worst = max(milp_max(weights, lo_f, hi_f, np.eye(4)[j] - np.eye(4)[label]) for j in range(4) if j != label)
        result = verify(model, prop, timeout=30, seed=case, budget=SearchBudget(rounds=2))
        tally[result.result] += 1
        if abs(worst) < 1e-4:
            continue  # too close to call in float64
        if result.result == "unsat":
            assert worst < 0, f"unsat returned but MILP finds margin {worst}"
        if worst > 0.05:
            assert result.result == "sat", f"PGD missed a violation of margin {worst}: {result}"
        if result.result == "sat":
            x = np.array(result.counterexample.x)
            assert np.all(x >= lo_f) and np.all(x <= hi_f)
            y = forward(weights, x)
            assert max(y[j] - y[label] for j in range(4) if j != label) >= -1e-5
            assert worst >= -1e-5
    assert tally["timeout"] == 0 and tally["sat"] >= 1 and tally["unsat"] >= 1, tally


@pytest.mark.parametrize("seed", range(2))
def test_general_linear_constraints_against_milp(tmp_path: Path, seed: int) -> None:
    """Disjunctions of single linear atoms a·Y ≤ b: unsat only where MILP shows every min a·y > b."""
    rng = np.random.default_rng(200 + seed)
    weights = [(w.astype(np.float32).astype(np.float64), b.astype(np.float32).astype(np.float64))
               for w, b in random_weights([3, 8, 3], 10 + seed)]
    model = load_model(mlp_onnx(tmp_path / f"lin{seed}.onnx", weights))
    tally = {"sat": 0, "unsat": 0, "unknown": 0, "timeout": 0}
    for case in range(10):
        centre, eps = rng.uniform(-1, 1, 3), float(rng.choice([0.01, 0.05, 0.3]))
        lo, hi = centre - eps, centre + eps
        atoms = [(rng.integers(-2, 3, 3).astype(float), 0.0) for _ in range(2)]
        atoms = [(a, float(a @ forward(weights, centre)) - float(rng.uniform(0.02, 1.0))) for a, _ in atoms]
        text = declarations(3, 3) + box_text(lo, hi) + "(assert (or " + " ".join(
            "(<= (+ " + " ".join(f"(* {int(c)} Y_{k})" for k, c in enumerate(a)) + f") {b!r})" for a, b in atoms) + "))\n"
        prop = parse_vnnlib(text)
        lo_f, hi_f = (np.array(v) for v in prop.box())
        mins = [-milp_max(weights, lo_f, hi_f, -a) - b for a, b in atoms]  # min a·y − b per atom
        result = verify(model, prop, timeout=30, seed=case, budget=SearchBudget(rounds=2))
        tally[result.result] += 1
        if min(abs(m) for m in mins) < 1e-4:
            continue
        if result.result == "unsat":
            assert min(mins) > 0, f"unsat returned but MILP reaches an atom: {mins}"
        if result.result == "sat":
            assert min(mins) <= 1e-5
            ce = result.counterexample
            y = forward(weights, np.array(ce.x))
            assert any(a @ y <= b + 1e-5 for a, b in atoms)
        if min(mins) < -0.05:
            assert result.result == "sat", (mins, result)
    assert tally["timeout"] == 0 and tally["unsat"] + tally["sat"] >= 3, tally


def test_a_reachable_linear_atom_is_never_unsat(tmp_path: Path) -> None:
    """Y_0 + 2·Y_1 ≤ −100 is far out of reach on a small box (proved), and within reach once b is raised."""
    weights = random_weights([2, 6, 3], 7)
    model = load_model(mlp_onnx(tmp_path / "g.onnx", weights))
    box = declarations(2, 3) + box_text(np.array([-0.1, -0.1]), np.array([0.1, 0.1]))
    far = verify(model, parse_vnnlib(box + "(assert (<= (+ Y_0 (* 2 Y_1)) -100))\n"), timeout=30)
    assert far.result == "unsat" and "every unsafe clause excluded" in far.reason
    near = verify(model, parse_vnnlib(box + "(assert (<= (+ Y_0 (* 2 Y_1)) 100))\n"), timeout=30)
    assert near.result == "sat"


def test_verify_refuses_a_property_that_does_not_fit_the_model(tmp_path: Path) -> None:
    model = load_model(mlp_onnx(tmp_path / "m.onnx", random_weights([3, 4, 2], 0)))
    with pytest.raises(BadInputError, match="declares 2 inputs but the model takes"):
        verify(model, parse_vnnlib(robustness_vnnlib(np.zeros(2), np.ones(2), 2, 0)), timeout=10)
    with pytest.raises(BadInputError, match="declares 3 outputs but the model gives 2"):
        verify(model, parse_vnnlib(robustness_vnnlib(np.zeros(3), np.ones(3), 3, 0)), timeout=10)


def test_read_vnnlib_from_a_file(tmp_path: Path) -> None:
    (tmp_path / "p.vnnlib").write_text(ROBUST)
    assert read_vnnlib(tmp_path / "p.vnnlib").num_inputs == 2
    with pytest.raises(BadInputError, match="does not exist"):
        read_vnnlib(tmp_path / "nope.vnnlib")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.tuples(st.lists(st.integers(-3, 3), min_size=3, max_size=3), st.integers(-5, 5),
                                   st.sampled_from(["<=", ">=", "<", ">"])), min_size=1, max_size=3),
                min_size=1, max_size=3),
       st.lists(st.integers(-8, 8), min_size=3, max_size=3))
def test_parsed_output_condition_agrees_with_direct_evaluation(clauses, y) -> None:  # type: ignore[no-untyped-def]
    """An or of ands of random integer linear atoms, written in VNN-LIB syntax, means what it says."""
    def term(coeffs: list[int]) -> str:
        return "(+ " + " ".join(f"(* {c} Y_{j})" for j, c in enumerate(coeffs)) + ")"

    body = " ".join("(and " + " ".join(f"({op} {term(c)} {b})" for c, b, op in clause) + ")" for clause in clauses)
    prop = parse_vnnlib(declarations(1, 3) + "(assert (<= X_0 1))\n(assert (>= X_0 0))\n" + f"(assert (or {body}))\n")
    ops = {"<=": lambda a, b: a <= b, ">=": lambda a, b: a >= b, "<": lambda a, b: a < b, ">": lambda a, b: a > b}
    expected = any(all(ops[op](sum(ci * yi for ci, yi in zip(c, y)), b) for c, b, op in clause) for clause in clauses)
    assert prop.unsafe([float(v) for v in y]) == expected


def test_a_tiny_time_limit_answers_timeout(tmp_path: Path) -> None:
    model = load_model(mlp_onnx(tmp_path / "t.onnx", random_weights([3, 8, 3], 1)))
    prop = parse_vnnlib(robustness_vnnlib(np.full(3, -0.3), np.full(3, 0.3), 3, 0))
    result = verify(model, prop, timeout=1e-4)
    assert result.result == "timeout" and result.counterexample is None and result.vnncomp() == "timeout\n"
    with pytest.raises(BadInputError, match="timeout must be a positive"):
        verify(model, prop, timeout=0)


def test_verify_works_on_a_torch_export_model(tmp_path: Path) -> None:
    """Not only ONNX: a .pt2 with a 1×2×1 input; X_0, X_1 fill it row-major; counterexamples checked by torch."""
    import torch

    from certify import ModelMetadata, save_model

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2, 3))
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
        net[1].bias.copy_(torch.tensor([0.0, 0.0, 0.5]))
    path = save_model(net, tmp_path / "id.pt2", ModelMetadata(input_shape=(1, 2, 1)),
                      example_input=torch.zeros(2, 1, 2, 1))
    model = load_model(path)
    robust = verify(model, parse_vnnlib(robustness_vnnlib(np.array([0.9, 0.0]), np.array([1.0, 0.1]), 3, 0)), 30)
    assert robust.result == "unsat"
    broken = verify(model, parse_vnnlib(robustness_vnnlib(np.array([0.9, 0.0]), np.array([1.0, 0.95]), 3, 0)), 30)
    assert broken.result == "sat" and broken.counterexample.checked_by == ("torch",)
