"""Every unsound pattern found in the rules (and the argument bugs the fuzzer found), kept as regression
cases: each must get a bound at or above the truth, or a refusal (``unverifiable``).

The truth is the larger of a value computed by hand (in the case's comment) and float64 Jacobian
lower bounds (tests/fuzz_rules.py).  Inputs are 1×4×4 in [0, 1] unless a case says otherwise.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from certify.certificates import certify
from certify.checkpoints import LoadedModel, ModelMetadata
from certify.data import Dataset
from certify.lipschitz import analyse
from certify.lipschitz.analysis import analyse_with_forward

from .fuzz_rules import SHAPE, Block, truth
from .helpers_lipschitz import loaded


def conv_ones(mode: str) -> nn.Module:
    conv = nn.Conv2d(1, 1, 3, padding=1, bias=False, padding_mode=mode)
    with torch.no_grad():
        conv.weight.fill_(1.0)
    return nn.Sequential(conv, nn.Flatten())


def z(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1)


def last_linear_then(post: Callable[[torch.Tensor], torch.Tensor]) -> nn.Module:
    lin = nn.Linear(16, 3, bias=False)
    with torch.no_grad():
        lin.weight.zero_()
        lin.weight[0, 0] = 10.0  # logit 0 has norm 10, the others 0 (before the flip/roll)
    return nn.Sequential(nn.Flatten(), lin, L(post))


def L(f: Callable[[torch.Tensor], torch.Tensor]) -> nn.Module:
    """A module computing ``f(x)``."""
    return Block(lambda m, x: f(x), "")


#: name → (module factory, norm, hand-computed global truth or None)
CASES: dict[str, tuple[Callable[[], nn.Module], str, float | None]] = {
    # 1. non-zero padding modes copy pixels: all-ones 3×3 conv on 1×4×4 has norm 10 / 9 / 9
    "conv-reflect": (lambda: conv_ones("reflect"), "l2", 10.0),
    "conv-replicate": (lambda: conv_ones("replicate"), "l2", 9.0),
    "conv-circular": (lambda: conv_ones("circular"), "l2", 9.0),
    # F.pad(x, 6, "replicate") of one pixel copies it 13×13 times: norm 13
    "pad-replicate-one-pixel": (lambda: L(lambda x: F.pad(x[:, :, :1, :1], (6, 6, 6, 6), mode="replicate")
                                          .flatten(1)), "l2", 13.0),
    "pad-reflect": (lambda: L(lambda x: F.pad(x, (3, 3, 3, 3), mode="reflect").flatten(1)), "l2", None),
    # 2. ReLU pattern tags: 3·relu(z) − z = 2z on z > 0
    "3relu-minus-z": (lambda: L(lambda x: 3 * torch.relu(z(x)) - z(x)), "l2", 2.0),
    "relu-div-quarter-minus-z-linf": (lambda: L(lambda x: torch.relu(z(x)) / 0.25 - z(x)), "linf", 3.0),
    "neg-relu-minus-z": (lambda: L(lambda x: -torch.relu(z(x)) - z(x)), "l2", 2.0),
    "flipped-relu-minus-z": (lambda: L(lambda x: torch.relu(z(x)).flip(-1) - z(x)), "l2", 2.0),
    "cat-3relu-relu-neg": (lambda: L(lambda x: torch.cat([3 * torch.relu(z(x) - .5), torch.relu(.5 - z(x))], 1)),
                           "l2", 3.0),
    "cat-relu-relu-one-minus": (lambda: L(lambda x: torch.cat([torch.relu(z(x)), torch.relu(1 - z(x))], 1)),
                                "l2", math.sqrt(2.0)),
    "c-minus-relu": (lambda: L(lambda x: torch.relu(z(x) - .5) - (1 - z(x))), "l2", 2.0),
    # 3. row tags of the last Linear must not survive a flip/roll of the logits: logit 2 / 1 has norm 10
    "flip-logits": (lambda: last_linear_then(lambda o: o.flip(-1)), "l2", 10.0),
    "roll-logits": (lambda: last_linear_then(lambda o: o.roll(1, -1)), "l2", 10.0),
    "flip-logits-linf": (lambda: last_linear_then(lambda o: o.flip(-1)), "linf", 10.0),
    # 4. comparisons are not constants
    "where-compare": (lambda: L(lambda x: torch.where(z(x) > .5, z(x) + 10, z(x))), "l2", None),
    "only-through-compare": (lambda: L(lambda x: (z(x) > .5).float() * 3), "l2", None),
    "compare-eq": (lambda: L(lambda x: (z(x) == z(x).flip(-1)).to(torch.float32)), "l2", None),
    # 5. casts that round are not free: an int64 cast of 500·x has jumps of 1 over steps → 0
    "cast-int64": (lambda: L(lambda x: (500 * z(x)).to(torch.int64).to(torch.float32) * 10), "l2", None),
    "cast-bool": (lambda: L(lambda x: (z(x) - .5).to(torch.bool).to(torch.float32)), "l2", None),
    "cast-bfloat16": (lambda: L(lambda x: (500 * z(x)).to(torch.bfloat16).to(torch.float32) * 10), "l2", None),
    "view-dtype": (lambda: L(lambda x: z(x).view(torch.int32).to(torch.float32)), "l2", None),
    # fuzzer-found argument bugs (tests/fuzz_rules.py)
    "elu-input-scale": (lambda: L(lambda x: torch.ops.aten.elu.default(z(x) - .5, 1.0, 1.0, 3.0)), "l2", 3.0),
    "vector-norm-p-half": (lambda: L(lambda x: torch.linalg.vector_norm(z(x) - .5, ord=0.5, dim=1,
                                                                          keepdim=True)), "l2", None),
    "repeat-interleave-tensor": (lambda: L(lambda x: torch.repeat_interleave(
        z(x), torch.tensor([9] + [1] * 15), dim=1)), "l2", 3.0),
    "softplus-threshold": (lambda: L(lambda x: F.softplus(4 * z(x) - 2, beta=1.0, threshold=0.5)), "l2", None),
    "avg-pool-negative-divisor": (lambda: L(lambda x: F.avg_pool2d(x, 2, divisor_override=-1).flatten(1)),
                                  "l2", None),
    "clamp-tensor-broadcast": (lambda: Block(lambda m, x: torch.clamp(x, min=m.lo).flatten(1), "",
                                          lo=torch.zeros(3, 4, 4) - 1), "l2", None),
    "leaky-relu-slope-3": (lambda: L(lambda x: F.leaky_relu(z(x) - .5, negative_slope=3.0)), "l2", 3.0),
    "max-other-broadcast": (lambda: Block(lambda m, x: torch.max(x, m.o).flatten(1), "", o=torch.zeros(3, 4, 4)),
                            "l2", None),
    "celu-negative-alpha": (lambda: L(lambda x: F.celu(z(x) - .5, alpha=-0.5)), "l2", None),
    "hardtanh-min-above-max": (lambda: L(lambda x: F.hardtanh(4 * z(x), min_val=1.0, max_val=-1.0)), "l2", None),
    "batch-norm-negative-eps": (lambda: Block(lambda m, x: torch.ops.aten.batch_norm.default(
        x, None, None, m.rm, m.rv, False, 0.1, -1e-3, False).flatten(1), "",
        rm=torch.zeros(1), rv=torch.full((1,), 1e-3)), "l2", None),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bound_is_at_or_above_the_truth_or_refused(name: str) -> None:
    make, norm, hand = CASES[name]
    net = make().eval()
    report = analyse(loaded(net, SHAPE), norm=norm)
    if not report.verified:
        assert report.unverifiable_ops, name  # a refusal names the op, its argument and the node
        return
    t = truth(net, norm, seed=0, points=32)
    lower = max(t.glob, hand or 0.0)
    assert report.global_bound >= lower * (1 - 1e-9), f"{name}: bound {report.global_bound} < truth {lower}"
    assert np.all(np.asarray(report.per_logit_bounds) >= t.per_logit * (1 - 1e-9)), name
    assert np.all(np.asarray(report.pair_bounds) >= t.pairs * (1 - 1e-9)), name


def test_flip_of_the_logits_moves_the_per_logit_bounds() -> None:
    report = analyse(loaded(last_linear_then(lambda o: o.flip(-1)), SHAPE), norm="l2")
    assert report.verified
    assert report.per_logit_bounds[2] >= 10.0  # the flipped row, not logit 0's


@pytest.mark.parametrize("name", ["where-compare", "only-through-compare", "cast-int64", "cast-bfloat16",
                                  "view-dtype", "vector-norm-p-half", "avg-pool-negative-divisor",
                                  "celu-negative-alpha", "clamp-tensor-broadcast"])
def test_refusals_name_the_op_and_the_node(name: str) -> None:
    make, norm, _ = CASES[name]
    report = analyse(loaded(make(), SHAPE), norm=norm)
    assert not report.verified
    assert all("(" in op and ")" in op for op in report.unverifiable_ops), report.unverifiable_ops


def _attack_inside_radii(net: nn.Module, norm: str, x: torch.Tensor, batch_size: int = 512) -> int:
    """Certify with auto, then search every certified point's ball (0.999·r) by a dense random search
    and a line search along the gradient of the margin; returns the number of flipped points."""
    with torch.no_grad():
        y = net(x).argmax(dim=1)
    report = certify(loaded(net, tuple(x.shape[1:])), Dataset(x, y, "regression", "test"), norm=norm,
                     eps=[1e-4], certificate="auto", batch_size=batch_size)
    ex = report.examples
    idx = np.flatnonzero(ex.correct & np.isfinite(ex.radius) & (ex.radius > 0))
    flipped = 0
    gen = torch.Generator().manual_seed(0)
    for i in idx:
        r = float(ex.radius[i]) * 0.999
        xi = x[i:i + 1].clone().requires_grad_(True)
        out = net(xi)[0]
        other = out.clone().detach()
        other[y[i]] = -math.inf
        margin = out[y[i]] - out[int(other.argmax())]
        (g,) = torch.autograd.grad(margin, xi)
        direction = -g / (g.norm() if norm == "l2" else 1.0)
        if norm == "linf":
            direction = -torch.sign(g)
        steps = torch.linspace(0, 1, 257).view(-1, *([1] * (x.dim() - 1)))
        cands = [xi.detach() + steps * r * direction]
        noise = torch.randn(256, *x.shape[1:], generator=gen)
        size = noise.flatten(1).norm(dim=1) if norm == "l2" else noise.flatten(1).abs().amax(dim=1)
        cands.append(xi.detach() + noise * (r / size).view(-1, *([1] * (x.dim() - 1))))
        with torch.no_grad():
            preds = torch.cat([net(c.clamp(0, 1)).argmax(dim=1) for c in cands])
        flipped += int(bool((preds != y[i]).any()))
    return flipped


def staircase(d: int = 16, k: int = 3) -> nn.Module:
    """6. A Linear with bias 1e5 then BatchNorm with running mean 1e5: Lipschitz in real arithmetic,
    a staircase in float32 (ulp(1e5) ≈ 0.008)."""
    gen = torch.Generator().manual_seed(0)
    lin, bn = nn.Linear(d, 8), nn.BatchNorm1d(8)
    head = nn.Linear(8, k)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(8, d, generator=gen) * 0.3)
        lin.bias.fill_(1e5)
        bn.running_mean.fill_(1e5)
        bn.running_var.fill_(1.0)
        head.weight.copy_(torch.randn(k, 8, generator=gen))
    return nn.Sequential(nn.Flatten(), lin, bn, nn.ReLU(), head).eval()


def test_float32_staircase_certificates_hold() -> None:
    net = staircase()
    x = torch.rand(64, *SHAPE, generator=torch.Generator().manual_seed(1))
    report, _ = analyse_with_forward(loaded(net, SHAPE), norm="l2")
    assert report.verified
    assert report.float_error > 1e-3  # the allowance sees the magnitudes inside the graph, not the logits
    assert _attack_inside_radii(net, "l2", x) == 0


class Branchy(nn.Module):
    """7. Different functions at batch size 1 and otherwise (TorchScript keeps the branch)."""

    def __init__(self) -> None:
        super().__init__()
        self.small = nn.Linear(16, 3)
        self.big = nn.Linear(16, 3)
        with torch.no_grad():
            self.big.weight.mul_(50.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] == 1:
            return self.small(x.flatten(1))
        return self.big(x.flatten(1))


def test_torchscript_that_branches_on_the_batch_size_is_analysed_at_the_sizes_used() -> None:
    torch.manual_seed(0)
    net = Branchy().eval()
    scripted = torch.jit.script(net)
    model = LoadedModel(module=scripted, format="torchscript", path="<memory>", sha256="0",
                        metadata=ModelMetadata(input_shape=SHAPE))
    big = float(torch.linalg.matrix_norm(net.big.weight.double(), ord=2))
    report = analyse(model, norm="l2", batch_sizes=[1, 64])
    assert report.verified and report.global_bound >= big * (1 - 1e-9)
    x = torch.rand(64, *SHAPE, generator=torch.Generator().manual_seed(2))
    assert _attack_inside_radii(scripted, "l2", x, batch_size=64) == 0


def test_cache_sees_weights_changed_in_place_and_reused_ids() -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).eval()
    first = analyse(loaded(net, SHAPE), norm="l2").global_bound
    with torch.no_grad():
        net[1].weight.mul_(100.0)
    second = analyse(loaded(net, SHAPE), norm="l2").global_bound
    assert second == pytest.approx(100 * first, rel=1e-5)
    for seed in range(5):  # new objects (ids are recycled), same sha256 field: each gets its own bound
        torch.manual_seed(seed)
        other = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).eval()
        truth_l2 = float(torch.linalg.matrix_norm(other[1].weight.double(), ord=2))
        assert analyse(loaded(other, SHAPE), norm="l2").global_bound == pytest.approx(truth_l2, rel=1e-5)
        del other


def test_a_float64_model_is_unverifiable_with_a_reason_that_says_what_to_do() -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 3)).double()
    rep = analyse(loaded(net, (4,)), norm="l2")
    assert not rep.verified
    (reason,) = rep.unverifiable_ops
    assert "parameters are float64" in reason and "model.float()" in reason
