"""α-CROWN (Xu et al. 2021): CROWN with the lower slopes of unstable neurons optimised.

Every α ∈ [slope, 1] gives a sound bound, so projected gradient ascent on α (Adam, then clamping)
only ever evaluates sound bounds; each specification keeps the best bound seen, starting from CROWN's
own (so α-CROWN is never below CROWN).  Intermediate bounds are CROWN's and stay fixed; the slopes
are optimised per example, per specification and per neuron.
"""

from __future__ import annotations

import torch

from .crown import backward
from .ibp import Box
from .inputs import InputSet
from .layers import Activation, Network

DEFAULT_STEPS = 20
DEFAULT_LR = 0.1


def alpha_spec_bounds(net: Network, spec: torch.Tensor, inputs: InputSet, boxes: list[Box], *,
                      steps: int = DEFAULT_STEPS, lr: float = DEFAULT_LR) -> torch.Tensor:
    """Best lower bounds of spec·logits over the set, (B, S), after ``steps`` iterations."""
    end = len(net.layers)
    best = backward(net, boxes, end, spec, inputs)
    if steps <= 0:
        return best
    with torch.inference_mode(False), torch.enable_grad():
        alphas = _initial_alphas(net, boxes, spec.shape[1])
        if not alphas:
            return best
        opt = torch.optim.Adam(list(alphas.values()), lr=lr)
        spec_t, inputs_t = spec.clone(), _plain(inputs)
        boxes_t = [(lo.clone(), hi.clone()) for lo, hi in boxes]
        for _ in range(steps):
            bound = backward(net, boxes_t, end, spec_t, inputs_t, alphas)
            best = torch.maximum(best, bound.detach())
            opt.zero_grad()
            (-bound.sum()).backward()
            opt.step()
            with torch.no_grad():
                for k, a in alphas.items():
                    a.clamp_(net.layers[k].slope, 1.0)  # type: ignore[union-attr]
        with torch.no_grad():
            best = torch.maximum(best, backward(net, boxes_t, end, spec_t, inputs_t, alphas))
    return best


def _plain(inputs: InputSet) -> InputSet:
    return InputSet(inputs.x0.clone(), inputs.eps.clone(), inputs.norm, inputs.lo, inputs.hi)


def _initial_alphas(net: Network, boxes: list[Box], specs: int) -> dict[int, torch.Tensor]:
    """CROWN's adaptive slopes, one per example, specification and neuron, for every activation with an
    unstable neuron."""
    out = {}
    for k, layer in enumerate(net.layers):
        if not isinstance(layer, Activation):
            continue
        lo, hi = boxes[k]
        if not bool(layer.unstable(lo, hi).any()):
            continue
        a0, _, _ = layer.relaxation(lo.clone(), hi.clone())
        out[k] = a0.unsqueeze(1).expand(-1, specs, *a0.shape[1:]).clone().requires_grad_(True)
    return out
