"""Rows read on demand: the images of a dataset without holding the whole file in memory.

A :class:`Rows` is an N×… array of which only the rows asked for are read: a slice ``rows[a:b]``,
an index list ``rows[idx]`` or a single row ``rows[i]`` is a CPU tensor read from the file at that
moment.  Under torchrun each rank reads its shard's rows (and the few others its work needs), so no
rank loads the whole dataset when a shard will do.  The sources:

* :class:`ArrayRows` — a NumPy array or memory map (uncompressed idx files, CIFAR-10 binary
  batches, ``.npy`` members stored uncompressed in an ``.npz``);
* :class:`StreamRows` — a byte stream read forwards (gzipped idx files, compressed ``.npz``
  members): one open stream per source, and a read before its position starts it again;
* :class:`ImageRows` — image files decoded when read;
* :class:`ConcatRows` and :class:`PermutedRows` — several sources back to back, and N×H×W×C
  stored arrays seen as N×C×H×W.

``rows_read()`` counts the rows this process has read from files (a diagnostic the distributed
tests use to check that a rank stays on its shard).
"""

from __future__ import annotations

import math
import weakref
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .errors import BadInputError, short_repr

#: Rows per block when a whole float store is scanned (NaN and value range) with bounded memory.
SCAN_ROWS = 4096
_READ = [0]


def rows_read() -> int:
    """Rows read from files by this process so far (every :class:`Rows` source together)."""
    return _READ[0]


def _count(n: int) -> None:
    _READ[0] += int(n)


class Rows:
    """An N×… array whose rows are read when asked for (see the module docs).

    Subclasses set ``shape`` (N first) and ``dtype`` (a torch dtype) and implement :meth:`read`.
    """

    shape: tuple[int, ...]
    dtype: torch.dtype
    source: str = ""

    def __len__(self) -> int:
        return int(self.shape[0])

    def is_floating_point(self) -> bool:
        return self.dtype.is_floating_point

    def read(self, start: int, stop: int) -> torch.Tensor:
        """Rows ``start..stop`` (clipped to the array) as a CPU tensor of ``dtype``."""
        raise NotImplementedError

    def take(self, index: Sequence[int] | np.ndarray | torch.Tensor) -> torch.Tensor:
        """The rows at ``index`` in that order, reading each run of consecutive rows once."""
        idx = np.asarray(index.cpu() if isinstance(index, torch.Tensor) else index, dtype=np.int64).reshape(-1)
        n = len(self)
        if idx.size and (int(idx.min()) < -n or int(idx.max()) >= n):
            raise IndexError(f"row index out of range for {n} rows")
        idx = np.where(idx < 0, idx + n, idx)
        out = torch.empty((idx.size, *self.shape[1:]), dtype=self.dtype, device="cpu")
        if not idx.size:
            return out
        order = np.argsort(idx, kind="stable")
        wanted = idx[order]
        uniq = np.unique(wanted)
        breaks = np.flatnonzero(np.diff(uniq) != 1) + 1
        blocks = []
        for run in np.split(uniq, breaks):
            blocks.append(self.read(int(run[0]), int(run[-1]) + 1))
        got = torch.cat(blocks) if len(blocks) > 1 else blocks[0]
        pos = np.searchsorted(uniq, wanted)  # row of each wanted index in `got`
        out[torch.from_numpy(order)] = got[torch.from_numpy(pos)]
        return out

    def tensor(self) -> torch.Tensor:
        """Every row (reads the whole source)."""
        return self.read(0, len(self))

    def __getitem__(self, key: Any) -> torch.Tensor:
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step == 1:
                return self.read(start, max(start, stop))
            return self.take(np.arange(start, stop, step))
        if isinstance(key, (int, np.integer)) or (isinstance(key, torch.Tensor) and key.dim() == 0
                                                  and not key.dtype.is_floating_point and key.dtype != torch.bool):
            i = int(key)
            i = i + len(self) if i < 0 else i
            if not 0 <= i < len(self):
                raise IndexError(f"row {int(key)} out of range for {len(self)} rows")
            return self.read(i, i + 1)[0]
        if isinstance(key, torch.Tensor) and key.dtype == torch.bool or isinstance(key, np.ndarray) and key.dtype == bool:
            return self.take(np.flatnonzero(np.asarray(key.cpu() if isinstance(key, torch.Tensor) else key)))
        return self.take(key)

    def scan(self) -> tuple[float, float, bool]:
        """(min, max, all finite) over every value, read :data:`SCAN_ROWS` rows at a time (memoised)."""
        cached = getattr(self, "_scan", None)
        if cached is None:
            lo, hi, finite = math.inf, -math.inf, True
            for a in range(0, len(self), SCAN_ROWS):
                block = self.read(a, a + SCAN_ROWS)
                if block.is_floating_point():
                    ok = torch.isfinite(block)
                    finite = finite and bool(ok.all())
                    block = block[ok]
                if block.numel():
                    lo, hi = min(lo, float(block.min())), max(hi, float(block.max()))
            cached = (lo, hi, finite)
            self._scan = cached
        return cached

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={self.shape}, dtype={self.dtype}, source={self.source!r})"


def as_float(x: torch.Tensor) -> torch.Tensor:
    """Images as float32 in [0, 1]: uint8 divided by 255, float as it is (as float32)."""
    if x.dtype == torch.uint8:
        return x.to(torch.float32).div_(255.0)
    return x.to(torch.float32)


def _torch_dtype(dtype: np.dtype) -> torch.dtype:
    return torch.from_numpy(np.zeros(0, dtype=dtype.newbyteorder("="))).dtype


class ArrayRows(Rows):
    """Rows of a NumPy array or memory map (copied out as they are read)."""

    def __init__(self, array: np.ndarray, shape: tuple[int, ...] | None = None, source: str = ""):
        self.array = array
        self.shape = tuple(int(s) for s in (shape if shape is not None else array.shape))
        self.dtype = _torch_dtype(array.dtype)
        self.source = source

    def read(self, start: int, stop: int) -> torch.Tensor:
        block = np.array(self.array[start:stop], dtype=self.array.dtype.newbyteorder("="))
        _count(block.shape[0])
        return torch.from_numpy(block).reshape(block.shape[0], *self.shape[1:])


class StreamRows(Rows):
    """Rows of fixed size stored from byte ``offset`` of a stream that seeks forwards by reading (a gzip
    file, a compressed zip member).  ``opener()`` returns the open stream and a function that closes
    it (and whatever holds it); ``truncated`` is the error message when the stream ends before a row
    it should hold."""

    def __init__(self, opener: Callable[[], tuple[Any, Callable[[], None]]], offset: int, shape: tuple[int, ...],
                 dtype: np.dtype, source: str, truncated: str):
        self.opener, self.offset = opener, int(offset)
        self.shape, self.np_dtype = tuple(int(s) for s in shape), np.dtype(dtype)
        self.dtype = _torch_dtype(self.np_dtype)
        self.source, self.truncated = source, truncated
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.np_dtype.itemsize
        self._stream: Any = None
        self._close: Any = None

    def _open(self) -> Any:
        if self._stream is None:
            self._stream, close = self.opener()
            self._close = weakref.finalize(self, close)
        return self._stream

    def _restart(self) -> Any:
        self._close()
        self._stream = None
        return self._open()

    def read(self, start: int, stop: int) -> torch.Tensor:
        start, stop = max(0, start), min(len(self), stop)
        n = max(0, stop - start)
        stream = self._open()
        at = self.offset + start * self.row_bytes
        try:
            if stream.tell() > at:  # backwards: start again (forward seeks decompress and discard)
                stream = self._restart()
            stream.seek(at)
            data = stream.read(n * self.row_bytes)
        except (OSError, EOFError, ValueError) as err:
            raise BadInputError(f"{self.truncated} ({short_repr(str(err), 80)[1:-1]})") from err
        if len(data) != n * self.row_bytes:
            raise BadInputError(self.truncated)
        _count(n)
        block = np.frombuffer(data, dtype=self.np_dtype).astype(self.np_dtype.newbyteorder("="), copy=True)
        return torch.from_numpy(block).reshape(n, *self.shape[1:])


class ConcatRows(Rows):
    """Several row sources with equal row shapes and dtypes, back to back."""

    def __init__(self, parts: Sequence[Rows], source: str = ""):
        self.parts = list(parts)
        self.starts = np.cumsum([0] + [len(p) for p in self.parts])
        self.shape = (int(self.starts[-1]), *self.parts[0].shape[1:])
        self.dtype = self.parts[0].dtype
        self.source = source

    def read(self, start: int, stop: int) -> torch.Tensor:
        start, stop = max(0, start), min(len(self), stop)
        blocks = []
        for part, a in zip(self.parts, self.starts[:-1]):
            lo, hi = max(start, int(a)), min(stop, int(a) + len(part))
            if lo < hi:
                blocks.append(part.read(lo - int(a), hi - int(a)))
        if not blocks:
            return torch.empty((0, *self.shape[1:]), dtype=self.dtype, device="cpu")
        return torch.cat(blocks) if len(blocks) > 1 else blocks[0]


class PermutedRows(Rows):
    """N×H×W×C rows seen as N×C×H×W."""

    def __init__(self, base: Rows):
        self.base = base
        n, h, w, c = base.shape
        self.shape, self.dtype, self.source = (n, c, h, w), base.dtype, base.source

    def read(self, start: int, stop: int) -> torch.Tensor:
        return self.base.read(start, stop).permute(0, 3, 1, 2).contiguous()


class ImageRows(Rows):
    """Image files decoded when read: grey images (modes L, 1, P, I;16) as 1×H×W, the others as
    3×H×W RGB, uint8."""

    GREY = ("L", "1", "P", "I;16")

    def __init__(self, files: Sequence[Path], channels: int, size: tuple[int, int], source: str):
        self.files = list(files)
        self.channels = channels
        self.shape = (len(self.files), channels, int(size[1]), int(size[0]))
        self.dtype = torch.uint8
        self.source = source

    def read(self, start: int, stop: int) -> torch.Tensor:
        from PIL import Image

        start, stop = max(0, start), min(len(self), stop)
        out = torch.empty((max(0, stop - start), *self.shape[1:]), dtype=torch.uint8, device="cpu")
        for k, f in enumerate(self.files[start:stop]):
            try:
                with Image.open(f) as im:
                    arr = np.asarray(im.convert("L" if self.channels == 1 else "RGB"))
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
                raise BadInputError(f"image {str(f)!r} cannot be read ({short_repr(str(err), 80)[1:-1]}); "
                                    "remove or re-save it") from err
            if arr.shape[:2] != self.shape[2:]:
                raise BadInputError(f"image {str(f)!r} is {arr.shape[1]}×{arr.shape[0]} after decoding, "
                                    f"the folder's images are {self.shape[3]}×{self.shape[2]}")
            out[k] = torch.from_numpy(arr.copy()).reshape(self.shape[2], self.shape[3], -1).permute(2, 0, 1)
        _count(out.shape[0])
        return out


class RowRange(Rows):
    """Rows ``lo..hi`` of another source (``--limit``: the first rows only)."""

    def __init__(self, base: Rows, lo: int, hi: int):
        self.base, self.lo, self.hi = base, int(lo), int(hi)
        self.shape, self.dtype, self.source = (self.hi - self.lo, *base.shape[1:]), base.dtype, base.source

    def read(self, start: int, stop: int) -> torch.Tensor:
        start, stop = max(0, start), min(len(self), stop)
        return self.base.read(self.lo + start, self.lo + max(start, stop))


class FloatRows(Rows):
    """Another source's rows as float32 in [0, 1] (uint8 divided by 255), converted as they are read."""

    def __init__(self, base: Rows):
        self.base, self.shape, self.dtype, self.source = base, base.shape, torch.float32, base.source

    def read(self, start: int, stop: int) -> torch.Tensor:
        return as_float(self.base.read(start, stop))


class ReshapedRows(Rows):
    """Another source's rows with another row shape of the same size (N×H×W idx images as N×1×H×W)."""

    def __init__(self, base: Rows, row_shape: tuple[int, ...]):
        self.base, self.dtype, self.source = base, base.dtype, base.source
        self.shape = (len(base), *row_shape)

    def read(self, start: int, stop: int) -> torch.Tensor:
        block = self.base.read(start, stop)
        return block.reshape(block.shape[0], *self.shape[1:])


class TensorRows(Rows):
    """Rows of a tensor that may be memory-mapped (``torch.load(mmap=True)``): read by copying them out."""

    def __init__(self, tensor: torch.Tensor, source: str = ""):
        self.tensor_ = tensor
        self.shape, self.dtype, self.source = tuple(int(s) for s in tensor.shape), tensor.dtype, source

    def read(self, start: int, stop: int) -> torch.Tensor:
        block = self.tensor_[max(0, start):max(0, start, stop)].clone()
        _count(block.shape[0])
        return block
