"""Moved to :mod:`certify.evaluation.pipeline` (this alias keeps old imports working: the same objects)."""
from .evaluation import pipeline as _moved
from .evaluation.pipeline import *  # noqa: F401,F403

globals().update({k: v for k, v in vars(_moved).items() if not k.startswith("__")})
