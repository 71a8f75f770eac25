"""Moved to :mod:`certify.suites` (the schema in :mod:`certify.suites.schema`, the runner in
:mod:`certify.suites.suite`).

This alias keeps old imports working: every name of the new modules is re-exported, the same objects.
"""
from .suites import suite as _moved
from .suites.suite import *  # noqa: F401,F403

globals().update({k: v for k, v in vars(_moved).items() if not k.startswith("__")})
