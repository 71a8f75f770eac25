"""CROWN (Zhang et al. 2018): a backward linear relaxation from the specification to the input.

A sound lower bound Λ·h + c of the specification is carried backwards through the chain:
- through an affine map y = lin(x) + b: Λ ← linᵀ(Λ), c ← c + Λ·b;
- through an activation a with input bounds [l, u]: a(z) ≥ α·z (α ∈ [slope, 1], CROWN's adaptive
  choice: 1 when u ≥ −l) where Λ ≥ 0, and a(z) ≤ su·z + tu (the chord) where Λ < 0; stable
  neurons are exact;
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

from .ibp import Box, intersect, layer_interval
from .inputs import InputSet
from .layers import UNIT64, Activation, Affine, Network, gamma

#: specifications per backward pass for intermediate bounds, times the batch and the layer size
CHUNK_ELEMENTS = 1 << 24


def _sum(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(2).sum(2)


def _magnitude(box: Box) -> torch.Tensor:
    return torch.maximum(box[0].abs(), box[1].abs())


def backward(net: Network, boxes: list[Box], end: int, lam: torch.Tensor, inputs: InputSet,
             alphas: Mapping[int, torch.Tensor] | None = None) -> torch.Tensor:
    """Lower bound over the input set of Λ·h_end, h_end the input of layer ``end`` (the logits when
    ``end == len(net.layers)``), for Λ of shape (B, S, *shape): (B, S)."""
    const = lam.new_zeros(lam.shape[:2])
    slack = lam.new_zeros(lam.shape[:2])
    for k in range(end - 1, -1, -1):
        layer, box = net.layers[k], boxes[k]
        mag = _magnitude(box)
        if isinstance(layer, Affine):
            out_mag = layer.magnitude(mag).unsqueeze(1)
            slack = slack + 2 * gamma(layer.roundings + 4, UNIT64) * _sum(lam.abs() * out_mag)
            const = const + layer.bias_term(lam)
            lam = layer.transpose(lam)
        else:
            slack = slack + gamma(8, UNIT64) * _sum(lam.abs() * (2 * mag.unsqueeze(1)))
            lam, extra, tu = _relax(layer, box, lam, None if alphas is None else alphas.get(k))
            slack = slack + gamma(8, UNIT64) * _sum(tu)
            const = const + extra
        slack = slack + 4 * UNIT64 * const.abs()
    return inputs.close(lam, const) - slack


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


def crown_box(net: Network, boxes: list[Box], end: int, inputs: InputSet) -> Box:
    """CROWN bounds on the input of layer ``end`` (an activation), for the neurons that are unstable
    under ``boxes[end]`` in some example (the others keep their box), in chunks of specifications."""
    lo_box, hi_box = boxes[end]
    batch, shape = lo_box.shape[0], tuple(lo_box.shape[1:])
    index = ((lo_box < 0) & (hi_box > 0)).flatten(1).any(0).nonzero().squeeze(1)
    lo, hi = lo_box.flatten(1).clone(), hi_box.flatten(1).clone()
    chunk = max(1, CHUNK_ELEMENTS // max(1, batch * lo.shape[1]))
    for start in range(0, index.numel(), chunk):
        part = index[start:start + chunk]
        lo[:, part] = backward(net, boxes, end, unit_rows(part, 1.0, shape, batch, lo), inputs)
        hi[:, part] = -backward(net, boxes, end, unit_rows(part, -1.0, shape, batch, lo), inputs)
    return lo.view(batch, *shape), hi.view(batch, *shape)


def layer_boxes(net: Network, inputs: InputSet, refine: bool = True) -> list[Box]:
    """Bounds on every layer's input (and the output): IBP, with each activation's input refined by
    CROWN when ``refine`` (and some neuron is unstable under IBP)."""
    boxes = [inputs.box()]
    for k, layer in enumerate(net.layers):
        if refine and isinstance(layer, Activation) and k > 0 and bool(layer.unstable(*boxes[k]).any()):
            boxes[k] = intersect(boxes[k], crown_box(net, boxes, k, inputs))
        boxes.append(layer_interval(layer, *boxes[k]))
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
