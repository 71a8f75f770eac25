"""How far the model's own floating-point forward pass can be from the exact network, over an input set.

The bounds of :mod:`.crown` and :mod:`.ibp` hold for the exact (real-arithmetic) network.  The model runs
in float32 (unit roundoff u = 2⁻²⁴).  Per example, and for every input of the set at once, we bound
E_k ≥ |ĥ_k − h_k| elementwise, computed − exact, layer by layer (``docs/bounds.md``):

- an affine layer whose outputs are sums of k rounded operations (a dot product of fan-in n plus a bias:
  k = n + 1), evaluated on a computed input ĥ with |ĥ − h| ≤ E and |h| ≤ M, is off by at most
  |lin|(E) + γ_k·(|lin|(M + E) + |b|) for *any* order of summation, blocking or FMA use
  (Higham, Thm. 3.1 and §3.1); BatchNorm and the normalisation add their constants' magnitudes;
- ReLU and LeakyReLU are 1-Lipschitz and their float evaluation is exact or one rounding of a·x, so
  E is kept (plus u·a·(M + E) for LeakyReLU); max pooling is exact and 1-Lipschitz in each
  window's ℓ∞ norm, so E becomes the window's max of E; a concatenation concatenates E;
- a sum Σcᵢxᵢ of network values (a residual sum, a difference, ``a + α·b``) with r rounded operations
  (one per addition, one per product by cᵢ ≠ ±1) gives Σ|cᵢ|Eᵢ + γ_r·Σ|cᵢ|(Mᵢ + Eᵢ).

This assumes what ``certify.device.certificate_precision`` enforces: no TF32, no reduced-precision
autocast, no Winograd or FFT convolutions.  The whole allowance is doubled for the float64 rounding of
this computation itself.
"""

from __future__ import annotations

import torch

from .ibp import Box
from .layers import Activation, Concat, Layer, Network, Sum, gamma
from .pooling import MaxPool


def model_error(net: Network, boxes: list[Box]) -> torch.Tensor:
    """E on the logits, (B, K): |computed − exact| ≤ E for every input of the set."""
    errs = [torch.zeros_like(boxes[0][0])]
    for k, layer in enumerate(net.layers):
        src = net.inputs_of(k)
        mags = [torch.maximum(boxes[v][0].abs(), boxes[v][1].abs()) for v in src]
        errs.append(_layer_error(layer, [errs[v] for v in src], mags, net.model_unit))
    return 2.0 * errs[-1]


def _layer_error(layer: Layer, errs: list[torch.Tensor], mags: list[torch.Tensor], unit: float) -> torch.Tensor:
    err, mag = errs[0], mags[0]
    if isinstance(layer, Activation):
        return err + unit * layer.slope * (mag + err) if layer.slope else err
    if isinstance(layer, MaxPool):
        return layer.forward(err)
    if isinstance(layer, Concat):
        return layer.forward(*errs)
    if isinstance(layer, Sum):
        spread = sum(abs(c) * e for c, e in zip(layer.coeffs, errs))
        size = sum(abs(c) * (m + e) for c, m, e in zip(layer.coeffs, mags, errs))
        return spread + gamma(layer.roundings, unit) * size  # type: ignore[return-value,operator]
    return layer.abs_lin(err) + gamma(layer.roundings, unit) * layer.magnitude(mag + err)


def spec_error(err: torch.Tensor, spec: torch.Tensor) -> torch.Tensor:
    """Allowance on spec·logits: Σ|spec|·E, (B, S), plus the float64 subtraction of float32 logits."""
    return 2.0 * (spec.abs() * err.unsqueeze(1)).sum(2)
