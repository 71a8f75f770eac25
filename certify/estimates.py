"""Moved to :mod:`certify.lipschitz.estimates`.

This alias keeps old imports working: every name of the new module is re-exported, the same objects.
"""
from .lipschitz import estimates as _moved
from .lipschitz.estimates import *  # noqa: F401,F403

globals().update({k: v for k, v in vars(_moved).items() if not k.startswith("__")})
