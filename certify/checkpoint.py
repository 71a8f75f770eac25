"""Moved to :mod:`certify.checkpoints` (formats, metadata, architectures, loading, saving).

This alias keeps old imports working: every name of the new modules is re-exported, the same
objects.
"""
from .checkpoints import loading as _moved
from .checkpoints.loading import *  # noqa: F401,F403

globals().update({k: v for k, v in vars(_moved).items() if not k.startswith("__")})
