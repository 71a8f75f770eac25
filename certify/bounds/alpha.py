"""α-CROWN (Xu et al. 2021): CROWN with the lower slopes of unstable neurons optimised.

Every α ∈ [slope, 1] gives a sound bound, so projected gradient ascent on α (Adam, then clamping)
only ever evaluates sound bounds, and every bound keeps the best value seen, starting from CROWN's own
(so α-CROWN is never below CROWN).  The slopes are optimised per example, per specification and per
neuron, for two kinds of specification (Xu et al. 2021, §3.1):

1. **intermediate bounds** — for each nonlinear layer in topological order (after the first), the
   inexact neurons of its input get bounds ±e_i optimised over the slopes of the activations before
   it (each chunk of specifications its own slopes, so memory stays bounded); each neuron keeps the
   best lower and upper bound seen, the boxes of the later values are re-tightened by IBP, and the
   next layer starts from these tighter boxes;
2. the final **specification**, with the tightened boxes.

``steps`` iterations are spent on each chunk of each layer and on the specification.
"""

from __future__ import annotations

import torch

from .crown import CHUNK_ELEMENTS, backward, refine_index, unit_rows
from .ibp import Box, intersect, layer_interval
from .inputs import InputSet
from .layers import Activation, Network

DEFAULT_STEPS = 20
DEFAULT_LR = 0.1
#: α-CROWN keeps a graph for the gradient: a quarter of CROWN's chunk of specifications
ALPHA_CHUNK_ELEMENTS = CHUNK_ELEMENTS // 4


def alpha_spec_bounds(net: Network, spec: torch.Tensor, inputs: InputSet, boxes: list[Box], *,
                      steps: int = DEFAULT_STEPS, lr: float = DEFAULT_LR, intermediate: bool = True) -> torch.Tensor:
    """Best lower bounds of spec·logits over the set, (B, S), after ``steps`` iterations (with the
    intermediate bounds optimised first when ``intermediate``)."""
    return alpha_bounds(net, spec, inputs, boxes, steps=steps, lr=lr, intermediate=intermediate)[0]


def alpha_bounds(net: Network, spec: torch.Tensor, inputs: InputSet, boxes: list[Box], *,
                 steps: int = DEFAULT_STEPS, lr: float = DEFAULT_LR, intermediate: bool = True
                 ) -> tuple[torch.Tensor, list[Box]]:
    """(the lower bounds of :func:`alpha_spec_bounds`, the boxes they rest on: ``boxes`` or tighter)."""
    end = len(net.layers)
    crown = backward(net, boxes, end, spec, inputs)
    if intermediate and steps > 0:
        boxes = alpha_boxes(net, boxes, inputs, steps=steps, lr=lr)
    return torch.maximum(crown, optimise(net, boxes, end, spec, inputs, steps, lr)), boxes


def optimise(net: Network, boxes: list[Box], end: int, spec: torch.Tensor, inputs: InputSet, steps: int,
             lr: float) -> torch.Tensor:
    """The best lower bound of spec·h_end seen over CROWN's slopes and ``steps`` projected Adam steps."""
    best = backward(net, boxes, end, spec, inputs)
    if steps <= 0:
        return best
    with torch.inference_mode(False), torch.enable_grad():
        alphas = _initial_alphas(net, boxes, spec.shape[1], end)
        if not alphas:
            return best
        opt = torch.optim.Adam(list(alphas.values()), lr=lr)
        spec_t, inputs_t = spec.clone(), _plain(inputs)
        boxes_t = [(lo.clone(), hi.clone()) for lo, hi in boxes]
        for _ in range(steps):
            bound = backward(net, boxes_t, end, spec_t, inputs_t, alphas)
            best = torch.maximum(best, bound.detach())
            if not bound.requires_grad:  # no slope reaches this value (they lie on other branches)
                return best
            opt.zero_grad()
            (-bound.sum()).backward()
            opt.step()
            with torch.no_grad():
                for k, a in alphas.items():
                    a.clamp_(net.layers[k].slope, 1.0)
        with torch.no_grad():
            best = torch.maximum(best, backward(net, boxes_t, end, spec_t, inputs_t, alphas))
    return best


def alpha_boxes(net: Network, boxes: list[Box], inputs: InputSet, *, steps: int = DEFAULT_STEPS,
                lr: float = DEFAULT_LR) -> list[Box]:
    """``boxes`` with the inexact input neurons of every nonlinear layer (but the first) re-bounded by
    optimised slopes, layer by layer; later boxes re-tightened by IBP."""
    boxes = list(boxes)
    for k, layer in enumerate(net.layers):
        v = net.inputs_of(k)[0]
        if v == 0 or not _activations_before(net, v):
            continue
        index = refine_index(layer, boxes[v])
        if index is None or not index.numel():
            continue
        boxes[v] = intersect(boxes[v], _alpha_box(net, boxes, v, inputs, index, steps, lr))
        for j in range(v, len(net.layers)):  # the boxes computed from the tighter one
            boxes[j + 1] = intersect(boxes[j + 1], layer_interval(net.layers[j], [boxes[s] for s in net.inputs_of(j)]))
    return boxes


def _alpha_box(net: Network, boxes: list[Box], end: int, inputs: InputSet, index: torch.Tensor, steps: int,
               lr: float) -> Box:
    lo_box, hi_box = boxes[end]
    batch, shape = lo_box.shape[0], tuple(lo_box.shape[1:])
    lo, hi = lo_box.flatten(1).clone(), hi_box.flatten(1).clone()
    chunk = max(1, ALPHA_CHUNK_ELEMENTS // max(1, batch * lo.shape[1]))
    for start in range(0, index.numel(), chunk):
        part = index[start:start + chunk]
        lo[:, part] = torch.maximum(lo[:, part], optimise(net, boxes, end, unit_rows(part, 1.0, shape, batch, lo),
                                                          inputs, steps, lr))
        hi[:, part] = torch.minimum(hi[:, part], -optimise(net, boxes, end, unit_rows(part, -1.0, shape, batch, lo),
                                                           inputs, steps, lr))
    return lo.view(batch, *shape), hi.view(batch, *shape)


def _activations_before(net: Network, end: int) -> bool:
    return any(isinstance(layer, Activation) for layer in net.layers[:end])


def _plain(inputs: InputSet) -> InputSet:
    return InputSet(inputs.x0.clone(), inputs.eps.clone(), inputs.norm, inputs.lo, inputs.hi)


def _initial_alphas(net: Network, boxes: list[Box], specs: int, end: int) -> dict[int, torch.Tensor]:
    """CROWN's adaptive slopes, one per example, specification and neuron, for every activation before
    value ``end`` with an unstable neuron."""
    out = {}
    for k, layer in enumerate(net.layers[:end]):
        if not isinstance(layer, Activation):
            continue
        lo, hi = boxes[net.inputs_of(k)[0]]
        if not bool(layer.unstable(lo, hi).any()):
            continue
        a0, _, _ = layer.relaxation(lo.clone(), hi.clone())
        out[k] = a0.unsqueeze(1).expand(-1, specs, *a0.shape[1:]).clone().requires_grad_(True)
    return out
