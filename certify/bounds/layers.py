"""The layers bound propagation understands, in float64, each with what every method needs.

A network is a DAG of :class:`Affine` maps (Linear, Conv2d, AvgPool, BatchNorm in eval, the input
normalisation, reshapes, add/sub/mul/div by constants), :class:`Activation` s (ReLU, LeakyReLU),
:class:`Sum` s of network values (residual sums, differences), :class:`Concat` s and max pooling
(:class:`.pooling.MaxPool`), in topological order.
An affine map is ``lin(x) + bias`` with ``lin`` linear; it also gives ``abs_lin`` (the same map with
every weight replaced by its absolute value, so |lin(x)| ≤ abs_lin(|x|)), and the rounding allowance
of the model's own floating-point forward pass (``docs/bounds.md``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

Fn = Callable[[torch.Tensor], torch.Tensor]


def gamma(k: int, unit: float) -> float:
    """γ_k = k·u / (1 − k·u) (Higham, Thm. 3.1): a sum of k rounded operations in any order is off
    by at most γ_k times the sum of magnitudes of its terms."""
    ku = k * unit
    if ku >= 0.5:
        return float("inf")
    return ku / (1.0 - ku)


UNIT64 = 2.0 ** -53  #: unit roundoff of float64


@dataclass(frozen=True, eq=False)
class Affine:
    """y = lin(x) + bias over per-example shapes ``in_shape`` → ``out_shape`` (batch first at run time)."""

    op: str  #: the ATen op it came from, for messages
    lin: Fn
    abs_lin: Fn
    bias: torch.Tensor | None  #: broadcastable to (1, *out_shape), float64
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    #: rounded operations per output of the model's float forward pass (fan-in + 1 for a dot product)
    roundings: int
    #: W as a matrix when the map is a Linear layer (fast transpose); else the transpose goes through autograd
    matrix: torch.Tensor | None = field(default=None, repr=False)
    #: extra magnitude in the float forward's rounding term (BatchNorm: |s|·|mean| + |β|), broadcastable
    extra: torch.Tensor | None = None
    #: how the transpose is taken: ``general`` (autograd), ``diagonal`` (elementwise scaling: lin itself)
    #: or ``reshape`` (the reshape back)
    structure: str = "general"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.lin(x)
        return y if self.bias is None else y + self.bias

    def abs_bias(self) -> torch.Tensor | float:
        return 0.0 if self.bias is None else self.bias.abs()

    def magnitude(self, m: torch.Tensor) -> torch.Tensor:
        """Σ|terms| of each output when every input has magnitude ≤ m: abs_lin(m) + |bias| (+ extra)."""
        out = self.abs_lin(m) + self.abs_bias()
        return out if self.extra is None else out + self.extra

    def transpose(self, lam: torch.Tensor) -> torch.Tensor:
        """lin^T applied to coefficients ``lam`` of shape (B, S, *out_shape) → (B, S, *in_shape)."""
        b, s = lam.shape[:2]
        if self.matrix is not None:
            return lam @ self.matrix
        flat = lam.reshape(b * s, *self.out_shape)
        if self.structure == "reshape":
            return lam.reshape(b, s, *self.in_shape)
        if self.structure == "diagonal":
            return self.lin(flat).reshape(b, s, *self.in_shape)
        with torch.inference_mode(False), torch.enable_grad():
            x = torch.zeros(b * s, *self.in_shape, dtype=lam.dtype, device=lam.device, requires_grad=True)
            # create_graph keeps the result differentiable in lam (α-CROWN's gradient goes through it)
            (g,) = torch.autograd.grad(self.lin(x), x, flat if lam.requires_grad else flat.clone(),
                                       create_graph=lam.requires_grad)
        return g.reshape(b, s, *self.in_shape)

    def bias_term(self, lam: torch.Tensor) -> torch.Tensor:
        """Σ lam·bias per (example, spec)."""
        if self.bias is None:
            return lam.new_zeros(lam.shape[:2])
        bias = self.bias.expand(1, *self.out_shape).unsqueeze(0)
        return (lam * bias).flatten(2).sum(2)


@dataclass(frozen=True, eq=False)
class Activation:
    """Elementwise piecewise-linear activation: x ↦ x for x ≥ 0, slope·x below (ReLU: slope 0)."""

    op: str
    slope: float  #: negative-side slope, in [0, 1)
    shape: tuple[int, ...]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x >= 0, x, self.slope * x)

    def interval(self, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Monotone: endpoints map to endpoints (a product by the slope rounds, so both ends move
        outwards by one ulp)."""
        low, high = self.forward(lo), self.forward(hi)
        return (torch.nextafter(low, torch.full_like(low, -torch.inf)),
                torch.nextafter(high, torch.full_like(high, torch.inf)))

    def relaxation(self, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(default lower slope α, upper slope, upper intercept): slope·z ≤ ... a(z) ≥ α z and
        a(z) ≤ su·z + tu on [lo, hi]; stable neurons are exact (α = su, tu = 0)."""
        a = self.slope
        pos, neg = lo >= 0, hi <= 0
        width = (hi - lo).clamp_min(1e-300)
        su = (hi - a * lo) / width
        tu = (a - su) * lo  # the chord through (lo, a·lo) and (hi, hi)
        su = torch.where(pos, torch.ones_like(su), torch.where(neg, torch.full_like(su, a), su))
        tu = torch.where(pos | neg, torch.zeros_like(tu), tu)
        alpha = torch.where(hi >= -lo, torch.ones_like(lo), torch.full_like(lo, a))
        alpha = torch.where(pos, torch.ones_like(lo), torch.where(neg, torch.full_like(lo, a), alpha))
        return alpha, su, tu

    def unstable(self, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        return (lo < 0) & (hi > 0)


@dataclass(frozen=True, eq=False)
class Sum:
    """y = Σ cᵢ·xᵢ over network values of one shape (``x + f(x)``: c = (1, 1); ``a − b``: (1, −1);
    ``a + α·b``: (1, α)).  The model's float pass rounds each product by cᵢ ≠ ±1 and each addition once."""

    op: str
    coeffs: tuple[float, ...]
    shape: tuple[int, ...]

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        out = self.coeffs[0] * xs[0]
        for c, x in zip(self.coeffs[1:], xs[1:]):
            out = out + c * x
        return out

    @property
    def roundings(self) -> int:
        """Rounded operations per output of the float pass: the additions and the scalings."""
        return len(self.coeffs) - 1 + sum(abs(c) != 1.0 for c in self.coeffs)


@dataclass(frozen=True, eq=False)
class Concat:
    """y = cat(x₁, …, xₙ) along per-example dimension ``dim`` (1 = channels or features); exact."""

    op: str
    dim: int  #: in the batched tensor (≥ 1)
    sizes: tuple[int, ...]  #: each input's extent along ``dim``

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, dim=self.dim)

    def split(self, t: torch.Tensor, dim: int) -> tuple[torch.Tensor, ...]:
        """``t`` cut back into the inputs' parts along ``dim`` (the transpose of the concatenation)."""
        return torch.split(t, list(self.sizes), dim=dim)


Layer = Any  # Affine | Activation | Sum | Concat | MaxPool


@dataclass(frozen=True, eq=False)
class Network:
    """Layers in topological order from the model's input (``in_shape``) to its logits, plus the model's
    float type.  Values are numbered: 0 is the input, k + 1 the output of layer k; layer k reads the
    values ``sources[k]`` (``(k,)`` for every layer of a chain, the default) and the last value is the logits."""

    layers: tuple[Layer, ...]
    in_shape: tuple[int, ...]
    num_classes: int
    #: unit roundoff of the model's own forward pass (2⁻²⁴ for float32)
    model_unit: float
    sources: tuple[tuple[int, ...], ...] | None = None

    def __post_init__(self) -> None:
        if self.sources is None:
            object.__setattr__(self, "sources", tuple((k,) for k in range(len(self.layers))))

    def inputs_of(self, k: int) -> tuple[int, ...]:
        return self.sources[k]  # type: ignore[index]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values = [x]
        for k, layer in enumerate(self.layers):
            values.append(layer.forward(*(values[v] for v in self.inputs_of(k))))
        return values[-1]
