"""How far the model's own floating-point forward pass can be from the exact network, over an input set.

The bounds of :mod:`.crown` and :mod:`.ibp` hold for the exact (real-arithmetic) network.  The model runs
in float32 (unit roundoff u = 2⁻²⁴).  Per example, and for every input of the set at once, we bound
E_k ≥ |ĥ_k − h_k| elementwise, computed − exact, layer by layer (``docs/bounds.md``):

- an affine layer whose outputs are sums of k rounded operations (a dot product of fan-in n plus a bias:
  k = n + 1), evaluated on a computed input ĥ with |ĥ − h| ≤ E and |h| ≤ M, is off by at most
  |lin|(E) + γ_k·(|lin|(M + E) + |b|) for *any* order of summation, blocking or FMA use
  (Higham, Thm. 3.1 and §3.1); BatchNorm and the normalisation add their constants' magnitudes;
- ReLU and LeakyReLU are 1-Lipschitz and their float evaluation is exact or one rounding of a·x, so
  E is kept (plus u·a·(M + E) for LeakyReLU).

This assumes what ``certify.device.certificate_precision`` enforces: no TF32, no reduced-precision
autocast, no Winograd or FFT convolutions.  The whole allowance is doubled for the float64 rounding of
this computation itself.
"""

from __future__ import annotations

import torch

from .ibp import Box
from .layers import Activation, Network, gamma


def model_error(net: Network, boxes: list[Box]) -> torch.Tensor:
    """E on the logits, (B, K): |computed − exact| ≤ E for every input of the set."""
    unit = net.model_unit
    err = torch.zeros_like(boxes[0][0])
    for layer, box in zip(net.layers, boxes):
        mag = torch.maximum(box[0].abs(), box[1].abs())
        if isinstance(layer, Activation):
            if layer.slope:
                err = err + unit * layer.slope * (mag + err)
            continue
        err = layer.abs_lin(err) + gamma(layer.roundings, unit) * layer.magnitude(mag + err)
    return 2.0 * err


def spec_error(err: torch.Tensor, spec: torch.Tensor) -> torch.Tensor:
    """Allowance on spec·logits: Σ|spec|·E, (B, S), plus the float64 subtraction of float32 logits."""
    return 2.0 * (spec.abs() * err.unsqueeze(1)).sum(2)
