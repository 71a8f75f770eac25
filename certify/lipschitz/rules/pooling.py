"""Pooling and resampling: max pooling (√ of the window overlap in L2, 1 in ℓ∞), average pooling
and interpolation as non-negative linear maps (Schur's test), nearest upsampling as copies."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..analyser import Analyser, Var
from ..registry import CONST, VAR, Bound, NoRule, eq, optional, positive, rule
from .common import apply_with, copy_factor, in_ndim, nonneg_linear, nonneg_map

_MAX_ARGS = {"self": VAR, "kernel_size": CONST, "stride": CONST, "padding": CONST, "dilation": CONST,
             "ceil_mode": CONST}


@rule("aten.max_pool2d.default", args=_MAX_ARGS, batch=in_ndim(4))
@rule("aten.max_pool1d.default", args=_MAX_ARGS, batch=in_ndim(3))
@rule("aten.max_pool2d_with_indices.default", args=_MAX_ARGS, batch=in_ndim(4))
@rule("aten.max_pool1d_with_indices.default", args=_MAX_ARGS, batch=in_ndim(3))
def max_pool(a: Analyser, b: Bound) -> Var:
    """Each output is the max of its window: per output 1-Lipschitz in ℓ∞; in L2 an input entry
    appears in at most c windows, so √c (c counted on the padded grid, ceil_mode included)."""
    v = a.only(b)
    x = a.env[b.raw["self"]]

    def windows(t: torch.Tensor) -> torch.Tensor:  # sum pooling over the same windows
        k, s = b["kernel_size"], b["stride"] or b["kernel_size"]
        pool = F.avg_pool1d if x.dim() == 3 else F.avg_pool2d
        # avg pooling with count_include_pad=True divides by the full window: undo it
        kk = math.prod(_pair(k, x.dim() - 2))
        if any(d != 1 for d in _pair(b["dilation"], x.dim() - 2)):
            return _dilated_windows(t, b, x.dim() - 2)
        return pool(t, k, s, b["padding"], bool(b["ceil_mode"]), True) * kk

    _, col = nonneg_map(windows, x)
    factor = copy_factor(a, col)
    a.record(b.node, factor)
    out = Var(v.lip * factor, v.err * factor)
    if isinstance(b.out, (tuple, list)):
        return Var(out.lip, out.err, kind="tuple", items=(out, None))
    return out


def _dilated_windows(t: torch.Tensor, b: Bound, nd: int) -> torch.Tensor:
    """Window incidence for dilated pooling, via unfold on a padded grid."""
    k, s = _pair(b["kernel_size"], nd), _pair(b["stride"] or b["kernel_size"], nd)
    p, d = _pair(b["padding"], nd), _pair(b["dilation"], nd)
    if nd == 1:
        t, k, s, p, d = t.unsqueeze(-2), (1,) + k, (1,) + s, (0,) + p, (1,) + d
    if b["ceil_mode"]:
        t = F.pad(t, (0, s[1], 0, s[0]))
    n, c = t.shape[:2]
    cols = F.unfold(t.reshape(n * c, 1, *t.shape[-2:]), k, d, p, s)
    return cols.sum(1)


def _pair(v: object, n: int) -> tuple[int, ...]:
    if isinstance(v, int):
        return (v,) * n
    t = tuple(int(i) for i in v)  # type: ignore[union-attr]
    return t * n if len(t) == 1 else t


def _divisor(value: object) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise NoRule(f"expected a positive divisor, got {value!r}")


_AVG_ARGS = {"self": VAR, "kernel_size": CONST, "stride": CONST, "padding": CONST, "ceil_mode": CONST,
             "count_include_pad": CONST}


@rule("aten.avg_pool2d.default", args=dict(_AVG_ARGS, divisor_override=_divisor), batch=in_ndim(4))
@rule("aten.avg_pool1d.default", args=_AVG_ARGS, batch=in_ndim(3))
def avg_pool(a: Analyser, b: Bound) -> Var:
    k = math.prod(_pair(b["kernel_size"], a.env[b.raw["self"]].dim() - 2))
    return nonneg_linear(a, b, apply_with(b), k + 1)


@rule("aten.adaptive_avg_pool2d.default", "aten._adaptive_avg_pool2d.default", args={"self": VAR, "output_size": CONST},
      batch=in_ndim(4))
@rule("aten.adaptive_avg_pool1d.default", args={"self": VAR, "output_size": CONST}, batch=in_ndim(3))
def adaptive_avg_pool(a: Analyser, b: Bound) -> Var:
    x = a.env[b.raw["self"]]
    dims = x.shape[2:]
    sizes = _pair(b["output_size"], len(dims))
    window = math.prod(math.ceil(n / max(o, 1)) + 1 for n, o in zip(dims, sizes))
    return nonneg_linear(a, b, apply_with(b), window + 1)


@rule("aten.adaptive_max_pool2d.default", args={"self": VAR, "output_size": CONST}, batch=in_ndim(4))
@rule("aten.adaptive_max_pool1d.default", args={"self": VAR, "output_size": CONST}, batch=in_ndim(3))
def adaptive_max_pool(a: Analyser, b: Bound) -> Var:
    """Adaptive windows: an entry lies in at most (column count of the matching average map) windows."""
    v = a.only(b)
    x = a.env[b.raw["self"]]
    pool = F.adaptive_avg_pool2d if x.dim() == 4 else F.adaptive_avg_pool1d
    dims = x.shape[2:]
    sizes = _pair(b["output_size"], len(dims))
    window = math.prod(math.ceil(n / max(o, 1)) + 1 for n, o in zip(dims, sizes))
    _, col = nonneg_map(lambda t: pool(t, b["output_size"]), x)
    factor = copy_factor(a, col * window)
    a.record(b.node, factor)
    out = Var(v.lip * factor, v.err * factor)
    return Var(out.lip, out.err, kind="tuple", items=(out, None)) if isinstance(b.out, tuple) else out


_NEAREST_VEC = {"input": VAR, "output_size": CONST, "scale_factors": CONST}


@rule("aten.upsample_nearest2d.vec", args=_NEAREST_VEC, batch=in_ndim(4))
@rule("aten.upsample_nearest1d.vec", args=_NEAREST_VEC, batch=in_ndim(3))
@rule("aten.upsample_nearest2d.default", args={"self": VAR, "output_size": CONST, "scales_h": optional(positive),
                                               "scales_w": optional(positive)}, batch=in_ndim(4))
@rule("aten.upsample_nearest1d.default", args={"self": VAR, "output_size": CONST, "scales": optional(positive)},
      batch=in_ndim(3))
def upsample_nearest(a: Analyser, b: Bound) -> Var:
    """Nearest upsampling copies entries: exact, √(largest copy count) in L2."""
    key = "input" if "input" in b.raw else "self"
    v = a.only(b, key)
    _, col = nonneg_map(apply_with(b, key), a.env[b.raw[key]])
    factor = copy_factor(a, col)
    a.record(b.node, factor)
    return Var(v.lip * factor, v.err * factor)


@rule("aten.upsample_bilinear2d.vec", args={"input": VAR, "output_size": CONST, "align_corners": CONST,
                                            "scale_factors": CONST}, batch=in_ndim(4))
@rule("aten.upsample_bilinear2d.default", args={"self": VAR, "output_size": CONST, "align_corners": CONST,
                                                "scales_h": optional(positive), "scales_w": optional(positive)},
      batch=in_ndim(4))
def upsample_bilinear(a: Analyser, b: Bound) -> Var:
    """Bilinear weights are non-negative; each output mixes ≤ 4 inputs with computed weights."""
    key = "input" if "input" in b.raw else "self"
    return nonneg_linear(a, b, apply_with(b, key), 8)


__all__ = ["eq"]
