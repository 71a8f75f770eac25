"""Model builders for the network families lipcert trains and ships ([L2NNN] Qian & Wegman, ICLR 2019; [LINF-DIST] ℓ∞-dist nets, ICLR 2021).

Every builder returns an ``nn.Module`` taking N×1×28×28 images in [0, 1];
:data:`FAMILIES` maps a family name to its builder and the Lipschitz claim its
checkpoints declare (``None``: no claim, e.g. an ordinary CNN).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

from ..checkpoints import LipschitzClaim
from ..errors import BadInputError
from .layers import (
    L2Conv2d,
    L2Linear,
    LinfDist,
    MeanShift,
    MultiL2NNNHead,
    Negate,
    NormPool2d,
    TwoSidedReLU,
)

INPUT_SHAPE = (1, 28, 28)
NUM_CLASSES = 10


def l2nnn_mlp(hidden: int = 256, depth: int = 2, num_classes: int = NUM_CLASSES,
              in_features: int = 784, normalisation: str = "b", bjorck_iterations: int = 0) -> nn.Sequential:
    """Multi-L2NNN MLP: nonexpansive linear + two-sided ReLU blocks, per-logit head.

    ``normalisation``/``bjorck_iterations`` choose the hidden layers' weight
    normalisation (see :class:`certify.zoo.layers.L2Linear`).
    """
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_features
    for _ in range(depth):
        layers += [L2Linear(width, hidden, normalisation=normalisation, bjorck_iterations=bjorck_iterations),
                   TwoSidedReLU()]
        width = 2 * hidden
    layers.append(MultiL2NNNHead(width, num_classes))
    return nn.Sequential(*layers)


def l2nnn_cnn(channels: tuple[int, int] = (16, 32), hidden: int = 128,
              num_classes: int = NUM_CLASSES) -> nn.Sequential:
    """Multi-L2NNN CNN for 1×28×28: conv → two-sided ReLU → norm-pool, twice; then an MLP head."""
    c1, c2 = channels
    return nn.Sequential(
        L2Conv2d(1, c1, 3, padding=1), TwoSidedReLU(), NormPool2d(2),       # 2c1 × 14 × 14
        L2Conv2d(2 * c1, c2, 3, padding=1), TwoSidedReLU(), NormPool2d(2),  # 2c2 × 7 × 7
        nn.Flatten(),
        L2Linear(2 * c2 * 49, hidden), TwoSidedReLU(),
        MultiL2NNNHead(2 * hidden, num_classes),
    )


def linf_dist_net(depth: int = 4, width: int = 512, num_classes: int = NUM_CLASSES,
                  in_features: int = 784, p: float = 8.0) -> nn.Sequential:
    """ℓ∞-dist Net: ``depth`` ℓ∞-dist layers (mean-shift after hidden ones), logits = −distances."""
    if depth < 1:
        raise BadInputError(f"linf_dist_net: expected depth ≥ 1, got {depth}")
    layers: list[nn.Module] = [nn.Flatten()]
    width_in = in_features
    for _ in range(depth - 1):
        layers += [LinfDist(width_in, width, p=p), MeanShift(width)]
        width_in = width
    layers += [LinfDist(width_in, num_classes, bias=True, p=p), Negate()]
    return nn.Sequential(*layers)


def baseline_cnn(channels: tuple[int, int] = (16, 32), hidden: int = 128,
                 num_classes: int = NUM_CLASSES) -> nn.Sequential:
    """An ordinary CNN (the comparison rows, [L2NNN] Models 1 and 2)."""
    c1, c2 = channels
    return nn.Sequential(
        nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(c2 * 49, hidden), nn.ReLU(), nn.Linear(hidden, num_classes),
    )


@dataclass(frozen=True)
class Family:
    """A network family: how to build it and what Lipschitz property it declares."""

    name: str
    builders: dict[str, Callable[..., nn.Module]]
    claim: LipschitzClaim | None
    certificate: str | None  #: the certify() rule that uses the claim

    def build(self, arch: str, **kwargs: Any) -> nn.Module:
        if arch not in self.builders:
            raise BadInputError(f"family {self.name}: expected arch in {sorted(self.builders)}, got {arch!r}")
        try:
            return self.builders[arch](**kwargs)
        except (TypeError, ValueError) as err:
            raise BadInputError(f"family {self.name}, arch {arch}: bad keyword arguments ({err})") from err


L2_MULTI_CLAIM = LipschitzClaim("l2", "per-logit", 1.0)
LINF_CLAIM = LipschitzClaim("linf", "vector", 1.0)
_BASELINE = {"baseline_cnn": baseline_cnn}

FAMILIES: dict[str, Family] = {
    "l2nnn": Family("l2nnn", {"l2nnn_cnn": l2nnn_cnn, "l2nnn_mlp": l2nnn_mlp}, L2_MULTI_CLAIM, "l2-multi"),
    "linf_dist": Family("linf_dist", {"linf_dist_net": linf_dist_net}, LINF_CLAIM, "linf-dist"),
    "baseline": Family("baseline", _BASELINE, None, None),
    "baseline_adv": Family("baseline_adv", _BASELINE, None, None),
}


def get_family(name: str) -> Family:
    if name not in FAMILIES:
        raise BadInputError(f"unknown model family {name!r}; expected one of {sorted(FAMILIES)}")
    return FAMILIES[name]
