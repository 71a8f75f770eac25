"""Soundness: no attack ever finds an adversarial example strictly inside a certified radius.

Models are Lipschitz by construction (orthonormal / normalised linear layers, normalised
convolutions, L2NNN-style two-sided ReLU, ℓ∞-dist neurons), saved with torch.export and a
declared claim that the analyser verifies before certify uses it (or with no claim, so certify
picks the verified pairwise rule).  Every certified point is attacked with PGD (CE and margin
loss) at ε = 0.999·radius and with minimum-norm attacks (FMN; C&W in L2 for the slow suite).

Boundary cases: points whose gap is built so the radius equals ε exactly are never certified
at that ε (strict >, plus the float safety margin), for float32 and float64 logits.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from certify.certificates import CertificatePlan, certify
from certify.checkpoints import LipschitzClaim
from certify.data import Dataset
from certify.margins import CERTIFICATES, certified_mask, logit_stats, radius_from_gap

from .helpers_attacks import loaded
from .helpers_soundness import FAMILIES, Spec, check_model

specs = st.builds(Spec, family=st.sampled_from(sorted(FAMILIES)), width=st.integers(8, 32),
                  depth=st.integers(0, 2), seed=st.integers(0, 10_000), declare=st.booleans())


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=specs)
def test_no_attack_succeeds_inside_certified_radius(spec, tmp_path):
    result = check_model(spec, tmp_path, n=24, steps=20)
    assert result.verified, "the claim must be verified from the weights, not assumed"
    assert result.violations == ()


@pytest.mark.parametrize("spec", [Spec("orthonormal-mlp", 16, 0, 1, declare=False), Spec("linf-dist", 16, 1, 2)],
                         ids=repr)
def test_attacks_reach_the_boundary_of_tight_certificates(spec, tmp_path):
    """Where the certificate is tight (a linear model with pairwise radii; ℓ∞-dist neurons), the
    minimum-norm attack lands within 2% of the radius: the attacks are strong enough for a
    zero-violation result to mean something."""
    result = check_model(spec, tmp_path, n=64, steps=100)
    assert result.violations == ()
    assert 1.0 <= result.closest < 1.02


SLOW_SPECS = [Spec(fam, width, depth, seed, declare)
              for fam in sorted(FAMILIES)
              for (width, depth, seed, declare) in [(8, 0, 11, True), (16, 1, 12, False), (24, 1, 13, True),
                                                    (32, 2, 14, False), (16, 2, 15, True), (40, 3, 16, True)]]


@pytest.mark.slow
def test_soundness_suite_many_models(tmp_path, capsys):
    """≥ 10⁴ attacked certified points from ≥ 20 models, 0 violations."""
    t0 = time.perf_counter()
    results = [check_model(spec, tmp_path, n=500, steps=100, restarts=2, strong=True) for spec in SLOW_SPECS]
    points = sum(r.attacked for r in results)
    violations = [v for r in results for v in r.violations]
    wall = time.perf_counter() - t0
    with capsys.disabled():
        print(f"\nsoundness suite: {points} attacked certified points from {len(results)} models "
              f"({len({r.certificate for r in results})} certificate rules), {len(violations)} violations, "
              f"{wall:.0f} s wall; closest min-norm adversarial / radius = {min(r.closest for r in results):.4f}")
    assert all(r.verified for r in results)
    assert violations == []
    assert len(results) >= 20 and points >= 10_000


# --------------------------------------------------------------------------- boundary: radius == ε


class Offsets(nn.Module):
    """y = x[:, :K] + b computed in ``dtype``: identity rows are unit in L2 and ℓ1, so each logit is
    1-Lipschitz (L2 and ℓ∞), the logit vector too; at x = 0 the logits are exactly b."""

    def __init__(self, b: torch.Tensor, dtype: torch.dtype):
        super().__init__()
        self.lin = nn.Linear(4, b.numel(), dtype=dtype)
        with torch.no_grad():
            self.lin.weight.copy_(torch.eye(4, dtype=dtype)[: b.numel()])
            self.lin.bias.copy_(b.to(dtype))
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x.flatten(1).to(self.dtype))


DTYPES = [torch.float32, torch.float64]
RULES = {"l2-multi": LipschitzClaim("l2", "per-logit"), "l2-single": LipschitzClaim("l2", "vector"),
         "linf-dist": LipschitzClaim("linf", "vector")}


def exact_eps(gap: float, dtype: torch.dtype, rule: str) -> tuple[torch.Tensor, float]:
    """Logits with this gap in ``dtype``, and the ε that equals their radius without any safety margin."""
    logits = torch.tensor([[gap, 0.0, -1.0]], dtype=dtype)
    g = logits[0, 0].to(torch.float64) - logits[0, 1].to(torch.float64)
    eps = float(radius_from_gap(g.view(1), 0.0, CERTIFICATES[rule].divisor, 1.0))
    return logits, eps


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("rule", sorted(RULES))
@given(gap=st.floats(1e-3, 8.0, allow_nan=False))
@settings(max_examples=40, deadline=None)
def test_radius_equal_to_eps_is_not_certified(rule, dtype, gap):
    logits, eps = exact_eps(gap, dtype, rule)
    stats = logit_stats(logits, torch.tensor([0]))
    kind = CERTIFICATES[rule]
    plan = CertificatePlan(rule, kind.norm, kind.norm, kind.divisor, 1.0, True, "verified", "test")
    r = plan.radii(logits, stats)
    assert radius_from_gap(stats.gap, 0.0, kind.divisor, 1.0).item() == eps  # the construction is exact
    assert not certified_mask(torch.tensor([eps], dtype=torch.float64), torch.tensor([True]), eps).item()  # strict
    assert r.item() < eps  # the safety margin takes it below
    assert not certified_mask(r, torch.tensor([True]), eps).item()
    assert eps - r.item() <= stats.safety.item() / kind.divisor + 4 * math.ulp(eps)  # …and only the margin


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("rule", sorted(RULES))
def test_end_to_end_boundary_points_are_not_certified(rule, dtype, tmp_path):
    """Through certify(): saved model, verified claim, data at x = 0 whose radius is exactly ε."""
    gaps = [0.1, 0.3, 1.0, 2.0 / 3.0, 1.7]
    for i, gap in enumerate(gaps):
        logits, eps = exact_eps(gap, dtype, rule)
        model = loaded(Offsets(logits[0], dtype), tmp_path / f"m{i}.pt2", (1, 2, 2), RULES[rule])
        data = Dataset(torch.zeros(2, 1, 2, 2), torch.zeros(2, dtype=torch.long), "boundary", "test")
        below = math.nextafter(eps, 0.0) * (1 - 1e-3)
        report = certify(model, data, norm=RULES[rule].norm, eps=[eps, below], certificate=rule)
        assert report.plan.lipschitz_verified
        at, under = report.results
        assert at.certified_count == 0, (gap, eps, report.examples.radius)
        assert under.certified_count == 2
        assert np.all(report.examples.radius < eps)
