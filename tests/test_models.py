"""Model families: declared claims hold, exports reload bit-identically, training runs."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from certify.checkpoints import LipschitzClaim, load_model, save_model
from certify.data import load_dataset
from certify.errors import BadInputError
from certify.zoo.losses import L2NNNLoss, hinge_loss, log_one_minus_softmax
from certify.zoo.models import FAMILIES, baseline_cnn, get_family, l2nnn_cnn, l2nnn_mlp, linf_dist_net
from certify.zoo.training import TrainConfig, accuracy, build_state, metadata_for, pgd, schedule, train

ROOT = Path(__file__).resolve().parents[1]


def _scrambled(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    model = model.double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * 2)
    return model


def _pair(gen: torch.Generator, n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    x1 = torch.rand(n, 1, 28, 28, generator=gen, dtype=torch.float64)
    eps = 10.0 ** torch.empty(n, 1, 1, 1, dtype=torch.float64).uniform_(-3, 0, generator=gen)
    return x1, x1 + eps * torch.randn(n, 1, 28, 28, generator=gen, dtype=torch.float64)


# --------------------------------------------------------------------------- declared claims


@settings(max_examples=8, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from(["mlp", "mlp-spectral", "cnn"]))
def test_l2nnn_models_every_logit_is_1_lipschitz(seed: int, arch: str) -> None:
    builders = {"mlp": lambda: l2nnn_mlp(hidden=32), "cnn": lambda: l2nnn_cnn(channels=(4, 8), hidden=16),
                "mlp-spectral": lambda: l2nnn_mlp(hidden=32, normalisation="spectral", bjorck_iterations=5)}
    model = _scrambled(builders[arch](), seed)
    x1, x2 = _pair(torch.Generator().manual_seed(seed))
    with torch.no_grad():
        diff = (model(x1) - model(x2)).abs()
    dist = (x1 - x2).flatten(1).norm(dim=1, keepdim=True)
    assert torch.all(diff <= dist * (1 + 1e-9) + 1e-12)


@settings(max_examples=8, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_linf_dist_net_logit_vector_is_1_lipschitz_in_linf(seed: int) -> None:
    model = _scrambled(linf_dist_net(depth=3, width=16), seed)
    with torch.no_grad():  # give the mean-shift a non-trivial running mean
        for m in model.modules():
            if hasattr(m, "running_mean"):
                m.running_mean.normal_()
    x1, x2 = _pair(torch.Generator().manual_seed(seed))
    with torch.no_grad():
        out = (model(x1) - model(x2)).abs().amax(dim=1)
    assert torch.all(out <= (x1 - x2).flatten(1).abs().amax(dim=1) * (1 + 1e-9) + 1e-12)


def test_families_declare_their_claims() -> None:
    assert FAMILIES["l2nnn"].claim == LipschitzClaim("l2", "per-logit", 1.0)
    assert FAMILIES["linf_dist"].claim == LipschitzClaim("linf", "vector", 1.0)
    assert FAMILIES["baseline"].claim is None and FAMILIES["baseline_adv"].claim is None
    with pytest.raises(BadInputError, match="unknown model family"):
        get_family("resnet")
    with pytest.raises(BadInputError, match="expected arch in"):
        get_family("l2nnn").build("linf_dist_net")


# --------------------------------------------------------------------------- losses


def test_log_one_minus_softmax_matches_direct_formula() -> None:
    logits = torch.tensor([[1.0, 2.0, 0.5], [3.0, -1.0, 0.0]], dtype=torch.float64)
    labels = torch.tensor([1, 0])
    want = torch.log(1 - torch.softmax(logits, 1)[torch.arange(2), labels])
    assert torch.allclose(log_one_minus_softmax(logits, labels), want)


def test_l2nnn_loss_terms_and_trainable_scales() -> None:
    loss = L2NNNLoss(num_classes=3, gamma=0.5, omega=2.0, z=3.0)
    logits, labels = torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([0])
    t = loss.terms(logits, labels)
    with torch.no_grad():
        assert float(loss(logits, labels)) == pytest.approx(float(t["a"] + 0.5 * t["b"] + 2.0 * t["c"]))
    assert float(t["c"]) < 0  # a large gap is rewarded
    assert {n for n, p in loss.named_parameters() if p.requires_grad} == {"u", "v"}
    distorted = torch.tensor([[0.0, 1.0, -1.0]])
    assert float(loss.terms(logits, labels, distorted)["a"]) > float(t["a"])  # L_a on distorted inputs


def test_hinge_loss_hand_computed() -> None:
    logits = torch.tensor([[1.0, 0.8, 0.0], [0.0, 2.0, 0.0]])
    labels = torch.tensor([0, 1])
    # first: 0.4 + 0.8 − 1 = 0.2; second: 0.4 + 0 − 2 < 0 → 0
    assert float(hinge_loss(logits, labels, 0.4)) == pytest.approx(0.1)


def test_linf_schedule_anneals_p_and_drops_lr() -> None:
    cfg = TrainConfig(family="linf_dist", arch="linf_dist_net", epochs=10, lr=0.02, p_start=8, p_end=100,
                      p_warm_frac=0.2, p_final_frac=0.2, p_final=math.inf)
    assert schedule(cfg, 0, 0.0) == (0.02, 8)
    lr, p = schedule(cfg, 5, 0.0)
    assert lr == 0.02 and 8 < p < 100
    assert schedule(cfg, 9, 0.5) == (0.02 / 5, math.inf)


def test_pgd_stays_in_ball_and_bounds() -> None:
    model = baseline_cnn(channels=(2, 4), hidden=8).eval()
    x = torch.rand(4, 1, 28, 28)
    y = torch.zeros(4, dtype=torch.long)
    for norm, eps in (("linf", 0.1), ("l2", 0.5)):
        adv = pgd(model, x, y, norm=norm, eps=eps, steps=3)
        d = (adv - x).flatten(1)
        size = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
        assert torch.all(size <= eps + 1e-5) and adv.min() >= 0 and adv.max() <= 1


# --------------------------------------------------------------------------- export and training


def _meta(family: str):  # type: ignore[no-untyped-def]
    cfg = TrainConfig(family=family, arch=next(iter(FAMILIES[family].builders)))
    return metadata_for(cfg, None, "fashion-mnist")


@pytest.mark.parametrize("family,build", [
    ("l2nnn", lambda: l2nnn_cnn(channels=(4, 8), hidden=16)), ("l2nnn", lambda: l2nnn_mlp(hidden=32)),
    ("linf_dist", lambda: linf_dist_net(depth=3, width=32)), ("baseline", lambda: baseline_cnn((4, 8), 16)),
])
def test_exported_models_reload_bit_identically(tmp_path: Path, family: str, build) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model = build()
    model.train()
    model(torch.rand(16, 1, 28, 28))  # move mean-shift running means
    model.eval()
    x = torch.rand(9, 1, 28, 28)
    path = save_model(model, tmp_path / "m.pt2", _meta(family), example_input=x[:2])
    loaded = load_model(path)
    assert loaded.format == "torch.export"
    assert loaded.metadata.lipschitz == FAMILIES[family].claim
    assert loaded.metadata.input_shape == (1, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


@pytest.mark.parametrize("family,arch,extra", [
    ("l2nnn", "l2nnn_mlp", {"arch_kwargs": {"hidden": 32}}),
    ("l2nnn", "l2nnn_mlp", {"arch_kwargs": {"hidden": 32}, "adv_norm": "l2", "adv_eps": 0.3, "adv_steps": 2}),
    ("linf_dist", "linf_dist_net", {"arch_kwargs": {"depth": 3, "width": 32}, "lr": 0.02, "p_final": math.inf}),
    ("baseline", "baseline_cnn", {"arch_kwargs": {"channels": [4, 8], "hidden": 16}}),
    ("baseline_adv", "baseline_cnn", {"arch_kwargs": {"channels": [4, 8], "hidden": 16}, "adv_eps": 0.1,
                                      "adv_steps": 2}),
], ids=repr)
def test_training_smoke_loss_decreases(family: str, arch: str, extra: dict) -> None:  # type: ignore[type-arg]
    torch.set_num_threads(1)
    data = load_dataset("demo", limit=256)
    cfg = TrainConfig.from_dict({"family": family, "arch": arch, "epochs": 3, "batch_size": 64, "lr": 0.005,
                                 "p_warm_frac": 0.0, "p_final_frac": 0.4, **extra})
    state = build_state(cfg)
    results = train(state, data, data)
    losses = [r.loss for r in results]
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]
    if family != "linf_dist":  # 12 steps are too few for an ℓ∞-dist net evaluated at p = ∞
        assert accuracy(state.model, data) > 0.2


def test_train_config_rejects_unknown_keys() -> None:
    with pytest.raises(BadInputError, match="unknown keys \\['epoch'\\]; valid keys are"):
        TrainConfig.from_dict({"family": "baseline", "arch": "baseline_cnn", "epoch": 3})
    with pytest.raises(BadInputError, match="missing keys"):
        TrainConfig.from_dict({"family": "baseline"})
    with pytest.raises(BadInputError, match="adv_norm must be one of l2, linf; got 'l1'"):
        TrainConfig.from_dict({"family": "baseline", "arch": "baseline_cnn", "adv_norm": "l1"})


def _train_script():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("lipcert_train_example", ROOT / "examples" / "train.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_train_script_saves_checkpoint_and_resumes(tmp_path: Path) -> None:
    cfg = tmp_path / "tiny.yaml"
    out = tmp_path / "tiny.pt2"
    cfg.write_text(f"family: l2nnn\narch: l2nnn_mlp\narch_kwargs: {{hidden: 16}}\ndataset: demo\n"
                   f"train_limit: 128\neval_limit: 64\nepochs: 1\nbatch_size: 32\noutput: {out}\n")
    script = _train_script()
    r1 = CliRunner().invoke(script.main, [str(cfg), "--device", "cpu"])
    assert r1.exit_code == 0, r1.output
    assert out.exists() and out.with_suffix(".resume.pt").exists()
    r2 = CliRunner().invoke(script.main, [str(cfg), "--resume", "--set", "epochs=2", "--device", "cpu"])
    assert r2.exit_code == 0, r2.output
    assert "resumed from" in r2.stderr and "epoch 2/2" in r2.stderr and "epoch 1/2" not in r2.stderr
    loaded = load_model(out)
    assert loaded.metadata.lipschitz == LipschitzClaim("l2", "per-logit", 1.0)
    assert loaded.metadata.dataset == "demo:fashion-mnist-test-1000"


@pytest.mark.parametrize("config", sorted((ROOT / "examples" / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_are_valid(config: Path) -> None:
    script = _train_script()
    cfg = script.load_config(str(config), ())
    assert cfg.family in FAMILIES
