"""Ops that move, copy, cast or select entries: views, permutations, slicing, padding, repeats,
splits and concatenation.  None of them rounds (casts only widen); copies cost √(copies) in L2.

Tags (exact forms) survive only ops that leave every entry where it was (same shape, same
order): views that keep the shape, clones, same-dtype or widening casts, eval-mode dropout.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ...threat import Norm
from ..analyser import Analyser, Var
from ..fperror import INF, Err
from ..registry import CONST, NO_EFFECT, VAR, Bound, NoRule, eq, optional, rule
from .common import always, copy_factor, leading, nonneg_map, not_dim


def _keep(a: Analyser, b: Bound, v: Var, factor: float = 1.0) -> Var:
    """Output of an exact op with Lipschitz factor ``factor``; tags kept when nothing moved."""
    out = Var(v.lip * factor, v.err * factor)
    x = a.env[b.raw["self"] if "self" in b.raw else b.raw["input"]]
    if factor == 1.0 and isinstance(b.out, torch.Tensor) and b.out.shape == x.shape:
        out.tag, out.affine = v.tag, v.affine
    return out


def _moved(a: Analyser, b: Bound, factor: float = 1.0) -> Var:
    """Entries moved or copied: no tags survive."""
    v = a.only(b)
    return Var(v.lip * factor, v.err * factor)


# --------------------------------------------------------------------------- views (order kept)

_SIZE = {"self": VAR, "size": CONST}


@rule("aten.view.default", "aten._unsafe_view.default", args=_SIZE, batch=leading)
@rule("aten.reshape.default", args={"self": VAR, "shape": CONST}, batch=leading)
@rule("aten.flatten.using_ints", args={"self": VAR, "start_dim": CONST, "end_dim": CONST}, batch=leading)
@rule("aten.unflatten.int", args={"self": VAR, "dim": CONST, "sizes": CONST}, batch=leading)
@rule("aten.squeeze.dim", args={"self": VAR, "dim": CONST}, batch=leading)
@rule("aten.squeeze.dims", args={"self": VAR, "dim": CONST}, batch=leading)
@rule("aten.squeeze.default", args={"self": VAR}, batch=leading)
@rule("aten.unsqueeze.default", args={"self": VAR, "dim": CONST}, batch=leading)
@rule("aten.contiguous.default", "aten.clone.default", args={"self": VAR, "memory_format": NO_EFFECT},
      batch=always)
@rule("aten.alias.default", "aten.detach.default", "aten.lift_fresh_copy.default", args={"self": VAR}, batch=always)
def view(a: Analyser, b: Bound) -> Var:
    """Row-major views keep each example's entries together while the leading dimension stays the batch."""
    return _keep(a, b, a.only(b))


# --------------------------------------------------------------------------- casts


def _cast_ok(a: Analyser, b: Bound, dtype: torch.dtype | None) -> None:
    src = a.env[b.raw["self"]].dtype
    if dtype is None or dtype == src:
        return
    if src.is_floating_point and dtype.is_floating_point and torch.promote_types(src, dtype) == dtype:
        return  # widening: exact
    raise NoRule(f"a cast from {src} to {dtype} rounds or truncates (only exact widening casts are allowed)")


@rule("aten._to_copy.default", args={"self": VAR, "dtype": CONST, "layout": NO_EFFECT, "device": NO_EFFECT,
                                     "pin_memory": NO_EFFECT, "non_blocking": NO_EFFECT,
                                     "memory_format": NO_EFFECT}, batch=always)
@rule("aten.to.dtype", args={"self": VAR, "dtype": CONST, "non_blocking": NO_EFFECT, "copy": NO_EFFECT,
                             "memory_format": NO_EFFECT}, batch=always)
@rule("aten.to.dtype_layout", args={"self": VAR, "dtype": CONST, "layout": NO_EFFECT, "device": NO_EFFECT,
                                    "pin_memory": NO_EFFECT, "non_blocking": NO_EFFECT, "copy": NO_EFFECT,
                                    "memory_format": NO_EFFECT}, batch=always)
@rule("aten.to.device", args={"self": VAR, "device": NO_EFFECT, "dtype": CONST, "non_blocking": NO_EFFECT,
                              "copy": NO_EFFECT, "memory_format": NO_EFFECT}, batch=always)
def cast(a: Analyser, b: Bound) -> Var:
    _cast_ok(a, b, b["dtype"])
    return _keep(a, b, a.only(b))


@rule("aten.type_as.default", args={"self": VAR, "other": CONST}, batch=always)
def type_as(a: Analyser, b: Bound) -> Var:
    _cast_ok(a, b, b["other"].dtype)
    return _keep(a, b, a.only(b))


# --------------------------------------------------------------------------- permutations and selections


def _perm_batch(a: Analyser, b: Bound) -> bool:
    dims = [int(d) % a.env[b.raw["self"]].dim() for d in b["dims"]]
    return leading(a, b) and dims[0] == 0


def _transpose_batch(a: Analyser, b: Bound) -> bool:
    n = a.env[b.raw["self"]].dim()
    d0, d1 = int(b["dim0"]) % n, int(b["dim1"]) % n
    return leading(a, b) and (d0 == d1 or (d0 != 0 and d1 != 0))


@rule("aten.permute.default", args={"self": VAR, "dims": CONST}, batch=_perm_batch)
@rule("aten.transpose.int", args={"self": VAR, "dim0": CONST, "dim1": CONST}, batch=_transpose_batch)
@rule("aten.t.default", args={"self": VAR}, batch=lambda a, b: a.env[b.raw["self"]].dim() < 2)
@rule("aten.flip.default", args={"self": VAR, "dims": CONST}, batch=not_dim("dims"))
@rule("aten.roll.default", args={"self": VAR, "shifts": CONST, "dims": CONST}, batch=not_dim("dims"))
@rule("aten.select.int", args={"self": VAR, "dim": CONST, "index": CONST}, batch=not_dim("dim"))
@rule("aten.narrow.default", args={"self": VAR, "dim": CONST, "start": CONST, "length": CONST},
      batch=not_dim("dim"))
def rearrange(a: Analyser, b: Bound) -> Var:
    """A permutation or a selection of entries: 1-Lipschitz, exact; entries move, so tags drop."""
    return _moved(a, b)


def _slice_batch(a: Analyser, b: Bound) -> bool:
    x = a.env[b.raw["self"]]
    if int(b["dim"]) % x.dim() != 0:
        return leading(a, b)
    return leading(a, b) and b.out.shape == x.shape and b["step"] == 1  # the full range: identity


@rule("aten.slice.Tensor", args={"self": VAR, "dim": CONST, "start": CONST, "end": CONST, "step": CONST},
      batch=_slice_batch)
def slice_(a: Analyser, b: Bound) -> Var:
    return _keep(a, b, a.only(b)) if b.out.shape == a.env[b.raw["self"]].shape else _moved(a, b)


@rule("aten.dropout.default", "aten.feature_dropout.default", "aten.alpha_dropout.default",
      args={"input": VAR, "p": CONST, "train": eq(False)}, batch=always)
def dropout(a: Analyser, b: Bound) -> Var:
    """Dropout in eval mode is the identity."""
    return _keep(a, b, a.only(b, "input"))


@rule("aten.native_dropout.default", args={"input": VAR, "p": CONST, "train": eq(False, None)}, batch=always)
def native_dropout(a: Analyser, b: Bound) -> Var:
    v = _keep(a, b, a.only(b, "input"))
    return Var(v.lip, v.err, kind="tuple", items=(v, None))


# --------------------------------------------------------------------------- padding


def _pad_batch(a: Analyser, b: Bound) -> bool:
    return leading(a, b) and len(b["pad"]) // 2 < a.env[b.raw["self"]].dim()


def _pad_factor(a: Analyser, b: Bound, fn) -> float:  # type: ignore[no-untyped-def]
    """Largest number of copies of one input entry: √ of it in L2, 1 in ℓ∞."""
    _, col = nonneg_map(fn, a.env[b.raw["self"]])
    return copy_factor(a, col)


def _constant_value(value: object) -> None:
    if value is not None and not (isinstance(value, (int, float)) and math.isfinite(float(value))):
        raise NoRule(f"pad value must be finite, got {value!r}")


@rule("aten.pad.default", args={"self": VAR, "pad": CONST, "mode": eq("constant", "reflect", "replicate", "circular"),
                                "value": optional(_constant_value)}, batch=_pad_batch)
def pad(a: Analyser, b: Bound) -> Var:
    """Constant padding adds constants (factor 1); reflect, replicate and circular copy entries."""
    if b["mode"] == "constant":
        return _moved(a, b)
    factor = _pad_factor(a, b, lambda t: F.pad(t, list(b["pad"]), mode=b["mode"]))
    a.record(b.node, factor)
    return _moved(a, b, factor)


@rule("aten.constant_pad_nd.default", args={"self": VAR, "pad": CONST, "value": _constant_value}, batch=_pad_batch)
def constant_pad(a: Analyser, b: Bound) -> Var:
    return _moved(a, b)


def _pad_n_batch(a: Analyser, b: Bound) -> bool:
    return leading(a, b) and len(b["padding"]) // 2 < a.env[b.raw["self"]].dim()


@rule("aten.reflection_pad1d.default", "aten.reflection_pad2d.default", "aten.reflection_pad3d.default",
      "aten.replication_pad1d.default", "aten.replication_pad2d.default", "aten.replication_pad3d.default",
      args={"self": VAR, "padding": CONST}, batch=_pad_n_batch)
def copy_pad(a: Analyser, b: Bound) -> Var:
    target = b.node.target
    factor = _pad_factor(a, b, lambda t: target(t, list(b["padding"])))
    a.record(b.node, factor)
    return _moved(a, b, factor)


# --------------------------------------------------------------------------- copies


def _expand_batch(a: Analyser, b: Bound) -> bool:
    x = a.env[b.raw["self"]]
    return leading(a, b) and b.out.dim() == x.dim()


@rule("aten.expand.default", args={"self": VAR, "size": CONST, "implicit": NO_EFFECT}, batch=_expand_batch)
@rule("aten.repeat.default", args={"self": VAR, "repeats": CONST}, batch=_expand_batch)
def copies(a: Analyser, b: Bound) -> Var:
    """Every entry copied the same number of times: out.numel / in.numel."""
    k = b.out.numel() / max(a.env[b.raw["self"]].numel(), 1)
    factor = copy_factor(a, k)
    a.record(b.node, factor)
    return _moved(a, b, factor)


def _repeats_int(value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise NoRule(f"expected a non-negative repeat count, got {value!r}")


@rule("aten.repeat_interleave.self_int", args={"self": VAR, "repeats": _repeats_int, "dim": CONST,
                                                "output_size": NO_EFFECT}, batch=not_dim("dim"))
def repeat_interleave_int(a: Analyser, b: Bound) -> Var:
    factor = copy_factor(a, b["repeats"])
    a.record(b.node, factor)
    return _moved(a, b, factor)


@rule("aten.repeat_interleave.self_Tensor", args={"self": VAR, "repeats": CONST, "dim": CONST,
                                                   "output_size": NO_EFFECT}, batch=not_dim("dim"))
def repeat_interleave_tensor(a: Analyser, b: Bound) -> Var:
    """Per-entry repeat counts: the largest count decides."""
    reps = torch.as_tensor(b["repeats"], device="cpu")
    factor = copy_factor(a, float(reps.max()) if reps.numel() else 0.0)
    a.record(b.node, factor)
    return _moved(a, b, factor)


@rule("aten.index_select.default", args={"self": VAR, "dim": CONST, "index": CONST}, batch=not_dim("dim"))
def index_select(a: Analyser, b: Bound) -> Var:
    """Selected entries, some maybe several times: √(largest multiplicity) in L2."""
    idx = torch.as_tensor(b["index"], device="cpu").flatten()
    k = float(torch.bincount(idx).max()) if idx.numel() else 0.0
    factor = copy_factor(a, k)
    a.record(b.node, factor)
    return _moved(a, b, factor)


# --------------------------------------------------------------------------- splits and concatenation


def _pieces(a: Analyser, b: Bound) -> Var:
    v = a.only(b)
    items = tuple(Var(v.lip, v.err) for _ in b.out)
    return Var(v.lip, v.err, kind="tuple", items=items)


@rule("aten.split.Tensor", args={"self": VAR, "split_size": CONST, "dim": CONST}, batch=not_dim("dim"))
@rule("aten.split_with_sizes.default", args={"self": VAR, "split_sizes": CONST, "dim": CONST},
      batch=not_dim("dim"))
@rule("aten.chunk.default", args={"self": VAR, "chunks": CONST, "dim": CONST}, batch=not_dim("dim"))
@rule("aten.unbind.int", args={"self": VAR, "dim": CONST}, batch=not_dim("dim"))
@rule("aten.tensor_split.sections", args={"self": VAR, "sections": CONST, "dim": CONST}, batch=not_dim("dim"))
@rule("aten.tensor_split.indices", args={"self": VAR, "indices": CONST, "dim": CONST}, batch=not_dim("dim"))
def split(a: Analyser, b: Bound) -> Var:
    """Each piece is a selection of the input."""
    return _pieces(a, b)


@rule("getitem", args={"arg0": VAR, "arg1": CONST}, batch=always)
def getitem(a: Analyser, b: Bound) -> Var:
    v = a.var(b.raw["arg0"])
    if v is None or v.kind != "tuple":
        raise NoRule("getitem of something that is not a tuple of the input")
    item = v.items[int(b["arg1"])]
    if item is None:  # indices, saved statistics: not differentiable values of the input
        return Var(math.inf, INF, kind="opaque")
    return item


def _cat_batch(a: Analyser, b: Bound) -> bool:
    first = next(iter(b["tensors"]))
    return leading(a, b) and a.separable_dims(b["dim"], first.dim() + (1 if "stack" in str(b.node.target) else 0))


@rule("aten.cat.default", args={"tensors": VAR, "dim": CONST}, batch=_cat_batch)
@rule("aten.stack.default", args={"tensors": VAR, "dim": CONST}, batch=_cat_batch)
def cat(a: Analyser, b: Bound) -> Var:
    """Concatenation: √(Σ L²) in L2 (with [relu(z), relu(−z)] pairs as Lipschitz as z, [L2NNN]
    Lemma 4), max in ℓ∞.  The error vector is the concatenation of the errors."""
    items = [(n, a.var(n)) for n in b.raw["tensors"]]
    vars_ = [(n, v) for n, v in items if v is not None]
    if any(v.kind != "var" for _, v in vars_):
        raise NoRule("a concatenated tensor is not a plain tensor of the input")
    if a.norm is Norm.LINF:
        err = Err.combine([(v.err, 1.0) for _, v in vars_], Norm.LINF)
        return Var(max(v.lip for _, v in vars_), err)
    paired: set[int] = set()
    total = 0.0
    errs: list[tuple[Err, float]] = []
    for i, (ni, vi) in enumerate(vars_):
        for j, (nj, vj) in enumerate(vars_):
            if i < j and not {i, j} & paired and _two_sided(a, ni, vi, nj, vj):
                ti, tj = vi.tag, vj.tag
                assert ti is not None and tj is not None
                z = a.info[ti.z]
                total += (abs(ti.coef) * z.lip) ** 2
                # the pair is a |c|-Lipschitz function of the computed z, plus each side's own rounding
                errs.append((z.err * abs(ti.coef) + Err.combine([(ti.extra, 1.0), (tj.extra, 1.0)], Norm.L2), 1.0))
                paired |= {i, j}
    total += sum(v.lip ** 2 for k, (_, v) in enumerate(vars_) if k not in paired)
    errs += [(v.err, 1.0) for k, (_, v) in enumerate(vars_) if k not in paired]
    return Var(math.sqrt(total), Err.combine(errs, Norm.L2))


def _two_sided(a: Analyser, ni: object, vi: Var, nj: object, vj: Var) -> bool:
    """c·relu(z) and ±c·relu(−z) of the same z, same shape: together exactly as Lipschitz as c·z."""
    ti, tj = vi.tag, vj.tag
    return (ti is not None and tj is not None and ti.kind == tj.kind == "relu" and ti.z is tj.z
            and ti.sign == -tj.sign and abs(ti.coef) == abs(tj.coef)
            and a.env[ni].shape == a.env[nj].shape == a.env[ti.z].shape)

