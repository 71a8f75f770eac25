"""Interval bound propagation (Gowal et al. 2018) in float64, rounded outwards.

An affine map takes the box with centre m and radius r to centre lin(m) + b and radius |lin|(r); the
result is widened by 2γ_{k+4}·(|lin|(M) + |b|), M the input's magnitude, which covers float64 rounding
(``docs/bounds.md``).  Activations and max pooling are monotone and map endpoints; a sum Σcᵢxᵢ of network
values adds the matching ends (widened by 2γ_{n+2}·Σ|cᵢ|Mᵢ); a concatenation concatenates the boxes.
"""

from __future__ import annotations

import torch

from .inputs import InputSet
from .layers import UNIT64, Activation, Affine, Concat, Layer, Network, Sum, gamma
from .pooling import MaxPool

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


def sum_interval(layer: Sum, boxes: list[Box]) -> Box:
    low = sum(torch.minimum(c * lo, c * hi) for c, (lo, hi) in zip(layer.coeffs, boxes))
    high = sum(torch.maximum(c * lo, c * hi) for c, (lo, hi) in zip(layer.coeffs, boxes))
    mag = sum(abs(c) * torch.maximum(lo.abs(), hi.abs()) for c, (lo, hi) in zip(layer.coeffs, boxes))
    slack = 2 * gamma(len(layer.coeffs) + 2, UNIT64) * mag
    return low - slack, high + slack  # type: ignore[operator]


def layer_interval(layer: Layer, boxes: list[Box]) -> Box:
    """The box of a layer's output from the boxes of its inputs."""
    if isinstance(layer, (Activation, MaxPool)):
        return layer.interval(*boxes[0])
    if isinstance(layer, Sum):
        return sum_interval(layer, boxes)
    if isinstance(layer, Concat):
        return layer.forward(*(b[0] for b in boxes)), layer.forward(*(b[1] for b in boxes))
    return affine_interval(layer, *boxes[0])


def ibp_bounds(net: Network, inputs: InputSet) -> list[Box]:
    """Bounds on every value (the input, each layer's output): ``len(net.layers) + 1`` boxes."""
    boxes = [inputs.box()]
    for k, layer in enumerate(net.layers):
        boxes.append(layer_interval(layer, [boxes[v] for v in net.inputs_of(k)]))
    return boxes


def intersect(a: Box, b: Box) -> Box:
    return torch.maximum(a[0], b[0]), torch.minimum(a[1], b[1])
