"""Checkpoints: formats, metadata, architectures, loading (safely) and saving.

=================================  =========================================================
module                             owns
=================================  =========================================================
:mod:`~.metadata`                  :class:`ModelMetadata`, :class:`LipschitzClaim` (``lipcert.json``)
:mod:`~.formats`                   format detection from the bytes, file and zip checks
:mod:`~.architecture`              :class:`Architecture`, what a file may name (the import allow-list)
:mod:`~.readers`                   one reader per format (no code from the file runs)
:mod:`~.safe_export`               reading a ``.pt2`` archive without running code
:mod:`~.loading`                   :func:`load_model`, :class:`LoadedModel` (eval mode, pixel space)
:mod:`~.saving`                    :func:`save_model`
=================================  =========================================================

The rules these follow are in docs/security.md.  (The package is ``checkpoints``, not
``models``: ``certify.models`` is the old name of :mod:`certify.zoo.models`, which checkpoints
written before the zoo moved still name.)  ``certify.checkpoint`` and ``certify.safe_export``
are aliases of these modules.
"""

from .architecture import (
    BUILTIN_ARCH_MODULES,
    Architecture,
    load_architecture,
    resolve_class,
)
from .formats import detect_format, sha256_of
from .loading import LoadedModel, Normalize, load_model
from .metadata import LIPSCHITZ_KINDS, METADATA_FILE, LipschitzClaim, ModelMetadata
from .saving import save_model

__all__ = [
    "BUILTIN_ARCH_MODULES", "LIPSCHITZ_KINDS", "METADATA_FILE", "Architecture", "LipschitzClaim", "LoadedModel",
    "ModelMetadata", "Normalize", "detect_format", "load_architecture", "load_model", "resolve_class",
    "save_model", "sha256_of",
]
