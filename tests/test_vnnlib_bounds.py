"""VNN-LIB proofs by bound propagation (certify/vnnlib/bound_proof.py): CROWN proves robustness
properties the Lipschitz proof cannot, and never says unsat where MILP or an attack finds a violation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from certify import ModelMetadata, save_model
from certify.checkpoints import load_model
from certify.vnnlib import parse_vnnlib
from certify.vnnlib.bound_proof import prove_by_bounds
from certify.vnnlib.falsify import SearchBudget
from certify.vnnlib.proof import ball_of, prove
from certify.vnnlib.verify import verify
from tests.helpers_vnnlib import forward, milp_max, random_weights, robustness_vnnlib


pytestmark = pytest.mark.usefixtures("one_thread")


def _pt2(path: Path, weights: list[tuple[np.ndarray, np.ndarray]]):  # type: ignore[no-untyped-def]
    """The MLP of ``weights`` (ReLU between layers) as a torch.export model with nn.Linear layers."""
    layers: list[torch.nn.Module] = [torch.nn.Flatten()]
    for i, (w, b) in enumerate(weights):
        lin = torch.nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(w))
            lin.bias.copy_(torch.from_numpy(b))
        layers += [lin] + ([torch.nn.ReLU()] if i + 1 < len(weights) else [])
    n = weights[0][0].shape[1]
    save_model(torch.nn.Sequential(*layers).eval(), path, ModelMetadata(input_shape=(n,)),
               example_input=torch.zeros(2, n))
    return load_model(path)


def _weights(seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(w.astype(np.float32).astype(np.float64), b.astype(np.float32).astype(np.float64))
            for w, b in random_weights([3, 10, 8, 4], seed)]


def test_crown_proves_what_lipschitz_cannot(tmp_path: Path) -> None:
    weights = _weights(1)
    model = _pt2(tmp_path / "m.pt2", weights)
    rng = np.random.default_rng(7)
    proved_by_bounds = 0
    for _ in range(12):
        centre = rng.uniform(-1, 1, 3)
        label = int(np.argmax(forward(weights, centre)))
        for eps in (0.01, 0.03):
            prop = parse_vnnlib(robustness_vnnlib(centre - eps, centre + eps, 4, label))
            lip, _ = prove(model, prop, (3,))
            if lip:
                continue
            result = verify(model, prop, timeout=30, budget=SearchBudget(rounds=1))
            if result.result == "unsat":
                assert result.method in ("crown", "alpha-crown")
                lo, hi = (np.array(v) for v in prop.box())
                worst = max(milp_max(weights, lo, hi, np.eye(4)[j] - np.eye(4)[label]) for j in range(4) if j != label)
                assert worst < 0, f"unsat by {result.method} but MILP finds margin {worst}"
                proved_by_bounds += 1
        if proved_by_bounds >= 2:
            break
    assert proved_by_bounds >= 1


@pytest.mark.parametrize("seed", [0] + [pytest.param(s, marks=pytest.mark.slow) for s in (1, 2, 3, 4)])
def test_bounds_never_prove_a_property_with_a_counterexample(tmp_path: Path, seed: int) -> None:
    """Fuzz: boxes from tiny to wide on small random nets; where MILP finds the unsafe region reachable,
    or verify finds a counterexample, the bound proof must fail."""
    weights = _weights(10 + seed)
    model = _pt2(tmp_path / f"m{seed}.pt2", weights)
    rng = np.random.default_rng(seed)
    tally = {True: 0, False: 0}
    for _ in range(10):
        centre = rng.uniform(-1, 1, 3)
        label = int(np.argmax(forward(weights, centre)))
        eps = float(rng.choice([0.001, 0.01, 0.05, 0.2, 0.6]))
        prop = parse_vnnlib(robustness_vnnlib(centre - eps, centre + eps, 4, label))
        lo, hi = (np.array(v) for v in prop.box())
        worst = max(milp_max(weights, lo, hi, np.eye(4)[j] - np.eye(4)[label]) for j in range(4) if j != label)
        proved, _, _ = prove_by_bounds(model, prop, (3,), ball_of(prop))
        tally[proved] += 1
        if worst >= 0:
            assert not proved, f"bounds prove a property MILP breaks (margin {worst})"
        result = verify(model, prop, timeout=30, budget=SearchBudget(rounds=1))
        if result.result == "sat":
            assert not proved
    assert tally[True] >= 1, tally


def test_bounds_prove_only_robustness_properties(tmp_path: Path) -> None:
    from tests.helpers_vnnlib import box_text, declarations

    model = _pt2(tmp_path / "m.pt2", _weights(0))
    text = declarations(3, 4) + box_text(np.zeros(3), np.full(3, 0.01)) + "(assert (>= Y_0 100.0))\n"
    proved, why, _ = prove_by_bounds(model, parse_vnnlib(text), (3,), ball_of(parse_vnnlib(text)))
    assert not proved and "robustness" in why
