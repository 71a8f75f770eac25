"""Moved to :mod:`certify.checkpoints.safe_export`.

This alias keeps old imports working: every name of the new module is re-exported, the same objects.
"""
from .checkpoints import safe_export as _moved
from .checkpoints.safe_export import *  # noqa: F401,F403

globals().update({k: v for k, v in vars(_moved).items() if not k.startswith("__")})
