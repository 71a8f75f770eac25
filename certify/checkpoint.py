"""Moved to :mod:`certify.checkpoints` (metadata, formats, architecture, readers, loading, saving).

This alias keeps old imports working: every name of those modules is re-exported, the same
objects (the ``.pt2`` reader has its own alias, :mod:`certify.safe_export`).
"""
from .checkpoints import *  # noqa: F401,F403
from .checkpoints import architecture as _architecture
from .checkpoints import formats as _formats
from .checkpoints import loading as _loading
from .checkpoints import metadata as _metadata
from .checkpoints import readers as _readers
from .checkpoints import saving as _saving

for _moved in (_metadata, _formats, _architecture, _readers, _loading, _saving):
    globals().update({k: v for k, v in vars(_moved).items() if not k.startswith("__")})
