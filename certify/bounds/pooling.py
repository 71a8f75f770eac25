"""Max pooling (``aten.max_pool2d``: kernel, stride, padding; dilation 1, no ceil mode) and its sound
relaxation (``docs/bounds.md``).

For an output y = max_{i ∈ W} xᵢ over a window W with input bounds lᵢ ≤ xᵢ ≤ uᵢ:

- IBP: max_W l ≤ y ≤ max_W u (max is monotone and exact in floating point);
- CROWN: with j = argmax_W l, y ≥ x_j always; if l_j ≥ max_{i≠j} uᵢ the window is *decided* and
  y = x_j exactly, otherwise y ≤ U = max_W u (a constant upper plane).

A window is read with ``unfold`` of the input padded with −∞ (the padding never wins a max: PyTorch
requires padding ≤ kernel/2, so each window holds an input), and coefficients go back with ``fold``,
its transpose, which sums the coefficients of overlapping windows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .layers import UNIT64, gamma


@dataclass(frozen=True, eq=False)
class MaxPool:
    op: str
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    in_shape: tuple[int, ...]  #: (C, H, W)
    out_shape: tuple[int, ...]  #: (C, Ho, Wo)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(x, self.kernel, self.stride, self.padding)

    def interval(self, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward(lo), self.forward(hi)

    def windows(self, t: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) → (N, C, kh·kw, L): every window's entries, padding as −∞."""
        ph, pw = self.padding
        padded = F.pad(t, (pw, pw, ph, ph), value=-math.inf)
        w = F.unfold(padded, self.kernel, stride=self.stride)
        return w.view(t.shape[0], t.shape[1], self.kernel[0] * self.kernel[1], -1)

    def relaxation(self, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(j: argmax of the lower bounds in each window, (B, C, 1, L); decided: (B, C, L); U: (B, C, L))."""
        lw, hw = self.windows(lo), self.windows(hi)
        lj, j = lw.max(2, keepdim=True)
        others = hw.scatter(2, j, -math.inf).amax(2)
        return j, lj.squeeze(2) >= others, hw.amax(2)

    def undecided_inputs(self, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        """Flat indices of the input neurons in some window that is undecided in some example."""
        _, decided, _ = self.relaxation(lo, hi)
        mask = (~decided).any(0, keepdim=True).unsqueeze(2).expand(-1, -1, self.kernel[0] * self.kernel[1], -1)
        back = self._fold(mask.to(lo.dtype))
        return (back.flatten(1)[0] > 0).nonzero().squeeze(1)

    def _fold(self, w: torch.Tensor) -> torch.Tensor:
        """Transpose of :meth:`windows`: (N, C, kh·kw, L) → (N, C, H, W), overlapping windows summed."""
        c, h, wd = self.in_shape
        ph, pw = self.padding
        out = F.fold(w.reshape(w.shape[0], c * w.shape[2], -1), (h + 2 * ph, wd + 2 * pw), self.kernel,
                     stride=self.stride)
        return out[:, :, ph:ph + h, pw:pw + wd]

    def overlap(self) -> int:
        """Most windows that share one input (terms of one sum in :meth:`_fold`)."""
        return math.ceil(self.kernel[0] / self.stride[0]) * math.ceil(self.kernel[1] / self.stride[1])

    def backward(self, lam: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Λ on the output (B, S, C, Ho, Wo) → (Λ on the input, Σ Λ⁻·U over undecided windows, the float64
        allowance): Λ·y ≥ Λ'·x + const for every x in the box."""
        b, s = lam.shape[:2]
        c = self.in_shape[0]
        j, decided, upper = self.relaxation(lo, hi)
        flat = lam.reshape(b, s, c, -1)
        dec = decided.unsqueeze(1)
        coef = torch.where(dec, flat, flat.clamp_min(0))
        neg = torch.where(dec, torch.zeros_like(flat), flat.clamp_max(0))
        const = (neg * upper.unsqueeze(1)).flatten(2).sum(2)
        kk = self.kernel[0] * self.kernel[1]
        onehot = flat.new_zeros(b, s, c, kk, flat.shape[3])
        onehot = onehot.scatter(3, j.unsqueeze(1).expand(b, s, c, 1, flat.shape[3]), coef.unsqueeze(3))
        new = self._fold(onehot.reshape(b * s, c, kk, -1)).reshape(b, s, *self.in_shape)
        mag = self.windows(torch.maximum(lo.abs(), hi.abs())).amax(2).unsqueeze(1)
        slack = (2 * gamma(self.overlap() + 2, UNIT64) * (coef.abs() * mag).flatten(2).sum(2)
                 + 2 * gamma(flat[0, 0].numel() + 2, UNIT64) * (neg.abs() * upper.abs().unsqueeze(1)).flatten(2).sum(2))
        return new, const, slack
