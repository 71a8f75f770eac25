"""Moved to :mod:`certify.zoo.losses`.

This alias keeps old imports, and checkpoints that name ``certify.losses:…``, working:
every name of the new module is re-exported, the same objects.
"""
from .zoo import losses as _moved
from .zoo.losses import *  # noqa: F401,F403

globals().update({k: v for k, v in vars(_moved).items() if not k.startswith("__")})
