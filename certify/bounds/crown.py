"""CROWN (Zhang et al. 2018): a backward linear relaxation from the specification to the input.

A sound lower bound Λ·h + c of the specification is carried backwards through the chain:
- through an affine map y = lin(x) + b: Λ ← linᵀ(Λ), c ← c + Λ·b;
- through an activation a with input bounds [l, u]: a(z) ≥ α·z (α ∈ [slope, 1], CROWN's adaptive
  choice: 1 when u ≥ −l) where Λ ≥ 0, and a(z) ≤ su·z + tu (the chord) where Λ < 0; stable
  neurons are exact;
- through a sum y = Σcᵢxᵢ of network values: each input gets cᵢΛ; through a concatenation each input
  gets its slice of Λ; through max pooling, :meth:`.pooling.MaxPool.backward`;
- on a DAG, a value read by several layers collects the sum of their Λ (layers are visited in reverse
  topological order, so every consumer is done before its producer);
- at the input, :meth:`InputSet.close` takes the minimum over the input set.

Intermediate bounds (the [l, u] of each activation's input) come from the same procedure run from that
layer with Λ = ±I, in chunks of specifications to bound memory, intersected with IBP's.
Every step subtracts a float64 rounding allowance (``docs/bounds.md``): the coefficients computed are not
the exact products, so the identity Λ·h = (linᵀΛ)·x + Λ·b holds up to γ·(|Λ|·(|lin|(M) + |b|)), M the
magnitude of the layer's input over the set.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from .cancel import checkpoint
from .ibp import Box, intersect, layer_interval
from .inputs import InputSet
from .layers import UNIT64, Activation, Affine, Concat, Layer, Network, Sum, gamma
from .pooling import MaxPool

#: specifications per backward pass for intermediate bounds, times the batch and the layer size
CHUNK_ELEMENTS = 1 << 24


def _sum(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(2).sum(2)


def _magnitude(box: Box) -> torch.Tensor:
    return torch.maximum(box[0].abs(), box[1].abs())


def backward(net: Network, boxes: list[Box], end: int, lam: torch.Tensor, inputs: InputSet,
             alphas: Mapping[int, torch.Tensor] | None = None) -> torch.Tensor:
    """Lower bound over the input set of Λ·h_end, h_end the value ``end`` (0 the input, k + 1 the output of
    layer k, ``len(net.layers)`` the logits), for Λ of shape (B, S, *shape): (B, S)."""
    checkpoint()  # a spent budget stops here, between passes (:mod:`.cancel`)
    const = lam.new_zeros(lam.shape[:2])
    slack = lam.new_zeros(lam.shape[:2])
    lams = {end: lam}
    for k in range(end - 1, -1, -1):
        if k + 1 not in lams:
            continue
        src = net.inputs_of(k)
        pieces, extra, allowance = _step(net.layers[k], [boxes[v] for v in src], lams.pop(k + 1),
                                         None if alphas is None else alphas.get(k))
        const = const + extra
        slack = slack + allowance + 4 * UNIT64 * const.abs()
        for v, piece in zip(src, pieces):
            if v in lams:  # a value with several consumers: the sum rounds once per element
                slack = slack + 2 * gamma(2, UNIT64) * _sum((lams[v].abs() + piece.abs()) * _magnitude(boxes[v]).unsqueeze(1))
                piece = lams[v] + piece
            lams[v] = piece
    lam0 = lams.get(0, lam.new_zeros(lam.shape[0], lam.shape[1], *net.in_shape))
    return inputs.close(lam0, const) - slack


def _step(layer: Layer, boxes: list[Box], lam: torch.Tensor, alpha: torch.Tensor | None
          ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """Λ through one layer: (Λ on each input, constant, float64 allowance), with Λ·out ≥ Σ Λᵢ·inᵢ + constant
    − allowance over the boxes."""
    zero = lam.new_zeros(lam.shape[:2])
    if isinstance(layer, Affine):
        out_mag = layer.magnitude(_magnitude(boxes[0])).unsqueeze(1)
        slack = 2 * gamma(layer.roundings + 4, UNIT64) * _sum(lam.abs() * out_mag)
        return [layer.transpose(lam)], layer.bias_term(lam), slack
    if isinstance(layer, Activation):
        slack = gamma(8, UNIT64) * _sum(lam.abs() * (2 * _magnitude(boxes[0]).unsqueeze(1)))
        new, extra, tu = _relax(layer, boxes[0], lam, alpha)
        return [new], extra, slack + gamma(8, UNIT64) * _sum(tu)
    if isinstance(layer, Sum):
        mag = sum(abs(c) * _magnitude(b) for c, b in zip(layer.coeffs, boxes))
        slack = 2 * gamma(4, UNIT64) * _sum(lam.abs() * mag.unsqueeze(1))  # type: ignore[union-attr]
        return [c * lam for c in layer.coeffs], zero, slack
    if isinstance(layer, Concat):
        return list(layer.split(lam, layer.dim + 1)), zero, zero
    if isinstance(layer, MaxPool):
        new, extra, slack = layer.backward(lam, *boxes[0])
        return [new], extra, slack
    raise AssertionError(f"no backward rule for {type(layer).__name__}")


def _relax(layer: Activation, box: Box, lam: torch.Tensor, alpha: torch.Tensor | None
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(new Λ, Σ Λ⁻·tu, |Λ|·|tu| for the allowance)."""
    lo, hi = box[0].unsqueeze(1), box[1].unsqueeze(1)
    a_def, su, tu = layer.relaxation(lo, hi)
    if alpha is not None:
        a_def = torch.where(layer.unstable(lo, hi), alpha.clamp(layer.slope, 1.0), a_def)
    pos, neg = lam.clamp_min(0), lam.clamp_max(0)
    new = pos * a_def + neg * su
    return new, _sum(neg * tu), (lam.abs() * tu.abs())


def unit_rows(index: torch.Tensor, sign: float, shape: tuple[int, ...], batch: int, like: torch.Tensor) -> torch.Tensor:
    """sign·e_i for each flat neuron index i: (batch, len(index), *shape)."""
    n = 1
    for s in shape:
        n *= s
    rows = torch.zeros(index.numel(), n, dtype=like.dtype, device=like.device)
    rows[torch.arange(index.numel(), device=like.device), index] = sign
    return rows.view(1, index.numel(), *shape).expand(batch, -1, *shape)


def refine_index(layer: Layer, box: Box) -> torch.Tensor | None:
    """Flat indices of the input neurons of a nonlinear layer whose relaxation is inexact under ``box`` in
    some example (None for a linear layer)."""
    if isinstance(layer, Activation):
        return layer.unstable(*box).flatten(1).any(0).nonzero().squeeze(1)
    if isinstance(layer, MaxPool):
        return layer.undecided_inputs(*box)
    return None


def crown_box(net: Network, boxes: list[Box], end: int, inputs: InputSet, index: torch.Tensor) -> Box:
    """CROWN bounds on value ``end`` for the flat neurons ``index`` (the others keep their box), in
    chunks of specifications."""
    lo_box, hi_box = boxes[end]
    batch, shape = lo_box.shape[0], tuple(lo_box.shape[1:])
    lo, hi = lo_box.flatten(1).clone(), hi_box.flatten(1).clone()
    chunk = max(1, CHUNK_ELEMENTS // max(1, batch * lo.shape[1]))
    for start in range(0, index.numel(), chunk):
        part = index[start:start + chunk]
        lo[:, part] = backward(net, boxes, end, unit_rows(part, 1.0, shape, batch, lo), inputs)
        hi[:, part] = -backward(net, boxes, end, unit_rows(part, -1.0, shape, batch, lo), inputs)
    return lo.view(batch, *shape), hi.view(batch, *shape)


def layer_boxes(net: Network, inputs: InputSet, refine: bool = True) -> list[Box]:
    """Bounds on every value (see :func:`backward`): IBP, with the input of each nonlinear layer refined by
    CROWN when ``refine`` (for the neurons whose relaxation is inexact under IBP)."""
    boxes = [inputs.box()]
    for k, layer in enumerate(net.layers):
        v = net.inputs_of(k)[0]
        index = refine_index(layer, boxes[v]) if refine and v > 0 else None
        if index is not None and index.numel():
            boxes[v] = intersect(boxes[v], crown_box(net, boxes, v, inputs, index))
        boxes.append(layer_interval(layer, [boxes[s] for s in net.inputs_of(k)]))
    return boxes


def spec_bounds(net: Network, spec: torch.Tensor, inputs: InputSet, boxes: list[Box] | None = None,
                alphas: Mapping[int, torch.Tensor] | None = None) -> torch.Tensor:
    """Lower bounds of spec·logits over the set, spec of shape (B, S, K): (B, S)."""
    boxes = layer_boxes(net, inputs) if boxes is None else boxes
    return backward(net, boxes, len(net.layers), spec, inputs, alphas)


def ibp_spec_bounds(net: Network, spec: torch.Tensor, boxes: list[Box]) -> torch.Tensor:
    """Lower bounds of spec·logits from the output box alone (IBP's bound)."""
    lo, hi = boxes[-1][0].unsqueeze(1), boxes[-1][1].unsqueeze(1)
    value = (spec.clamp_min(0) * lo + spec.clamp_max(0) * hi).sum(2)
    mag = (spec.abs() * torch.maximum(lo.abs(), hi.abs())).sum(2)
    return value - 2 * gamma(spec.shape[2] + 2, UNIT64) * mag
