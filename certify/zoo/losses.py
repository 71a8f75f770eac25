"""Training objectives of the Lipschitz-by-construction families ([L2NNN] loss L_a + γ·L_b + ω·L_c; [LINF-DIST] hinge loss; docs/references.md).

* :class:`L2NNNLoss`: ``L_a + γ·L_b + ω·L_c`` [L2NNN] with trainable per-class
  scales ``u_k`` and a trainable scalar ``v``:

  - ``L_a = CE(u ⊙ y)`` (optionally on distorted inputs: the adversarial variant),
  - ``L_b = CE(v·y)``,
  - ``L_c = mean(log(1 − softmax(z·y)_label)) / z``, which rewards large gaps.

* :func:`hinge_loss`: ``max(0, t + max_{j≠y} g_j − g_y)`` [LINF-DIST].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def log_one_minus_softmax(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log(1 − softmax(logits)_label), computed stably as logsumexp_{j≠y} − logsumexp."""
    others = logits.scatter(1, labels.unsqueeze(1), float("-inf"))
    return torch.logsumexp(others, dim=1) - torch.logsumexp(logits, dim=1)


class L2NNNLoss(nn.Module):
    """The three-term L2NNN loss; its ``u`` and ``v`` are trained with the model."""

    def __init__(self, num_classes: int = 10, gamma: float = 1.0, omega: float = 1.0, z: float = 1.0,
                 u_init: float = 5.0, v_init: float = 1.0, trainable_v: bool = True):
        super().__init__()
        if z <= 0:
            raise ValueError(f"L2NNNLoss: softness z must be positive, got {z}")
        self.gamma, self.omega, self.z = float(gamma), float(omega), float(z)
        self.u = nn.Parameter(torch.full((num_classes,), float(u_init), device="cpu"))
        v = torch.tensor(float(v_init), device="cpu")
        self.v = nn.Parameter(v) if trainable_v else nn.Parameter(v, requires_grad=False)

    def terms(self, logits: torch.Tensor, labels: torch.Tensor,
              distorted_logits: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        la_logits = logits if distorted_logits is None else distorted_logits
        return {
            "a": F.cross_entropy(la_logits * self.u, labels),
            "b": F.cross_entropy(logits * self.v, labels),
            "c": log_one_minus_softmax(self.z * logits, labels).mean() / self.z,
        }

    def forward(self, logits: torch.Tensor, labels: torch.Tensor,
                distorted_logits: torch.Tensor | None = None) -> torch.Tensor:
        t = self.terms(logits, labels, distorted_logits)
        return t["a"] + self.gamma * t["b"] + self.omega * t["c"]


def hinge_loss(logits: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """Mean of max(0, t + max_{j≠y} g_j − g_y) ([LINF-DIST], t = ``margin``)."""
    true = logits.gather(1, labels.unsqueeze(1)).squeeze(1)
    others = logits.scatter(1, labels.unsqueeze(1), float("-inf")).amax(dim=1)
    return F.relu(margin + others - true).mean()
