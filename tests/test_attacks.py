"""Attacks and evaluate(): properties that must hold for every attack in the registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attacks import ATTACKS, evaluate, run_batched
from attacks.foolbox_attacks import FoolboxPGD
from attacks.pgd import PGD
from certify.checkpoints import LipschitzClaim
from certify.data import Dataset, load_dataset
from certify.threat import Norm
from .helpers_attacks import FMNIST_DIR, blob_data, fit, lipschitz_mlp, loaded

SHAPE = (1, 4, 4)
CASES = [(name, norm.value) for name, cls in ATTACKS.items() for norm in cls.norms]


@pytest.fixture(scope="module")
def lip_model(tmp_path_factory):
    """1-Lipschitz L2→L2 by construction (orthonormal weights), with the claim declared."""
    path = tmp_path_factory.mktemp("lip") / "lip.pt2"
    return loaded(lipschitz_mlp(16, 24, 3, seed=1), path, SHAPE, LipschitzClaim("l2", "vector"))


@pytest.fixture(scope="module")
def fmnist_model(tmp_path_factory):
    """An undefended MLP trained for a few hundred steps on real Fashion-MNIST images."""
    if not FMNIST_DIR.is_dir():
        pytest.skip("Fashion-MNIST is not installed in /usr/share/datasets/fashion-mnist")
    train = load_dataset("fashion-mnist", split="train", limit=5000)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    fit(net, train, steps=300)
    return loaded(net, tmp_path_factory.mktemp("fm") / "fm.pt2", (1, 28, 28), num_classes=10)


@pytest.fixture(scope="module")
def demo():
    return load_dataset("demo", limit=200)


@pytest.mark.parametrize("name,norm", CASES, ids=repr)
def test_attack_never_breaks_a_certificate(lip_model, name, norm):
    """Every attack, on a 1-Lipschitz-by-construction model: nothing inside a certified radius."""
    data = blob_data(48, SHAPE, 3, seed=2)
    report = evaluate(lip_model, data, norm=norm, eps=[0.05, 0.2], attacks=[name], steps=(20,),
                      check_certificates=8, min_distance=False, seed=0)
    assert report.violations == ()
    assert report.certificates_checked > 0
    for w in report.worst_case:  # certified points are counted robust, so robust ≥ certified
        certified = np.sum(report.examples.radius[report.examples.label == report.examples.prediction] > w.eps)
        assert w.robust_count >= certified


@pytest.mark.parametrize("name,norm", CASES, ids=repr)
def test_outcome_is_float_in_bounds_and_in_ball(lip_model, name, norm):
    data = blob_data(16, SHAPE, 3, seed=3)
    cls = ATTACKS[name]
    attack = cls(steps=10) if cls.scales_with_steps else cls()
    out = run_batched(attack, lip_model.module, data.x, data.y, norm=norm, eps=0.3, bounds=(0.0, 1.0), seed=0,
                      batch_size=5, device=torch.device("cpu"))
    assert out.x_adv.dtype == torch.float32 and out.x_adv.shape == data.x.shape
    assert float(out.x_adv.min()) >= 0.0 and float(out.x_adv.max()) <= 1.0
    measured = Norm.parse(norm).distance((out.x_adv - data.x).double())
    found = out.success
    assert torch.allclose(out.distance[found], measured[found], atol=1e-5) or not cls.minimization
    if not cls.minimization:
        assert bool((out.distance[found] <= 0.3).all())
        assert bool((measured <= 0.3 * (1 + 1e-5)).all())
    assert bool(torch.isinf(out.distance[~found]).all())


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000), scale=st.floats(0.3, 1.0), kind=st.sampled_from(["vector", "per-logit"]))
def test_no_attack_succeeds_inside_certified_radius(tmp_path, seed, scale, kind):
    """Random 1-Lipschitz models (weights scaled down: still 1-Lipschitz): no violation, ever."""
    model = loaded(lipschitz_mlp(16, 20, 4, seed=seed, scale=scale), tmp_path / f"m{seed}.pt2", SHAPE,
                   LipschitzClaim("l2", kind))
    data = blob_data(40, SHAPE, 4, seed=seed)
    report = evaluate(model, data, norm="l2", eps=[0.02, 0.1], attacks=["pgd", "ddn", "deepfool"],
                      steps=(30,), check_certificates=10, seed=seed)
    assert report.violations == ()
    ex = report.examples
    found = np.isfinite(ex.min_adv_distance) & (ex.label == ex.prediction)
    assert bool((ex.min_adv_distance[found] >= ex.radius[found]).all())


def test_worst_case_is_at_most_every_attack(fmnist_model, demo):
    report = evaluate(fmnist_model, demo, norm="l2", eps=[0.25, 0.5], attacks=["pgd", "fgsm", "deepfool"],
                      steps=(10, 30), seed=0)
    for w in report.worst_case:
        for r in report.results:
            if r.eps == w.eps:
                assert w.robust_accuracy <= r.robust_accuracy
    assert all(w.robust_accuracy <= report.clean_accuracy for w in report.worst_case)


def test_min_distance_at_most_eps_where_broken(fmnist_model, demo):
    report = evaluate(fmnist_model, demo, norm="linf", eps=[0.01, 0.03], attacks=["pgd", "fmn"], seed=0)
    ex = report.examples
    correct = ex.label == ex.prediction
    assert bool((ex.min_adv_distance[~correct] == 0).all())
    for i, e in enumerate(report.eps):
        broken = correct & ~ex.robust[:, i]
        assert broken.any()
        assert bool((ex.min_adv_distance[broken] <= e).all())
        assert all(a not in ("", "clean") for a in ex.min_adv_attack[broken])


def test_native_pgd_at_least_as_strong_as_foolbox(fmnist_model, demo):
    """Same settings, no random start (identical trajectories): early stop only keeps more successes."""
    x, y = demo.float_tensor(), demo.y
    kw = dict(norm="l2", eps=0.5, bounds=(0.0, 1.0), seed=0, batch_size=100, device=torch.device("cpu"))
    native = run_batched(PGD(steps=20, random_start=False), fmnist_model.module, x, y, **kw)
    fool = run_batched(FoolboxPGD(steps=20, random_start=False), fmnist_model.module, x, y, **kw)
    assert int(native.success.sum()) >= int(fool.success.sum()) > 0


def test_same_seed_same_results(fmnist_model, demo):
    kw = dict(norm="l2", eps=[0.5], attacks=["pgd", "fb-pgd", "ddn"], steps=(10,), seed=7)
    a, b = evaluate(fmnist_model, demo, **kw), evaluate(fmnist_model, demo, **kw)
    assert [r.robust_accuracy for r in a.results] == [r.robust_accuracy for r in b.results]
    np.testing.assert_array_equal(a.examples.min_adv_distance, b.examples.min_adv_distance)


def test_certify_first_skips_certified_points(lip_model):
    data = blob_data(64, SHAPE, 3, seed=4)
    on = evaluate(lip_model, data, norm="l2", eps=[0.05], attacks=["pgd"], min_distance=False)
    off = evaluate(lip_model, data, norm="l2", eps=[0.05], attacks=["pgd"], min_distance=False, certify_first=False)
    assert on.certified_skipped[0.05] > 0 and off.certified_skipped[0.05] == 0
    assert on.results[0].attacked == off.results[0].attacked - on.certified_skipped[0.05]
    assert on.worst_case[0].robust_count == off.worst_case[0].robust_count  # sound: skipping loses nothing


def test_undeclared_model_gets_a_verified_pairwise_certificate(fmnist_model, demo):
    """No declared property: certify-first uses the pairwise radii from bounds computed from the weights."""
    report = evaluate(fmnist_model, demo, norm="l2", eps=[0.5], attacks=["pgd"], min_distance=False)
    assert report.plan is not None and report.plan.certificate == "pairwise" and report.plan.lipschitz_verified


def test_unverifiable_model_attacks_everything(tmp_path, demo):
    """A layer with no Lipschitz rule (LayerNorm here): no certificate, so every correct point is attacked."""
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10), torch.nn.LayerNorm(10), torch.nn.Linear(10, 10))
    model = loaded(net, tmp_path / "u.pt2", (1, 28, 28))
    report = evaluate(model, demo.subset(range(40)), norm="l2", eps=[0.5], attacks=["pgd"], min_distance=False)
    assert report.plan is None and report.notes and report.certified_skipped == {0.5: 0}


def test_iteration_scaling_rows_and_flag(fmnist_model, demo):
    report = evaluate(fmnist_model, demo, norm="linf", eps=[0.03], attacks=["pgd"], steps=(1, 20),
                      min_distance=False, seed=0)
    assert [r.steps for r in report.iteration_scaling] == [1, 20]
    assert report.iteration_scaling[1].robust_accuracy < report.iteration_scaling[0].robust_accuracy
    assert "robust-accuracy-still-falling" in {f.id for f in report.flags}


def test_keyboard_interrupt_gives_partial_report(fmnist_model, demo):
    def stop(done, total):
        raise KeyboardInterrupt

    report = evaluate(fmnist_model, demo, norm="l2", eps=[0.5], attacks=["pgd"], progress=stop)
    assert report.partial


def test_oom_retries_with_half_batch(fmnist_model, demo):
    sizes = []

    class Picky(torch.nn.Module):
        def forward(self, x):
            sizes.append(x.shape[0])
            if x.shape[0] > 16:
                raise RuntimeError("CUDA out of memory. Tried to allocate 2 GiB")
            return fmnist_model.module(x)

    x, y = demo.float_tensor()[:40], demo.y[:40]
    out = run_batched(PGD(steps=3), Picky(), x, y, norm="l2", eps=0.5, bounds=(0.0, 1.0), seed=0, batch_size=64,
                      device=torch.device("cpu"))
    assert out.success.shape == (40,) and max(s for s in sizes[-3:]) <= 16


def test_probability_outputs_and_gradient_flags(tmp_path):
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3), torch.nn.Softmax(dim=1))
    model = loaded(net, tmp_path / "p.pt2", SHAPE)
    report = evaluate(model, blob_data(32, SHAPE, 3), norm="l2", eps=[0.1], attacks=["fgsm"], min_distance=False)
    assert "outputs-look-like-probabilities" in {f.id for f in report.flags}
    flat = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    with torch.no_grad():
        flat[1].weight.zero_()
        flat[1].bias.copy_(torch.tensor([1.0, 0.0, 0.0]))
    model = loaded(flat, tmp_path / "z.pt2", SHAPE)
    data = Dataset(torch.rand(8, *SHAPE), torch.zeros(8, dtype=torch.long), "zeros", "test")
    report = evaluate(model, data, norm="l2", eps=[0.1], attacks=["pgd"], steps=(2,), min_distance=False)
    assert "zero-gradients" in {f.id for f in report.flags}


@pytest.mark.parametrize("norm", list(Norm), ids=str)
def test_projection_lands_in_ball(norm):
    delta = torch.randn(6, 1, 4, 4) * 3
    eps = torch.tensor([0.1, 0.5, 1.0, 2.0, 3.0, 10.0])
    n = norm.distance(norm.project(delta, eps).double())
    assert bool((n <= eps.double() * (1 + 1e-6)).all())


def test_cascade_rows_never_rise_and_independent_rows_stand_alone(fmnist_model, demo):
    kw = dict(norm="linf", eps=[0.02], steps=(10,), min_distance=False, seed=0)
    cascade = evaluate(fmnist_model, demo, attacks=["pgd", "fgsm"], **kw)
    accs = [r.robust_accuracy for r in cascade.results]
    assert accs == sorted(accs, reverse=True) and cascade.results[1].attacked < cascade.results[0].attacked
    independent = evaluate(fmnist_model, demo, attacks=["pgd", "fgsm"], cascade=False, **kw)
    alone = evaluate(fmnist_model, demo, attacks=["fgsm"], **kw)
    assert independent.results[1].robust_accuracy == alone.results[0].robust_accuracy
    assert independent.worst_case == cascade.worst_case
