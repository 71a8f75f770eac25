"""A 2-D convolution as an operator (:class:`ConvSpec`), its exact ℓ∞→ℓ∞ bound, [L2NNN]'s kernel
bound in L2, and power-iteration estimates of the layer itself (never used as bounds).

ℓ∞→ℓ∞: the largest per-output-channel kernel ℓ1 norm (exact as soon as one output sees its whole
window).  [L2NNN]: √(⌈K₁/S₁⌉⌈K₂/S₂⌉)·‖kernel‖.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ...defaults import LIPSCHITZ_CONV_POWER_ITERATIONS, LIPSCHITZ_POWER_ITERATIONS
from .dense import ROUNDING_SLACK, gram_bound, lanczos_top, power_iteration

#: Gram steps for the [L2NNN] kernel bound (any number gives a guaranteed bound; it rarely wins).
L2NNN_GRAM_ITERATIONS = 8


class ConvSpec:
    """A 2-D convolution ``x ↦ conv2d(x, weight, stride, padding, dilation, groups)`` on C×H×W inputs."""

    def __init__(self, weight: torch.Tensor, stride, padding, dilation, groups: int,
                 in_shape: tuple[int, int, int]):  # type: ignore[no-untyped-def]
        self.weight = weight.detach().double()
        self.stride = tuple(stride)
        self.padding = tuple(padding)
        self.dilation = tuple(dilation)
        self.groups = int(groups)
        self.in_shape = tuple(int(s) for s in in_shape)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x.unsqueeze(0), self.weight, None, self.stride, self.padding, self.dilation,
                        self.groups).squeeze(0)

    def apply_t(self, y: torch.Tensor) -> torch.Tensor:
        x = torch.zeros(self.in_shape, dtype=torch.float64, device=self.weight.device, requires_grad=True)
        with torch.enable_grad():
            out = self.apply(x)
            (g,) = torch.autograd.grad(out, x, y)
        return g


def conv_linf_bound(spec: ConvSpec) -> float:
    """The largest per-output-channel kernel ℓ1 norm (the ℓ∞→ℓ∞ bound), summed in float64."""
    return float(spec.weight.abs().flatten(1).sum(1).max()) * (1 + ROUNDING_SLACK)


def conv_l2nnn_bound(spec: ConvSpec) -> float:
    """[L2NNN]: √(⌈K₁/S₁⌉⌈K₂/S₂⌉)·‖kernel‖ with ‖·‖ the guaranteed σ of the flattened kernel."""
    k1, k2 = effective_kernel(spec)
    factor = math.ceil(k1 / spec.stride[0]) * math.ceil(k2 / spec.stride[1])
    per_group = spec.weight.shape[0] // spec.groups
    norms = [gram_bound(spec.weight[g * per_group:(g + 1) * per_group].flatten(1), L2NNN_GRAM_ITERATIONS)
             for g in range(spec.groups)]
    return math.sqrt(factor) * max(norms)


def effective_kernel(spec: ConvSpec) -> tuple[int, int]:
    """The dilated kernel's extent (k₁, k₂): d·(k − 1) + 1 per spatial side."""
    k1, k2 = spec.weight.shape[-2:]
    return (spec.dilation[0] * (k1 - 1) + 1, spec.dilation[1] * (k2 - 1) + 1)


def conv_power_estimate(spec: ConvSpec, iterations: int = LIPSCHITZ_POWER_ITERATIONS) -> float:
    return power_iteration(spec.apply, spec.apply_t, spec.in_shape, iterations, device=spec.weight.device)


def conv_power_estimate_from(spec: ConvSpec, start: torch.Tensor | None,
                             iterations: int = LIPSCHITZ_CONV_POWER_ITERATIONS) -> float:
    """σ_max estimate of the layer itself (zero padding, stride): Lanczos with full
    reorthogonalisation on AᵀA (float32 products) from ``start`` (a batch of inputs, e.g. the
    Fourier plane wave, plus a little noise) or a random input; the value is ‖Ax‖/‖x‖ in float64 at
    the top Ritz vector x, so it is the norm of a real input's image: never above ‖A‖ (up to
    float64 rounding).  An estimate, never used as a bound."""
    c, h, w = spec.in_shape
    dev = spec.weight.device
    gen = torch.Generator(device=dev).manual_seed(0)
    rand = torch.randn((c, h, w), generator=gen, dtype=torch.float64, device=dev)
    x = rand if start is None else start[0] + 1e-2 * rand * (start[0].norm() / rand.norm().clamp_min(1e-300))
    w32 = spec.weight.float()
    args = (spec.stride, spec.padding, spec.dilation, spec.groups)

    def gram(q: torch.Tensor) -> torch.Tensor:  # AᵀA in float32
        y = F.conv2d(q.view(1, c, h, w), w32, None, *args)
        return torch.nn.grad.conv2d_input((1, c, h, w), w32, y, *args)

    _, top = lanczos_top(gram, (x / x.norm().clamp_min(1e-300)).flatten().float(), iterations, 1e-6)
    x = top.double().view(1, c, h, w)
    y = F.conv2d(x, spec.weight, None, *args)
    nx = float(x.norm())
    return float(y.norm()) / nx if nx > 0 else 0.0
