"""Every command on CUDA, compared with the same command on the CPU (docs/determinism.md).

Marked ``gpu``: deselected by default (``pyproject.toml``), run with ``python -m pytest -m gpu``;
each test skips itself without CUDA.  ``examples/benchmarks/gpu_check.sh`` runs them with the benchmarks.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from certify.cli import main

from .helpers_device import ROOT

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

L2NNN = str(ROOT / "examples/models/fmnist_l2nnn.pt2")
LINF = str(ROOT / "examples/models/fmnist_linf_dist.pt2")
CNN = str(ROOT / "examples/models/fmnist_baseline.pt2")
#: radii whose relative distance to ε is below this may fall on either side of ε on the two devices
EPS_TIE = 1e-4
RADIUS_RTOL = 1e-5


def run_json(tmp_path, name: str, *args: str) -> dict:
    out = tmp_path / f"{name}.json"
    res = CliRunner().invoke(main, [*args, "--json", str(out), "-q"])
    assert res.exit_code == 0, (args, res.stderr, res.exception)
    return json.loads(out.read_text())


def both(tmp_path, *args: str) -> tuple[dict, dict]:
    return (run_json(tmp_path, "cpu", *args, "--device", "cpu"),
            run_json(tmp_path, "cuda", *args, "--device", "cuda"))


@pytest.mark.parametrize("model,norm,eps", [(L2NNN, "l2", ("0.1", "0.3", "1.0")), (LINF, "linf", ("8/255",))],
                         ids=["l2nnn-l2", "linf-dist-linf"])
def test_certify_matches_cpu(tmp_path, model, norm, eps):
    cpu, gpu = both(tmp_path, "certify", model, "--data", "demo", "--norm", norm, "--eps", ",".join(eps))
    r_cpu, r_gpu = (np.asarray(d["per_example"]["radius"], dtype=np.float64) for d in (cpu, gpu))
    # relative to the radius, and to 1 below 1: a radius near 0 moves with the float32 noise of its gap
    scale = np.maximum(np.abs(r_cpu), 1.0)
    assert bool(np.all(np.abs(r_gpu - r_cpu) <= RADIUS_RTOL * scale)), float(np.max(np.abs(r_gpu - r_cpu) / scale))
    assert cpu["clean_accuracy"] == gpu["clean_accuracy"]
    for a, b in zip(cpu["results"], gpu["results"]):
        e = a["eps"]
        ties = int(np.sum(np.abs(r_cpu - e) <= EPS_TIE * e))
        assert abs(a["certified_count"] - b["certified_count"]) <= ties, (e, a, b)


@pytest.mark.parametrize("norm,eps", [("l2", "1.5"), ("linf", "8/255")])
def test_attack_matches_cpu(tmp_path, norm, eps):
    cpu, gpu = both(tmp_path, "attack", CNN, "--data", "demo", "--limit", "500", "--norm", norm, "--eps", eps,
                    "--attacks", "pgd", "--steps", "100")
    for a, b in zip(cpu["worst_case"], gpu["worst_case"]):
        assert abs(a["robust_accuracy"] - b["robust_accuracy"]) <= 0.01, (a, b)


def test_check_certificates_finds_no_violation(tmp_path):
    out = run_json(tmp_path, "check", "attack", L2NNN, "--data", "demo", "--limit", "500", "--norm", "l2",
                   "--eps", "0.5", "--attacks", "pgd,ddn", "--check-certificates", "100", "--device", "cuda")
    assert out["certificates_checked"] > 0 and out["violations"] == []


@pytest.mark.parametrize("args", [
    ("lipschitz", L2NNN, "--data", "demo", "--limit", "200"),
    ("lipschitz", CNN, "--norm", "linf"),
    ("data-lipschitz", "demo"),
    ("analyze", L2NNN, "--norm", "l2", "--limit", "300", "--steps", "20"),
    ("demo", "--limit", "200", "--attack-steps", "10"),
], ids=lambda a: a[0] + ("-" + a[-1] if a[0] == "lipschitz" else ""))
def test_other_commands_run_and_agree(tmp_path, args):
    cpu, gpu = both(tmp_path, *args)
    if args[0] == "lipschitz":  # a sound bound, computed on either device; float64 Gram iterations agree closely
        assert gpu["verified"] == cpu["verified"]
        assert gpu["global_bound"] == pytest.approx(cpu["global_bound"], rel=1e-4)
    elif args[0] == "data-lipschitz":
        assert gpu["lip_2_inf"] == pytest.approx(cpu["lip_2_inf"], rel=1e-5)
        assert gpu["closest_pair"] == cpu["closest_pair"]


def test_run_suite_gates_pass_on_cuda(tmp_path, monkeypatch):
    suite = (ROOT / "examples/ci/suite.yaml").read_text(encoding="utf-8").replace(
        "examples/models/", str(ROOT / "examples/models") + "/")
    path = tmp_path / "suite.yaml"
    path.write_text(suite + "device: cuda\n")
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, ["run", str(path), "-q"])
    assert res.exit_code == 0, (res.stderr, res.exception)


def test_python_api_with_model_on_cuda():
    from attacks import evaluate
    from certify import BadInputError, certify, load_dataset, load_model

    model, data = load_model(L2NNN, device="cuda"), load_dataset("demo", limit=256)
    rep = certify(model, data, norm="l2", eps=[0.1])  # device=None: the model's
    att = evaluate(model, data, norm="l2", eps=[0.5], attacks=["pgd"], steps=(20,))
    assert rep.results[0].certified_count > 0 and att.violations == ()
    with pytest.raises(BadInputError, match="the model is on cuda"):
        certify(model, data, norm="l2", eps=[0.1], device="cpu")


@pytest.mark.parametrize("model,norm", [(L2NNN, "l2"), (LINF, "linf"), (CNN, "l2")], ids=["l2nnn", "linf-dist", "cnn"])
def test_certificate_logits_on_cuda_lie_within_their_error_bound(model, norm):
    """TF32 off (certificate_precision): each float32 CUDA logit is within its bound a of the float64 CPU logit."""
    from certify import load_dataset, load_model
    from certify.certificates import plan_certificate

    data = load_dataset("demo", limit=512)
    gpu = load_model(model, device="cuda")
    plan = plan_certificate(gpu, norm=norm, input_dim=int(np.prod(data.input_shape)), input_shape=data.input_shape,
                            batch_sizes=(256,))
    if plan.forward is None:
        pytest.skip(f"no verified forward pass for {model}: {plan.reason}")
    reference = copy.deepcopy(load_model(model, device="cpu").module).double()
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True  # the defaults we must override
    try:
        for lo in range(0, len(data), 256):
            x, _ = data.batch(lo, lo + 256, torch.device("cuda"))
            with torch.inference_mode():
                logits, (a, _) = plan.logits(gpu.module, x)
                exact = reference(x.cpu().double())
            diff = (logits.double().cpu() - exact).abs()
            assert bool((diff <= a.cpu().view(-1, 1)).all()), float((diff - a.cpu().view(-1, 1)).max())
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old
