"""Interval bound propagation (Gowal et al. 2018) in float64, rounded outwards.

An affine map takes the box with centre m and radius r to centre lin(m) + b and radius |lin|(r); the
result is widened by 2γ_{k+4}·(|lin|(M) + |b|), M the input's magnitude, which covers float64 rounding
(``docs/bounds.md``).  Activations are monotone and map endpoints.
"""

from __future__ import annotations

import torch

from .inputs import InputSet
from .layers import UNIT64, Activation, Affine, Layer, Network, gamma

Box = tuple[torch.Tensor, torch.Tensor]


def _up(t: torch.Tensor) -> torch.Tensor:
    return torch.nextafter(t, torch.full_like(t, torch.inf))


def affine_interval(layer: Affine, lo: torch.Tensor, hi: torch.Tensor) -> Box:
    mid = (lo + hi) / 2
    rad = _up(torch.maximum(hi - mid, mid - lo))
    centre = layer.forward(mid)
    radius = layer.abs_lin(rad)
    mag = torch.maximum(lo.abs(), hi.abs())
    slack = 2 * gamma(layer.roundings + 4, UNIT64) * (layer.magnitude(mag) + radius.abs())
    radius = radius + slack
    return centre - radius, centre + radius


def layer_interval(layer: Layer, lo: torch.Tensor, hi: torch.Tensor) -> Box:
    if isinstance(layer, Activation):
        return layer.interval(lo, hi)
    return affine_interval(layer, lo, hi)


def ibp_bounds(net: Network, inputs: InputSet) -> list[Box]:
    """Bounds on the input of every layer and on the output: ``len(net.layers) + 1`` boxes."""
    boxes = [inputs.box()]
    for layer in net.layers:
        boxes.append(layer_interval(layer, *boxes[-1]))
    return boxes


def intersect(a: Box, b: Box) -> Box:
    return torch.maximum(a[0], b[0]), torch.minimum(a[1], b[1])
