"""The certified forward pass runs 2-D convolutions as one GEMM on CUDA; checked here on the CPU."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from certify.lipschitz.forward import CertifiedForward, conv2d_gemm

from .helpers_device import ROOT


@pytest.mark.parametrize("c,co,k,stride,pad,dil", [
    (1, 8, 3, 1, 1, 1), (3, 5, 5, 2, 2, 1), (4, 6, 3, 2, 0, 2), (2, 3, (3, 1), 1, (1, 0), 1)], ids=repr)
def test_gemm_conv_is_the_direct_convolution(c, co, k, stride, pad, dil):
    g = torch.Generator().manual_seed(0)
    kk = k if isinstance(k, tuple) else (k, k)
    x = torch.randn(5, c, 13, 11, generator=g, dtype=torch.float64)
    w = torch.randn(co, c, *kk, generator=g, dtype=torch.float64)
    b = torch.randn(co, generator=g, dtype=torch.float64)
    assert torch.allclose(conv2d_gemm(x, w, b, stride, pad, dil), F.conv2d(x, w, b, stride, pad, dil), atol=1e-12)
    assert conv2d_gemm(x, w, b, 1, "same") is None and conv2d_gemm(x, w, b, 1, 0, 1, groups=2) is None


def test_gemm_conv_logits_lie_within_their_error_bound(monkeypatch):
    from certify import load_dataset, load_model
    from certify.certificates import plan_certificate

    monkeypatch.setattr(CertifiedForward, "gemm_conv", True)
    data = load_dataset("demo", limit=128)
    model = load_model(ROOT / "examples/models/fmnist_baseline.pt2")
    plan = plan_certificate(model, norm="l2", input_dim=784, input_shape=data.input_shape, batch_sizes=(128,))
    assert plan.forward is not None, plan.reason
    reference = copy.deepcopy(model.module).double()
    x, _ = data.batch(0, 128, torch.device("cpu"))
    with torch.inference_mode():
        logits, (a, _) = plan.logits(model.module, x)
        exact = reference(x.double())
    assert bool(((logits.double() - exact).abs() <= a.view(-1, 1)).all())
