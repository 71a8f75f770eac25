"""The differential fuzzer of the Lipschitz rules (tests/fuzz_rules.py), the permanent guard of
the rules' soundness (docs/soundness.md): for every rule in the registry, random graphs around its
op, with random and adversarial arguments, must get bounds at or above float64 lower bounds on the truth (global, per logit and
pairwise, in L2 and ℓ∞), or a refusal; and certified points must survive attacks inside their radii.

Profiles: the default run draws ``LIPCERT_FUZZ_SEEDS`` (4) networks per op; the ``slow`` run draws
10× more.  A failure message names the op, the seed and the drawn arguments, which reproduce it:
``build(op, seed)``.
"""

from __future__ import annotations

import importlib
import os

import numpy as np
import pytest
import torch

from attacks import run_batched
from attacks.pgd import MarginPGD
from certify.certificates import certify
from certify.data import Dataset
from certify.lipschitz import RULES
from certify.lipschitz.analysis import analyse_with_forward

from .fuzz_rules import CASES, SHAPE, Trial, build, difference_quotients, graph_ops, loaded, truth

SEEDS = int(os.environ.get("LIPCERT_FUZZ_SEEDS", "4"))
TOL = 1e-6

#: ops whose every drawn use is refused by design (each test below says why a refusal is right)
ALWAYS_REFUSED = {
    "aten.sum.default": "reduces over the batch dimension",
    "aten.mean.default": "reduces over the batch dimension",
    "aten.max.default": "reduces over the batch dimension",
    "aten.min.default": "reduces over the batch dimension",
    "aten.t.default": "transposes a batch of vectors, so the batch is no longer the leading dimension",
}


def test_fuzzer_covers_exactly_the_rule_registry() -> None:
    assert set(CASES) == set(RULES), (
        f"rules without a fuzz case: {sorted(set(RULES) - set(CASES))}; "
        f"fuzz cases without a rule: {sorted(set(CASES) - set(RULES))}")
    assert set(ALWAYS_REFUSED) <= set(RULES)


def _check_bounds(trial: Trial, norm: str, report, forward, seed: int) -> list[str]:  # type: ignore[no-untyped-def]
    bad: list[str] = []
    t = truth(trial.net, norm, seed)
    slack = 1 + TOL
    if t.glob > report.global_bound * slack + 1e-12:
        bad.append(f"global {t.glob:.6g} > bound {report.global_bound:.6g}")
    per = np.asarray(report.per_logit_bounds)
    pairs = np.asarray(report.pair_bounds)
    for i in np.flatnonzero(t.per_logit > per * slack + 1e-12):
        bad.append(f"logit {i}: {t.per_logit[i]:.6g} > bound {per[i]:.6g}")
    for i, j in zip(*np.nonzero(t.pairs > pairs * slack + 1e-12)):
        bad.append(f"pair {i},{j}: {t.pairs[i, j]:.6g} > bound {pairs[i, j]:.6g}")
    fwd = forward.for_batch(32)
    if fwd is not None:
        for dist, diff, allow in difference_quotients(trial.net, norm, seed, fwd):
            worst = diff - (per * dist * slack + allow)
            if (worst > 1e-12).any():
                i = int(np.argmax(worst))
                bad.append(f"|Δf_{i}| = {diff[i]:.6g} over a step of {dist:.3g} exceeds "
                           f"{per[i]:.6g}·step + allowance {allow:.3g}")
                break
    return bad


def _attack_certified(trial: Trial, norm: str, seed: int, n: int = 16) -> tuple[int, list[str]]:
    """Certify n points with auto (the verified pairwise rule), then attack each certified point at
    0.999·radius with a margin-loss PGD and with random search; any success is a violation."""
    net = trial.net
    gen = torch.Generator().manual_seed(seed + 11)
    x = 0.2 + 0.6 * torch.rand(n, *SHAPE, generator=gen)
    with torch.no_grad():
        y = net(x).argmax(dim=1)
    report = certify(loaded(net, trial.exported), Dataset(x, y, "fuzz", "test"), norm=norm, eps=[1e-3],
                     certificate="auto")
    ex = report.examples
    # radii beyond the box's diameter (4 here) cover the whole box: attack at 10 instead (and in float32)
    rad = np.minimum(ex.radius, 10.0)
    idx = np.flatnonzero(ex.correct & (rad.astype(np.float32) * 0.999 > 0))
    if idx.size == 0:
        return 0, []
    t = torch.from_numpy(idx)
    radius = torch.from_numpy(rad[idx]).float() * 0.999
    xs, ys = x[t], y[t]
    out = run_batched(MarginPGD(steps=30, restarts=1), net, xs, ys, norm=norm, eps=radius, bounds=(0.0, 1.0),
                      seed=seed, batch_size=64, device=torch.device("cpu"))
    bad = [f"point {int(idx[j])}: PGD at {float(out.distance[j]):.6g} inside radius {float(radius[j]):.6g}"
           for j in np.flatnonzero(out.success.numpy())]
    # random search: points on the sphere of radius 0.999·r (clipped to the box: still inside)
    for _ in range(4):
        noise = torch.randn(len(idx), *SHAPE, generator=gen) if norm == "l2" else \
            torch.sign(torch.randn(len(idx), *SHAPE, generator=gen))
        flat = noise.flatten(1)
        size = flat.norm(dim=1) if norm == "l2" else flat.abs().amax(dim=1)
        cand = (xs + noise * (radius / size).view(-1, 1, 1, 1)).clamp(0, 1)
        with torch.no_grad():
            flipped = net(cand).argmax(dim=1) != ys
        bad += [f"point {int(idx[j])}: random search flipped it inside radius {float(radius[j]):.6g}"
                for j in np.flatnonzero(flipped.numpy())]
    return len(idx), bad


def _fuzz(op: str, seeds: range) -> None:
    seen_op = verified = attacked = 0
    problems: list[str] = []
    for seed in seeds:
        trial = build(op, seed)
        if trial is None:
            continue
        if op in graph_ops(trial):
            seen_op += 1
        for norm in ("l2", "linf"):
            report, forward = analyse_with_forward(loaded(trial.net, trial.exported), norm=norm)
            if not report.verified:
                continue
            verified += 1
            problems += [f"{trial!r} {norm}: {p}" for p in _check_bounds(trial, norm, report, forward, seed)]
            if verified <= 2:  # end to end on the first verified draws
                count, bad = _attack_certified(trial, norm, seed)
                attacked += count
                problems += [f"{trial!r} {norm}: {p}" for p in bad]
    assert not problems, "\n".join(problems[:20])
    assert seen_op, f"no draw of the fuzz case put {op} in the exported graph"
    if op in ALWAYS_REFUSED:
        assert verified == 0, f"{op} was verified although it {ALWAYS_REFUSED[op]}"
    else:
        assert verified, f"no draw around {op} was verified: the fuzz case tests nothing"


@pytest.mark.parametrize("op", sorted(CASES))
def test_rule_is_sound_on_random_graphs(op: str) -> None:
    _fuzz(op, range(SEEDS))


@pytest.mark.slow
@pytest.mark.parametrize("op", sorted(CASES))
def test_rule_is_sound_on_random_graphs_slow_profile(op: str) -> None:
    _fuzz(op, range(SEEDS, 11 * SEEDS))


@pytest.mark.parametrize("op", sorted(op for op in CASES if "conv" in op))
def test_conv_rules_are_sound_through_the_fourier_window_and_schur_bounds(op: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The same fuzz with the dense certificate off and the refinement (the window bound with top
    directions) forced on every layer it applies to, so the Fourier, window and Schur bounds decide."""
    conv_l2_module = importlib.import_module("certify.lipschitz.operator_norms.conv_l2")
    monkeypatch.setenv("LIPCERT_CONV_EXACT_FLOPS", "0")
    monkeypatch.setattr(conv_l2_module, "EXACT_TRIGGER", -1.0)
    _fuzz(op, range(SEEDS))
