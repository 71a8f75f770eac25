"""Moved to :mod:`certify.evaluation.analyses` (this alias keeps old imports working: the same objects)."""
from .evaluation import analyses as _moved
from .evaluation.analyses import *  # noqa: F401,F403

globals().update({k: v for k, v in vars(_moved).items() if not k.startswith("__")})
