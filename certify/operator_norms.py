"""Deprecated alias: operator norms live in :mod:`certify.lipschitz.operator_norms`."""

from .lipschitz.operator_norms import *  # noqa: F401,F403
from .lipschitz.operator_norms import ROUNDING_SLACK, ConvSpec  # noqa: F401
