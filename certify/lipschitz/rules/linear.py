"""Linear layers, matrix products and convolutions: guaranteed operator norms of the weights.

L2: Gram iteration and √b(W) for matrices; the circulant, [L2NNN] and Cholesky bounds for
convolutions (:mod:`~certify.lipschitz.operator_norms`).  ℓ∞: the largest absolute row sum.
A linear layer whose output is (batch, K) tags its rows so the per-logit and pairwise bounds
can use them.  Rounding: γₙ₊₁·(‖|W|‖·M_in + ‖b‖) (:mod:`~certify.lipschitz.rounding`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ...threat import Norm
from .. import cache
from .. import operator_norms as on
from ..analyser import Analyser, Var
from ..registry import CONST, NO_EFFECT, VAR, Bound, NoRule, eq, finite, rule
from .common import leading, nonneg_map


def _weight(a: Analyser, raw: object, name: str, dims: int = 2) -> torch.Tensor:
    w = a.const(raw)
    if not isinstance(w, torch.Tensor) or w.dim() != dims or not w.is_floating_point():
        raise NoRule(f"argument {name}: expected a constant {dims}-D float tensor")
    if not bool(torch.isfinite(w).all()):
        raise NoRule(f"argument {name} has NaN or Inf entries")
    return w


def _matrix_factor(a: Analyser, node: object, m: torch.Tensor) -> float:
    if a.norm is Norm.LINF:
        bound = on.linf_matrix_norm(m)
        a.record(node, bound, bound)
        return bound
    bound = on.gram_bound(m)
    a.record(node, bound, on.matrix_power_estimate(m))
    return bound


def _abs_norm(a: Analyser, m: torch.Tensor) -> float:
    """‖|M|‖: max row sum in ℓ∞; in L2 the guaranteed σ_max of |M| (Gram iteration)."""
    w = m.detach().double().abs()
    if a.norm is Norm.LINF:
        return float(w.sum(dim=1).max()) if w.numel() else 0.0
    return on.gram_bound(w)


def _bias_norm(a: Analyser, raw: object, out: torch.Tensor, channel_dim: bool = False) -> float:
    """Norm of the bias as added to one example (along the last dimension, or per channel)."""
    if raw is None:
        return 0.0
    c = a.const(raw)
    if isinstance(c, torch.Tensor) and not bool(torch.isfinite(c).all()):
        raise NoRule("the bias has NaN or Inf entries")
    if channel_dim and isinstance(c, torch.Tensor):
        c = c.reshape((1, -1) + (1,) * (out.dim() - 2))
    return a.const_norm(c, out)


def _dense(a: Analyser, b: Bound, v: Var, x_raw: object, m: torch.Tensor, bias_raw: object,
           scale: float = 1.0) -> Var:
    """out = scale·(x Mᵀ) + bias along the last dimension of x."""
    factor = _matrix_factor(a, b.node, m) * abs(scale)
    lip, err = v.lip * factor, v.err * factor
    n = m.shape[1] + (1 if bias_raw is not None else 0) + (1 if scale != 1.0 else 0)
    err = err + a.accumulated(b, n, _abs_norm(a, m) * abs(scale), x_raw, v, _bias_norm(a, bias_raw, b.out))
    out = Var(lip, err)
    if b.out.dim() == 2:
        out.affine = (m.detach().double() * scale, v.lip)
    return out


def _dense_batch(a: Analyser, b: Bound) -> bool:
    key = "input" if "input" in b.raw else "self"
    return leading(a, b) and a.env[b.raw[key]].dim() >= 2


@rule("aten.linear.default", args={"input": VAR, "weight": CONST, "bias": CONST}, batch=_dense_batch)
def linear(a: Analyser, b: Bound) -> Var:
    v = a.only(b, "input")
    w = _weight(a, b.raw["weight"], "weight")
    return _dense(a, b, v, b.raw["input"], w, b.raw["bias"])


def _addmm_batch(a: Analyser, b: Bound) -> bool:
    return leading(a, b) and a.var(b.raw["mat1"]) is not None


@rule("aten.addmm.default", args={"self": CONST, "mat1": VAR, "mat2": CONST, "beta": finite, "alpha": finite},
      batch=_addmm_batch)
def addmm(a: Analyser, b: Bound) -> Var:
    """β·bias + α·(x @ M): the input must be the left factor (the right one would mix the batch)."""
    v = a.only(b, "mat1")
    m = _weight(a, b.raw["mat2"], "mat2")
    if float(b["beta"]) != 1.0:
        raise NoRule("argument beta: only β = 1 is supported")
    return _dense(a, b, v, b.raw["mat1"], m.T, b.raw["self"], float(b["alpha"]))


@rule("aten.mm.default", args={"self": VAR, "mat2": VAR}, batch=leading)
def mm(a: Analyser, b: Bound) -> Var:
    vx, vm = a.var(b.raw["self"]), a.var(b.raw["mat2"])
    if vx is None or vm is not None or vx.kind != "var":
        raise NoRule("only (tensor of the input) @ (constant matrix) keeps examples apart")
    m = _weight(a, b.raw["mat2"], "mat2")
    return _dense(a, b, vx, b.raw["self"], m.T, None)


@rule("aten.matmul.default", args={"self": VAR, "other": VAR}, batch=leading)
def matmul(a: Analyser, b: Bound) -> Var:
    vx, vm = a.var(b.raw["self"]), a.var(b.raw["other"])
    if vx is not None and vm is None and vx.kind == "var" and a.env[b.raw["self"]].dim() >= 2:
        m = _weight(a, b.raw["other"], "other")
        return _dense(a, b, vx, b.raw["self"], m.T, None)
    if vm is not None and vx is None and vm.kind == "var" and a.env[b.raw["other"]].dim() >= 3:
        m = _weight(a, b.raw["self"], "self")  # M @ X acts on X's second-to-last dimension
        factor = _matrix_factor(a, b.node, m)
        lip, err = vm.lip * factor, vm.err * factor
        err = err + a.accumulated(b, m.shape[1], _abs_norm(a, m), b.raw["other"], vm, 0.0)
        return Var(lip, err)
    raise NoRule("only products of a tensor of the input with a constant matrix are supported")


# --------------------------------------------------------------------------- convolutions

_CONV_ARGS = {"input": VAR, "weight": CONST, "bias": CONST, "stride": CONST, "padding": CONST, "dilation": CONST,
              "groups": CONST}
_CONVOLUTION_ARGS = dict(_CONV_ARGS, transposed=eq(False), output_padding=CONST)
# ``allow_tf32`` only reaches cuDNN, which certify.device.certificate_precision switches off for every
# certificate forward pass (TorchScript graphs pass True); the other kernels follow the global
# matmul precision, which it sets to "highest".
_CUDNN_ARGS = dict(_CONVOLUTION_ARGS, benchmark=NO_EFFECT, deterministic=NO_EFFECT, cudnn_enabled=NO_EFFECT,
                   allow_tf32=NO_EFFECT)


def _conv_batch(a: Analyser, b: Bound) -> bool:
    nd = a.const(b.raw["weight"]).dim() - 2
    return a.env[b.raw["input"]].dim() == nd + 2 and leading(a, b)


@rule("aten.conv1d.default", "aten.conv2d.default", "aten.conv1d.padding", "aten.conv2d.padding", args=_CONV_ARGS,
      batch=_conv_batch)
@rule("aten.convolution.default", args=_CONVOLUTION_ARGS, batch=_conv_batch)
@rule("aten._convolution.default", args=_CUDNN_ARGS, batch=_conv_batch)
def conv(a: Analyser, b: Bound) -> Var:
    v = a.only(b, "input")
    weight = a.const(b.raw["weight"])
    if not isinstance(weight, torch.Tensor) or weight.dim() not in (3, 4) or not bool(torch.isfinite(weight).all()):
        raise NoRule("argument weight: expected a finite 1-D or 2-D convolution kernel")
    if any(int(p) != 0 for p in _as_list(b.values.get("output_padding", [0]))):
        raise NoRule("argument output_padding: must be 0")
    x = a.env[b.raw["input"]]
    spec = _conv_spec(weight, b["stride"], b["padding"], b["dilation"], int(b["groups"]), x)
    if a.norm is Norm.LINF:
        bound = on.conv_linf_bound(spec)
        a.record(b.node, bound, bound)
    else:
        params = {"stride": list(spec.stride), "padding": list(spec.padding), "dilation": list(spec.dilation),
                  "groups": spec.groups, "in_shape": list(spec.in_shape), "device": spec.weight.device.type,
                  "dense_max_flops": on.dense_max_flops(spec.weight.device)}
        key = cache.tensor_key("conv-l2", weight, params)
        hit = cache.load(key, ("bound", "estimate"), ("method",))
        if hit is None:  # a signed hit is a bound this code proved from these bytes and settings in an earlier run
            res = on.conv_l2(spec)
            hit = {"bound": res.bound, "estimate": res.estimate, "method": res.method}
            if res.bound > 0 and res.estimate > 0:  # (the zero map is cheap to prove again)
                cache.store(key, hit)
            a.record(b.node, res.bound, res.estimate, res.method)
        else:
            a.record(b.node, hit["bound"], hit["estimate"], hit["method"], reused=True)
        bound = hit["bound"]
    lip, err = v.lip * bound, v.err * bound
    n = int(weight[0].numel()) + (1 if b.raw["bias"] is not None else 0)
    err = err + a.accumulated(b, n, _conv_abs_norm(a, spec), b.raw["input"], v,
                              _bias_norm(a, b.raw["bias"], b.out, channel_dim=True))
    return Var(lip, err)


def _as_list(v: object) -> list[object]:
    return list(v) if isinstance(v, (list, tuple)) else [v]


def _conv_abs_norm(a: Analyser, spec: on.ConvSpec) -> float:
    """‖|K|‖ of the convolution with the kernel's absolute values (Schur's test in L2)."""
    k = spec.weight.abs()

    def fn(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, k, None, spec.stride, spec.padding, spec.dilation, spec.groups)

    like = torch.empty((1,) + spec.in_shape, dtype=torch.float64, device=k.device)
    row, col = nonneg_map(fn, like)
    return row if a.norm is Norm.LINF else math.sqrt(row * col)


def _conv_spec(weight: torch.Tensor, stride, padding, dilation, groups: int, x: torch.Tensor) -> on.ConvSpec:  # type: ignore[no-untyped-def]
    nd = weight.dim() - 2
    stride, dilation = _pair(stride, nd), _pair(dilation, nd)
    if any(s < 1 for s in stride) or any(d < 1 for d in dilation) or groups < 1:
        raise NoRule("stride, dilation and groups must be ≥ 1")
    if isinstance(padding, str):
        if padding not in ("valid", "same"):
            raise NoRule(f"argument padding: unknown mode {padding!r}")
        ks = weight.shape[2:]
        total = [0 if padding == "valid" else d * (k - 1) for d, k in zip(dilation, ks)]
        if any(t % 2 for t in total):
            raise NoRule("argument padding: 'same' with an even kernel pads asymmetrically")
        padding = tuple(t // 2 for t in total)
    padding = _pair(padding, nd)
    if any(p < 0 for p in padding):
        raise NoRule("argument padding: must be ≥ 0")
    if nd == 1:  # a 1-D convolution as a 2-D one of height 1
        return on.ConvSpec(weight.unsqueeze(-2), (1,) + stride, (0,) + padding, (1,) + dilation, groups,
                           (x.shape[1], 1, x.shape[2]))
    return on.ConvSpec(weight, stride, padding, dilation, groups, tuple(x.shape[1:]))


def _pair(v: object, n: int) -> tuple[int, ...]:
    if isinstance(v, int):
        return (v,) * n
    t = tuple(int(i) for i in v)  # type: ignore[union-attr]
    return t * n if len(t) == 1 else t
