"""A cache of per-layer bounds across runs, keyed by the weights' exact bytes and signed.

Entries are JSON files (never pickle: reading one runs no code) in ``$LIPCERT_CACHE_DIR``, else
``$XDG_CACHE_HOME/lipcert``, else ``~/.cache/lipcert``; ``LIPCERT_CACHE_DIR=off`` turns the cache
off.  The key is a sha256 of the layer's exact weight bytes, dtype and shape, every parameter of
the op (stride, padding, input shape, the certificate settings, …), the method name, :data:`VERSION`
and the :func:`fingerprint` of the analysis code, so a changed weight, setting or lipcert always misses.

**An entry is trusted only when this installation signed it.**  Each entry carries an HMAC-SHA256
over its whole content under a secret that never lives in the cache directory: ``$LIPCERT_CACHE_KEY``
(≥ 16 characters; lets CI machines that share a secret share a cache) or else 32 random bytes in
``$XDG_CONFIG_HOME/lipcert/cache.key`` (``~/.config/lipcert/cache.key``), created on first use,
private to the user (mode 0600; a key file others can read or write is refused).  A bound read back
is one that this code proved from these exact weights in an earlier run, so a warm run skips the
proof; anyone able to forge a signature could as well edit lipcert itself.  An entry that is
unsigned, signed with another key, altered, malformed or from other code is a miss, and its layer
is proven again; with no usable key (a read-only home, say) the cache is off.  Write failures (a
read-only cache, a full disk) are ignored.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import math
import os
import secrets
import stat
import sys
from pathlib import Path
from typing import Any

import torch

from ..errors import BadInputError

#: Bumped whenever a cached method changes meaning (the code fingerprint changes with every edit anyway).
VERSION = 4
#: The shortest ``$LIPCERT_CACHE_KEY`` accepted.
MIN_KEY_CHARS = 16
#: Entries are a few hundred bytes; a larger file is a miss without being read.
MAX_ENTRY_BYTES = 64 * 1024


def cache_dir() -> Path | None:
    """The cache directory, or None when the cache is off."""
    env = os.environ.get("LIPCERT_CACHE_DIR")
    if env is not None:
        return None if env.strip().lower() in ("", "off", "0", "none") else Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "lipcert"


def key_file() -> Path:
    """Where the signing secret is kept when ``$LIPCERT_CACHE_KEY`` is not set."""
    xdg = os.environ.get("XDG_CONFIG_HOME")
    return (Path(xdg) if xdg else Path.home() / ".config") / "lipcert" / "cache.key"


def secret() -> bytes | None:
    """The signing secret: ``$LIPCERT_CACHE_KEY``, else the private key file (created if absent); None
    when neither can be had (the cache is then off)."""
    env = os.environ.get("LIPCERT_CACHE_KEY")
    if env is not None and env.strip():
        if len(env.strip()) < MIN_KEY_CHARS:
            raise BadInputError(f"LIPCERT_CACHE_KEY must be at least {MIN_KEY_CHARS} characters (a shared secret, "
                                f"e.g. 64 hex digits), got {len(env.strip())}")
        return env.strip().encode()
    path = key_file()
    try:
        if not path.exists():
            _create_key(path)
        return _read_key(path)
    except OSError:
        return None


def _create_key(path: Path) -> None:
    """Writes 32 random bytes (hex) to ``path``, mode 0600, atomically: a concurrent run either wins the
    link or reads the winner's complete file."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(secrets.token_hex(32))
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)


def _read_key(path: Path) -> bytes | None:
    st = path.stat()
    if not stat.S_ISREG(st.st_mode):
        return None
    if sys.platform != "win32" and (st.st_mode & 0o077 or st.st_uid != os.getuid()):
        return None  # readable or writable by others, or not ours: not a secret
    text = path.read_text(encoding="ascii").strip()
    return text.encode() if len(text) >= MIN_KEY_CHARS else None


@functools.lru_cache(maxsize=1)
def fingerprint() -> str:
    """sha256 of the analysis code (every ``certify/lipschitz`` module and ``certify/defaults.py``) and
    torch's version: an upgrade, a fix or a local edit invalidates every entry."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha256(f"torch {torch.__version__}\n".encode())
    files = sorted(root.rglob("*.py")) + [root.parent / "defaults.py"]
    for f in files:
        h.update(str(f.relative_to(root.parent)).encode() + b"\0")
        h.update(f.read_bytes() + b"\0")
    return h.hexdigest()


def tensor_key(method: str, tensor: torch.Tensor, params: dict[str, Any]) -> str:
    """sha256 of the method, :data:`VERSION`, the code's :func:`fingerprint`, the parameters and the
    tensor's exact bytes."""
    data = tensor.detach().to("cpu").contiguous()
    h = hashlib.sha256()
    h.update(json.dumps({"method": method, "version": VERSION, "code": fingerprint(), "dtype": str(data.dtype),
                         "shape": list(data.shape), "params": params}, sort_keys=True).encode())
    h.update(data.reshape(-1).view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return h.hexdigest()


def _path(key: str) -> Path | None:
    root = cache_dir()
    return None if root is None else root / "layers" / key[:2] / f"{key}.json"


def _mac(sec: bytes, body: dict[str, Any]) -> str:
    return hmac.new(sec, json.dumps(body, sort_keys=True).encode(), hashlib.sha256).hexdigest()


def load(key: str, numbers: tuple[str, ...], texts: tuple[str, ...] = ()) -> dict[str, Any] | None:
    """The entry's finite, positive float ``numbers`` and string ``texts``, or None (a miss) unless the
    entry exists, is well formed and carries this installation's signature."""
    path = _path(key)
    if path is None:
        return None
    sec = secret()
    if sec is None:
        return None
    try:
        if path.stat().st_size > MAX_ENTRY_BYTES:
            return None
        raw = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(raw, dict) or raw.get("key") != key or raw.get("version") != VERSION:
            return None
        mac = raw.pop("mac", None)
        if not isinstance(mac, str) or not hmac.compare_digest(mac, _mac(sec, raw)):
            return None
        out: dict[str, Any] = {}
        for f in numbers:
            v = raw[f]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                return None
            out[f] = float(v)
        for f in texts:
            if not isinstance(raw[f], str):
                return None
            out[f] = raw[f]
        return out
    except Exception:  # noqa: BLE001 - unreadable or malformed: a miss
        return None


def store(key: str, values: dict[str, Any]) -> None:
    """Writes a signed entry (nothing when the cache is off, there is no key, or it cannot be written)."""
    path = _path(key)
    if path is None:
        return
    sec = secret()
    if sec is None:
        return
    try:
        from ..io import write_text_atomic

        body = dict(values, key=key, version=VERSION)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(dict(body, mac=_mac(sec, body)), sort_keys=True))
    except Exception:  # noqa: BLE001 - a cache that cannot be written is simply not written
        return
