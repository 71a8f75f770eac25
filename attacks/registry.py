"""The attack registry: suites name attacks, this dict maps names to classes (suites are data, after AutoAttack's flow without its if-chains)."""

from __future__ import annotations

from typing import Any

from certify.errors import BadInputError
from certify.threat import Norm

from .apgd import APGD, APGDDLR, APGDT
from .base import Attack
from .foolbox_attacks import DDN, FGSM, FMN, CarliniWagner, DeepFool, FoolboxPGD, HopSkipJump
from .pgd import L2PGD, PGD, LinfPGD, MarginPGD

#: name → attack class.  ``pgd``, ``pgd-margin``, ``apgd-ce``, ``apgd-dlr``, ``apgd-t``, ``fgsm``, ``fb-pgd``, ``fmn`` and
#: ``deepfool`` take the norm at call time; the others support the norms in their ``norms``.
ATTACKS: dict[str, type[Attack]] = {
    cls.name: cls
    for cls in (PGD, L2PGD, LinfPGD, MarginPGD, APGD, APGDDLR, APGDT, FGSM, FoolboxPGD, CarliniWagner, DeepFool,
                FMN, DDN, HopSkipJump)
}


def attack_class(name: str, norm: Norm | str) -> type[Attack]:
    """Look up ``name``; raise a helpful error for unknown names or unsupported norms."""
    norm = Norm.parse(norm)
    key = name.strip().lower()
    if key not in ATTACKS:
        raise BadInputError(f"unknown attack {name!r}; valid attacks are {', '.join(sorted(ATTACKS))}")
    cls = ATTACKS[key]
    if norm not in cls.norms:
        supported = sorted(n for n, c in ATTACKS.items() if norm in c.norms)
        raise BadInputError(f"attack {key!r} does not support norm {norm}; for {norm} use one of {', '.join(supported)}",
                            param="norm")
    return cls


def build(cls: type[Attack], *, steps: int | None = None, restarts: int | None = None, **settings: Any) -> Attack:
    """Instantiate ``cls``, passing ``steps``/``restarts`` only to attacks that take them."""
    if steps is not None and cls.scales_with_steps:
        settings["steps"] = steps
    if restarts is not None and cls.has_restarts:
        settings["restarts"] = restarts
    return cls(**settings)
