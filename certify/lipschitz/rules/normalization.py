"""Batch normalisation in eval mode: a per-channel affine map with scale γ/√(var + ε).

Training mode (batch statistics) couples the examples and is refused.
"""

from __future__ import annotations

import torch

from ..analyser import Analyser, Var
from ..fperror import Err
from ..registry import CONST, NO_EFFECT, VAR, Bound, NoRule, eq, rule


def _channels(a: Analyser, b: Bound) -> bool:
    """Per-example on (N, C, …) inputs; of a tuple result only the normalised tensor carries the batch
    (the saved statistics are empty in eval mode, and nothing may read them: see ``native_batch_norm``)."""
    x = a.env[b.raw["input"]]
    out = b.out[0] if isinstance(b.out, (tuple, list)) else b.out
    return a.batch_leading(x) and a.batch_leading(out) and x.dim() >= 2


def _eps(value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value) >= 0:
        raise NoRule(f"expected ε ≥ 0, got {value!r}")


_COMMON = {"input": VAR, "weight": CONST, "bias": CONST, "running_mean": CONST, "running_var": CONST,
           "momentum": NO_EFFECT, "eps": _eps}


@rule("aten.batch_norm.default", args=dict(_COMMON, training=eq(False), cudnn_enabled=NO_EFFECT), batch=_channels)
def batch_norm(a: Analyser, b: Bound) -> Var:
    return _affine(a, b)


@rule("aten._native_batch_norm_legit_no_training.default", args=_COMMON, batch=_channels)
@rule("aten.native_batch_norm.default", args=dict(_COMMON, training=eq(False)), batch=_channels)
def native_batch_norm(a: Analyser, b: Bound) -> Var:
    out = _affine(a, b)
    return Var(out.lip, out.err, kind="tuple", items=(out, None, None))


def _affine(a: Analyser, b: Bound) -> Var:
    """(x − μ)·s + β with s = γ/√(var + ε): factor max|s|.  Rounding: the subtraction, the
    run-time √ and products (≤ 6u·|s|·(|x| + |μ|)) and the final addition (u·|out|)."""
    v = a.only(b, "input")
    var, mean = a.const(b.raw["running_var"]), a.const(b.raw["running_mean"])
    if var is None or mean is None:
        raise NoRule("batch statistics (no running mean or variance) couple the examples")
    weight, bias = a.const(b.raw["weight"]), a.const(b.raw["bias"])
    tensors = [t for t in (var, mean, weight, bias) if t is not None]
    if not all(bool(torch.isfinite(t).all()) for t in tensors):
        raise NoRule("a parameter or running statistic has NaN or Inf entries")
    denom = var.double() + float(b["eps"])
    if bool((denom <= 0).any()):
        raise NoRule("running_var + eps must be positive")
    scale = 1.0 / torch.sqrt(denom)
    if weight is not None:
        scale = scale * weight.double()
    factor = float(scale.abs().max()) * (1 + 1e-12) if scale.numel() else 0.0
    a.record(b.node, factor)
    lip, err = v.lip * factor, v.err * factor
    x = a.env[b.raw["input"]]
    shape = (1, -1) + (1,) * (x.dim() - 2)
    m_mean = a.const_norm(mean.reshape(shape), x)
    err = err + Err.rounding(6 * a.unit(x) * factor, [a.mag(b.raw["input"], v)], m_mean)
    return Var(lip, err + a.rounded(b, lip, err))
