"""Moved to :mod:`certify.certificates.plan`, which owns the certificate plan and the check of a
named or declared Lipschitz claim against the analyser's bounds (this alias keeps old imports working).
"""
from __future__ import annotations

from typing import Any


def verify_certificate(model: Any, *, norm: str, certificate: str, requested: str | None = None,
                       lipschitz_constant: float | None, assume_lipschitz: bool, input_dim: int,
                       input_shape: tuple[int, ...] | None = None, batch_sizes: tuple[int, ...] | None = None) -> Any:
    """Deprecated: :func:`certify.certificates.plan_certificate` (the same plan)."""
    from ..certificates.plan import plan_certificate

    return plan_certificate(model, norm=norm, certificate=certificate, lipschitz_constant=lipschitz_constant,
                            assume_lipschitz=assume_lipschitz, input_dim=input_dim, input_shape=input_shape,
                            batch_sizes=batch_sizes)


def __getattr__(name: str) -> Any:
    from ..certificates import plan

    try:
        return getattr(plan, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
