"""Moved to :mod:`certify.zoo.models`.

This alias keeps old imports, and checkpoints that name ``certify.models:…``, working:
every name of the new module is re-exported, the same objects.
"""
from .zoo import models as _moved
from .zoo.models import *  # noqa: F401,F403

globals().update({k: v for k, v in vars(_moved).items() if not k.startswith("__")})
