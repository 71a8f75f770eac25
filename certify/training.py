"""Moved to :mod:`certify.zoo.training`.

This alias keeps old imports, and checkpoints that name ``certify.training:…``, working:
every name of the new module is re-exported, the same objects.
"""
from .zoo import training as _moved
from .zoo.training import *  # noqa: F401,F403

globals().update({k: v for k, v in vars(_moved).items() if not k.startswith("__")})
