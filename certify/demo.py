"""Moved to :mod:`certify.evaluation.demo` (this alias keeps old imports working: the same objects)."""
from .evaluation import demo as _moved
from .evaluation.demo import *  # noqa: F401,F403

globals().update({k: v for k, v in vars(_moved).items() if not k.startswith("__")})
