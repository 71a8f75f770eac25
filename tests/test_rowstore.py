"""Images read on demand (certify/rowstore.py, issue 14): every format gives the same rows as reading the
whole file, reads only the rows asked for, and a damaged file is one line of bad input, not a crash.

The truth is the eager reading: ``read_idx`` of the whole file, ``np.load`` of the whole array,
``torch.load`` without ``mmap``, every image decoded with PIL.
"""

from __future__ import annotations

import gzip
import struct
import tracemalloc
import zipfile

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from certify import rowstore
from certify.data import load_dataset, read_idx
from certify.errors import BadInputError

from .test_data import write_idx

N = 37
RNG = np.random.default_rng(0)
IMAGES = RNG.integers(0, 256, size=(N, 6, 5), dtype=np.uint8)
LABELS = RNG.integers(0, 10, size=N).astype(np.uint8)


def _idx(tmp, gz: bool):
    d = tmp / ("gz" if gz else "raw")
    d.mkdir()
    write_idx(d / "t10k-images-idx3-ubyte", IMAGES, gz)
    write_idx(d / "t10k-labels-idx1-ubyte", LABELS, gz)
    return d


def _npz(tmp, compressed: bool, x=IMAGES):
    p = tmp / ("c.npz" if compressed else "s.npz")
    (np.savez_compressed if compressed else np.savez)(p, x=x, y=LABELS)
    return p


def _pt(tmp, legacy: bool):
    p = tmp / ("legacy.pt" if legacy else "d.pt")
    torch.save({"x": torch.from_numpy(IMAGES.copy()), "y": torch.from_numpy(LABELS.astype(np.int64))}, p,
               _use_new_zipfile_serialization=not legacy)
    return p


def _images(tmp):
    from PIL import Image

    root = tmp / "imgs"
    for i in range(N):
        d = root / f"c{LABELS[i]}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(IMAGES[i]).save(d / f"{i:03d}.png")
    return root


def _cifar(tmp):
    d = tmp / "cifar-10-batches-bin"
    d.mkdir()
    x = RNG.integers(0, 256, size=(N, 3, 32, 32), dtype=np.uint8)
    rec = np.concatenate([LABELS.reshape(-1, 1), x.reshape(N, -1)], axis=1)
    (d / "test_batch.bin").write_bytes(rec.tobytes())
    return d, x


SOURCES = ["idx", "idx-gz", "npz", "npz-compressed", "pt", "pt-legacy", "images", "cifar10"]


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rows")
    cifar_root, cifar_x = _cifar(tmp)
    images = _images(tmp)
    order = sorted(range(N), key=lambda i: (LABELS[i], i))  # an image folder lists class by class
    grey = torch.from_numpy(IMAGES.copy()).unsqueeze(1)
    return {
        "idx": (load_dataset(_idx(tmp, False)), grey),
        "idx-gz": (load_dataset(_idx(tmp, True)), grey),
        "npz": (load_dataset(_npz(tmp, False)), grey),
        "npz-compressed": (load_dataset(_npz(tmp, True)), grey),
        "pt": (load_dataset(_pt(tmp, False)), grey),
        "pt-legacy": (load_dataset(_pt(tmp, True)), grey),
        "images": (load_dataset(images), grey[order]),
        "cifar10": (load_dataset("cifar10", data_root=cifar_root), torch.from_numpy(cifar_x)),
    }


@pytest.mark.parametrize("name", SOURCES)
def test_every_format_reads_the_rows_of_the_whole_file(sources, name):
    ds, truth = sources[name]
    assert len(ds) == N and ds.input_shape == tuple(truth.shape[1:])
    assert torch.equal(ds.x, truth)
    assert torch.equal(ds.take([5, 0, 5, N - 1, 2]), truth[[5, 0, 5, N - 1, 2]])
    x, _ = ds.batch(30, 100)
    assert torch.equal(x, truth[30:].float() / 255)
    assert torch.equal(ds.float_rows()[3:9], truth[3:9].float() / 255)
    assert torch.equal(ds.head(4).x, truth[:4]) and len(ds.head(4)) == 4


@settings(max_examples=40, deadline=None)
@given(name=st.sampled_from(SOURCES), index=st.lists(st.integers(-N, N - 1), max_size=30),
       start=st.integers(0, N), length=st.integers(0, N))
def test_any_index_and_any_slice_read_the_same_rows(sources, name, index, start, length):
    ds, truth = sources[name]
    assert torch.equal(ds.take(index), truth[index] if index else truth[:0])
    assert torch.equal(ds.rows[start:start + length], truth[start:start + length])
    assert torch.equal(ds.rows[start:start + length:3], truth[start:start + length:3])
    if index:
        assert torch.equal(ds.rows[index[0]], truth[index[0]])


def test_loading_reads_no_image_and_a_batch_reads_its_rows_only(tmp_path):
    for gz in (False, True):
        d = _idx(tmp_path, gz)
        before = rowstore.rows_read()
        ds = load_dataset(d)
        assert rowstore.rows_read() == before  # labels are read whole; the images are not
        ds.batch(10, 20)
        ds.take([3, 4, 30])
        assert rowstore.rows_read() == before + 10 + 3


def test_a_shard_of_a_large_gzipped_file_does_not_hold_the_file_in_memory(tmp_path):
    big = np.random.default_rng(1).integers(0, 256, size=(20_000, 28, 28), dtype=np.uint8)  # 15.7 MB
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", big, gz=True)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(20_000, dtype=np.uint8), gz=True)
    tracemalloc.start()
    try:
        ds = load_dataset(tmp_path)
        for lo in range(15_000, 20_000, 500):  # the last quarter, batch by batch, as a rank reads its shard
            ds.batch(lo, lo + 500)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2**20, f"peak {peak / 2**20:.1f} MiB while reading 500 rows at a time of a 15.7 MB file"
    assert torch.equal(ds.take([19_999, 15_000]), torch.from_numpy(big[[19_999, 15_000]]).unsqueeze(1))


def test_a_truncated_gzipped_idx_file_is_bad_input_at_load(tmp_path):
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", IMAGES, gz=True)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", LABELS, gz=True)
    p = tmp_path / "t10k-images-idx3-ubyte.gz"
    p.write_bytes(p.read_bytes()[:-40])
    with pytest.raises(BadInputError, match="damaged or truncated gzip"):
        load_dataset(tmp_path)


def test_a_gzipped_idx_file_damaged_inside_is_bad_input_when_its_rows_are_read(tmp_path):
    header = bytes([0, 0, 0x08, 3]) + struct.pack(">III", N, 6, 5)
    good = gzip.compress(header + IMAGES.tobytes())
    short = gzip.compress(header + IMAGES.tobytes()[:-60])  # the trailer of the short file, patched to match
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(short[:-4] + good[-4:])
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", LABELS, gz=True)
    ds = load_dataset(tmp_path)
    assert torch.equal(ds.take([0, 1]), torch.from_numpy(IMAGES[:2]).unsqueeze(1))
    with pytest.raises(BadInputError, match="truncated or damaged"):
        ds.batch(N - 3, N)


def test_a_plain_idx_file_of_the_wrong_length_is_bad_input(tmp_path):
    write_idx(tmp_path / "t10k-images-idx3-ubyte", IMAGES, gz=False)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", LABELS, gz=False)
    p = tmp_path / "t10k-images-idx3-ubyte"
    for data in (p.read_bytes()[:-3], p.read_bytes() + b"\0"):
        p.write_bytes(data)
        with pytest.raises(BadInputError, match="truncated"):
            load_dataset(tmp_path)
    with pytest.raises(BadInputError, match="truncated"):
        read_idx(p)


@pytest.mark.parametrize("compressed", [False, True])
def test_a_truncated_npz_is_bad_input(tmp_path, compressed):
    p = _npz(tmp_path, compressed, x=np.random.default_rng(2).integers(0, 256, (400, 28, 28), dtype=np.uint8))
    data = p.read_bytes()
    cut = tmp_path / "cut.npz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(BadInputError, match="npz"):
        ds = load_dataset(cut)
        ds.x  # a member cut short inside is found when its rows are read


def test_an_npz_member_that_ends_past_the_file_is_refused(tmp_path):
    p = _npz(tmp_path, False)
    with zipfile.ZipFile(p) as z:
        x_info = z.getinfo("x.npy")
    data = bytearray(p.read_bytes())
    # move the stored member's start forward: its data would now run past the end of the file
    local = x_info.header_offset
    extra = struct.unpack("<H", data[local + 28:local + 30])[0]
    data[local + 28:local + 30] = struct.pack("<H", extra + len(data))
    (tmp_path / "bad.npz").write_bytes(bytes(data))
    with pytest.raises(BadInputError, match="npz"):
        load_dataset(tmp_path / "bad.npz").x


@pytest.mark.parametrize("dtype", [">f4", "<f8", "float16"])
def test_float_npz_of_any_byte_order_reads_native_values_and_is_range_checked(tmp_path, dtype):
    x = (IMAGES / 255.0).astype(dtype)
    p = tmp_path / "f.npz"
    np.savez(p, x=x, y=LABELS)
    ds = load_dataset(p)
    assert torch.equal(ds.x, torch.from_numpy(x.astype(np.float64)).to(ds.rows.dtype).unsqueeze(1))
    x[3, 2, 2] = np.nan
    np.savez(p, x=x, y=LABELS)
    with pytest.raises(BadInputError, match="NaN or Inf"):
        load_dataset(p)


def test_an_image_folder_with_mixed_sizes_or_modes_names_them_before_decoding(tmp_path):
    from PIL import Image

    for name, img in (("a/1.png", Image.new("L", (5, 6))), ("b/2.png", Image.new("RGB", (5, 6)))):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        img.save(tmp_path / name)
    with pytest.raises(BadInputError, match="different sizes or colour modes"):
        load_dataset(tmp_path)


def test_a_colour_image_folder_of_height_three_is_c_h_w(tmp_path):
    from PIL import Image

    rgb = RNG.integers(0, 256, size=(3, 7, 3), dtype=np.uint8)  # H = 3: no guessing at the channel axis
    (tmp_path / "a").mkdir()
    Image.fromarray(rgb).save(tmp_path / "a" / "x.png")
    ds = load_dataset(tmp_path)
    assert ds.input_shape == (3, 3, 7)
    assert torch.equal(ds.x[0], torch.from_numpy(rgb).permute(2, 0, 1))


@pytest.mark.parametrize("shape", [(0, 28, 28), (3, 0, 5), (3, 4, 0)])
def test_empty_sets_and_images_without_pixels_are_bad_input(tmp_path, shape):
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros(shape, np.uint8), gz=False)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(shape[0], np.uint8), gz=False)
    np.savez(tmp_path / "e.npz", x=np.zeros(shape, np.uint8), y=np.zeros(shape[0], np.uint8))
    for source in (tmp_path, tmp_path / "e.npz"):
        with pytest.raises(BadInputError, match="is empty|no pixels"):
            load_dataset(source)


def test_a_gzip_file_of_several_members_is_read_whole(tmp_path):
    """Concatenated gzip members (what some tools write): the last member's trailer alone does not match
    the header's length, so the length is counted by streaming before the file is refused."""
    header = bytes([0, 0, 0x08, 3]) + struct.pack(">III", N, 6, 5)
    data = header + IMAGES.tobytes()
    cut = len(data) // 3
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(data[:cut]) + gzip.compress(data[cut:]))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", LABELS, gz=True)
    ds = load_dataset(tmp_path)
    assert torch.equal(ds.x, torch.from_numpy(IMAGES).unsqueeze(1))
