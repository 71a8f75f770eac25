"""Checkpoint formats, detected from the file's *content*, never its name.

========================  ==========================================================
format                    how it is recognised / loaded
========================  ==========================================================
``torch.export``          zip archive with ``models/model.json`` (``torch.export.save``)
``torchscript``           zip archive with ``code/`` and ``constants.pkl``
``state_dict``            ``torch.save`` archive loaded with ``weights_only=True``,
                          plus an architecture (``module:Class`` or a YAML spec)
``safetensors``           8-byte header length + JSON header, plus an architecture
``onnx``                  protobuf ``ModelProto`` (optional extra ``lipcert[onnx]``)
``pickle``                anything ``weights_only`` refuses: only with ``trust_checkpoint``
========================  ==========================================================

:func:`detect_format` answers ``"torch.save"`` for both of the last two: which one a file is
shows only when :mod:`certify.checkpoints.readers` tries the safe unpickler.  This module reads
bytes only (no torch import): the file checks every reader starts with are here too.
"""

from __future__ import annotations

import hashlib
import os
import struct
import zipfile
import zlib
from pathlib import Path

from ..errors import BadInputError, short_repr

#: The key (and its version) that marks a lipcert state_dict checkpoint: a ``torch.save`` dict
#: with ``state_dict``, ``metadata`` and ``architecture`` (see :func:`certify.checkpoints.save_model`).
STATE_DICT_FORMAT_KEY = "lipcert_format"
STATE_DICT_FORMAT_VERSION = 1


def sha256_of(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_file(path: str | os.PathLike[str]) -> Path:
    """The path of an existing, non-empty file (else a one-line error naming it)."""
    p = Path(path)
    if not p.exists():
        raise BadInputError(f"checkpoint {str(p)!r} does not exist; check the path")
    if p.is_dir():
        raise BadInputError(f"checkpoint {str(p)!r} is a directory; expected a model file")
    if p.stat().st_size == 0:
        raise BadInputError(f"checkpoint {str(p)!r} is empty; re-save the model")
    return p


def detect_format(path: str | os.PathLike[str]) -> str:
    """Return the checkpoint format from the file's bytes (see module docs)."""
    p = check_file(path)
    with open(p, "rb") as f:
        head = f.read(16)
    if zipfile.is_zipfile(p):
        return _zip_format(p)
    if len(head) >= 9:
        (n,) = struct.unpack("<Q", head[:8])
        if 2 <= n < 100_000_000 and head[8:9] == b"{":
            return "safetensors"
    if head[:1] == b"\x80":  # pickle protocol marker: legacy torch.save or raw pickle
        return "torch.save"
    if _looks_like_onnx(p):
        return "onnx"
    raise BadInputError(
        f"checkpoint {str(p)!r} has an unknown format; expected torch.export (.pt2), TorchScript, "
        "a torch.save state_dict, safetensors or ONNX"
    )


def _zip_format(p: Path) -> str:
    try:
        names = zipfile.ZipFile(p).namelist()
    except (zipfile.BadZipFile, OSError) as err:
        raise BadInputError(f"checkpoint {str(p)!r} is a damaged zip archive ({err}); re-save it") from err
    if any(n.endswith("models/model.json") or n.endswith("/archive_format") for n in names):
        return "torch.export"
    if any("/code/" in n for n in names) and any(n.endswith("constants.pkl") for n in names):
        return "torchscript"
    if any(n.endswith("data.pkl") for n in names):
        return "torch.save"
    raise BadInputError(
        f"checkpoint {str(p)!r} is a zip archive but not a torch.export, TorchScript or torch.save file"
    )


def _looks_like_onnx(p: Path) -> bool:
    # ModelProto starts with field 1 (ir_version, varint: tag 0x08) in practice.
    with open(p, "rb") as f:
        head = f.read(2)
    return head[:1] == b"\x08" and len(head) == 2 and head[1] < 0x20


def check_zip_integrity(p: Path) -> None:
    """Every member of a zip checkpoint must pass its CRC check (torch's reader does not check)."""
    try:
        with zipfile.ZipFile(p) as zf:
            bad = zf.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, zlib.error) as err:
        raise BadInputError(f"checkpoint {str(p)!r} is a damaged zip archive ({first_line(err)}); re-save it") from err
    if bad is not None:
        raise BadInputError(f"checkpoint {str(p)!r}: member {short_repr(bad, 80)} fails its CRC check; "
                            "the file is damaged, copy or re-save it")


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type when empty), cut to 200 characters."""
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:200]
