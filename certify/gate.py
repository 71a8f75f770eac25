"""Moved to :mod:`certify.suites.gates`.

This alias keeps old imports working: every name of the new module is re-exported, the same objects.
"""
from .suites import gates as _moved
from .suites.gates import *  # noqa: F401,F403

globals().update({k: v for k, v in vars(_moved).items() if not k.startswith("__")})
