"""A cache of per-layer analysis work across runs, keyed by the weights' exact bytes.

Entries are JSON files (never pickle: reading one runs no code) in ``$LIPCERT_CACHE_DIR``, else
``$XDG_CACHE_HOME/lipcert``, else ``~/.cache/lipcert``; ``LIPCERT_CACHE_DIR=off`` turns the cache
off.  The key is a sha256 of the layer's exact weight bytes, dtype and shape, every parameter of
the op (stride, padding, input shape, …), the method name and :data:`VERSION`, so a changed weight
always misses.

**What is cached is never trusted as a bound.**  An entry holds *hints*: the μ the Fourier bound was
certified at (the Cholesky certificate is re-run at that μ on every use, and a hint that does not
certify falls back to the full computation) and the power-iteration estimate the choice of
certificates started from.  A re-check from an honest entry gives the first run's bound bit for bit
(the bound depends on μ only, not on how μ was found), so results do not depend on the cache.  A
corrupted or forged entry can only slow the analysis down, change the displayed estimate or which
sound certificate is tried, never make a bound unsound.  Any unreadable, malformed or mismatched entry is a
miss; write failures (read-only home, full disk) are ignored.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import torch

#: Bumped whenever a cached method changes meaning.
VERSION = 3


def cache_dir() -> Path | None:
    """The cache directory, or None when the cache is off."""
    env = os.environ.get("LIPCERT_CACHE_DIR")
    if env is not None:
        return None if env.strip().lower() in ("", "off", "0", "none") else Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "lipcert"


def tensor_key(method: str, tensor: torch.Tensor, params: dict[str, Any]) -> str:
    """sha256 of the method, :data:`VERSION`, the parameters and the tensor's exact bytes."""
    data = tensor.detach().to("cpu").contiguous()
    h = hashlib.sha256()
    h.update(json.dumps({"method": method, "version": VERSION, "dtype": str(data.dtype),
                         "shape": list(data.shape), "params": params}, sort_keys=True).encode())
    h.update(data.reshape(-1).view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return h.hexdigest()


def _path(key: str) -> Path | None:
    root = cache_dir()
    return None if root is None else root / "layers" / key[:2] / f"{key}.json"


def load(key: str, fields: tuple[str, ...]) -> dict[str, float] | None:
    """The entry's finite, positive float ``fields``, or None (a miss) on any problem."""
    path = _path(key)
    if path is None:
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(raw, dict) or raw.get("key") != key or raw.get("version") != VERSION:
            return None
        out = {}
        for f in fields:
            v = raw[f]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                return None
            out[f] = float(v)
        return out
    except Exception:  # noqa: BLE001 - unreadable or malformed: a miss
        return None


def store(key: str, values: dict[str, float]) -> None:
    path = _path(key)
    if path is None:
        return
    try:
        from ..io import write_text_atomic

        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(dict(values, key=key, version=VERSION), sort_keys=True))
    except Exception:  # noqa: BLE001 - a cache that cannot be written is simply not written
        return
