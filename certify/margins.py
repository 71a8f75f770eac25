"""Moved to :mod:`certify.certificates.margins` (this alias keeps old imports working: the same objects)."""
from .certificates import margins as _moved
from .certificates.margins import *  # noqa: F401,F403

globals().update({k: v for k, v in vars(_moved).items() if not k.startswith("__")})
