"""Moved to :mod:`certify.suites` (the schema in :mod:`certify.suites.schema`, the suite and its
runner in :mod:`certify.suites.suite`).

This alias keeps old imports working: every name of those modules is re-exported, the same objects.
"""
from .suites import schema as _schema
from .suites import suite as _suite
from .suites.schema import *  # noqa: F401,F403
from .suites.suite import *  # noqa: F401,F403

for _moved in (_schema, _suite):
    globals().update({k: v for k, v in vars(_moved).items() if not k.startswith("__")})
