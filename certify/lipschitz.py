"""Lipschitz verification for certificates (SCIENCE §2).

This module decides whether a certificate's Lipschitz property holds.
"""

from __future__ import annotations

from .checkpoint import LoadedModel
from .errors import BadInputError


def verify_certificate(model: LoadedModel, *, norm: str, certificate: str, requested: str,
                       lipschitz_constant: float | None, assume_lipschitz: bool, input_dim: int):  # type: ignore[no-untyped-def]
    from .certificates import declared_plan

    if certificate == "auto":
        raise BadInputError(
            "--certificate auto: the model declares no Lipschitz property; name one with "
            "--certificate l2-multi, l2-single or linf-dist"
        )
    explicit = requested != "auto"
    return declared_plan(model, norm=norm, certificate=certificate, lipschitz_constant=lipschitz_constant,
                         assume_lipschitz=assume_lipschitz or explicit, input_dim=input_dim,
                         reason_unverified="no sound bound computed from the weights")
