"""shared/data.py: IDX reading on the real MNIST test files, corrupt inputs, the embedded subset, batching."""
from __future__ import annotations

import gzip
import hashlib
import shutil
import struct
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from shared import data
from shared.data import (
    IMAGES_MAGIC,
    LABELS_MAGIC,
    DataError,
    Mnist,
    batch_indices,
    binarize,
    load_embedded_mnist,
    load_idx_split,
    num_batches,
    read_idx,
    read_idx_pair,
    stratified_split,
)
from shared.errors import UserError
from shared.tasks import GanTask
from tests.conftest import MNIST_TEST_DIR

IMAGES_GZ = MNIST_TEST_DIR / "t10k-images-idx3-ubyte.gz"
LABELS_GZ = MNIST_TEST_DIR / "t10k-labels-idx1-ubyte.gz"

FIRST_TEN_LABELS = [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
TEST_LABEL_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]



# ---------------------------------------------------------------- helpers
def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    """An unsigned-byte IDX file holding `array` (magic defaults to 0x0800 | ndim)."""
    array = np.asarray(array, dtype=np.uint8)
    magic = (0x0800 | array.ndim) if magic is None else magic
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape) + array.tobytes()


def write_idx(path: Path, array: np.ndarray, magic: int | None = None, gz: bool = False) -> Path:
    raw = idx_bytes(array, magic)
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def tiny_images(n: int = 3, side: int = 28) -> np.ndarray:
    return np.arange(n * side * side, dtype=np.int64).reshape(n, side, side).astype(np.uint8)


def tiny_labels(n: int = 3) -> np.ndarray:
    return (np.arange(n) % 10).astype(np.uint8)


@contextmanager
def raises_data_error(*fragments: str):
    """Expect a one-line DataError whose message contains every fragment."""
    with pytest.raises(DataError) as info:
        yield info
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert "\n" not in message, f"multi-line error message: {message!r}"


@pytest.fixture(scope="module")
def mnist_test():
    return read_idx_pair(IMAGES_GZ, LABELS_GZ)


@pytest.fixture(scope="module")
def raw_bytes():
    """Decompressed bytes of the official test images and labels."""
    return gzip.decompress(IMAGES_GZ.read_bytes()), gzip.decompress(LABELS_GZ.read_bytes())


# ---------------------------------------------------------------- the real MNIST test files
def test_read_idx_pair_on_official_test_set(mnist_test):
    x, y = mnist_test
    assert x.shape == (10000, 784) and x.dtype == np.float32
    assert y.shape == (10000,) and y.dtype == np.int64
    assert x.min() == 0.0 and x.max() == 1.0
    assert y[:10].tolist() == FIRST_TEN_LABELS
    assert np.bincount(y, minlength=10).tolist() == TEST_LABEL_COUNTS
    # pixel values are exactly k/255
    np.testing.assert_array_equal(np.round(x * 255) / 255, x)


def test_official_test_set_is_byte_identical_to_the_original_distribution():
    """The md5 sums the MNIST database published for these two files: a re-compressed or altered copy fails here."""
    assert hashlib.md5(IMAGES_GZ.read_bytes()).hexdigest() == "9fb629c4189551a2d022fa330f9573f3"
    assert hashlib.md5(LABELS_GZ.read_bytes()).hexdigest() == "ec29112dd5afa0611ce80d1b7f02629c"


def test_read_idx_raw_headers():
    images = read_idx(IMAGES_GZ, IMAGES_MAGIC)
    labels = read_idx(LABELS_GZ, LABELS_MAGIC)
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and labels.dtype == np.uint8
    # the first test digit, a 7, has ink in the middle rows and blank borders
    assert images[0, 0].sum() == 0 and images[0, :, 0].sum() == 0 and images[0].max() == 255


def test_load_idx_split_gz_and_raw_identical(tmp_path, mnist_test, raw_bytes):
    x_gz, y_gz = load_idx_split(MNIST_TEST_DIR, "test")
    np.testing.assert_array_equal(x_gz, mnist_test[0])
    np.testing.assert_array_equal(y_gz, mnist_test[1])

    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(raw_bytes[0])
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(raw_bytes[1])
    x_raw, y_raw = load_idx_split(tmp_path, "test")
    assert x_raw.dtype == x_gz.dtype and y_raw.dtype == y_gz.dtype
    np.testing.assert_array_equal(x_raw, x_gz)
    np.testing.assert_array_equal(y_raw, y_gz)


def test_torchvision_layout_found(tmp_path, mnist_test):
    raw_dir = tmp_path / "MNIST" / "raw"
    raw_dir.mkdir(parents=True)
    shutil.copyfile(IMAGES_GZ, raw_dir / IMAGES_GZ.name)
    shutil.copyfile(LABELS_GZ, raw_dir / LABELS_GZ.name)
    assert data.find_idx_file(tmp_path, "test", "images") == raw_dir / IMAGES_GZ.name
    x, y = load_idx_split(tmp_path, "test")
    np.testing.assert_array_equal(x, mnist_test[0])
    np.testing.assert_array_equal(y, mnist_test[1])


def test_dotted_name_variant_found(tmp_path, mnist_test, raw_bytes):
    (tmp_path / "t10k-images.idx3-ubyte").write_bytes(raw_bytes[0])
    shutil.copyfile(LABELS_GZ, tmp_path / "t10k-labels.idx1-ubyte.gz")
    assert data.find_idx_file(tmp_path, "test", "images") == tmp_path / "t10k-images.idx3-ubyte"
    assert data.find_idx_file(tmp_path, "test", "labels") == tmp_path / "t10k-labels.idx1-ubyte.gz"
    x, y = load_idx_split(tmp_path, "test")
    np.testing.assert_array_equal(x, mnist_test[0])
    np.testing.assert_array_equal(y, mnist_test[1])


def test_load_mnist_test_dir_replaces_test_split(mnist_test):
    m = data.load_mnist(None, MNIST_TEST_DIR)
    assert m.train_x.shape == (4000, 784)
    assert m.test_x.shape == (10000, 784)
    np.testing.assert_array_equal(m.test_y, mnist_test[1])
    assert str(MNIST_TEST_DIR) in m.source


# ---------------------------------------------------------------- corrupt inputs
def test_data_error_is_user_error():
    assert issubclass(DataError, UserError)


def test_wrong_magic_real_file(tmp_path, raw_bytes):
    # labels file read as images: magic 0x801 where 0x803 is expected
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(raw_bytes[1])
    with raises_data_error(str(path), "magic number 0x00000801", "expected 0x00000803", "3 dimensions"):
        read_idx(path, IMAGES_MAGIC)


def test_wrong_magic_labels(tmp_path):
    path = write_idx(tmp_path / "labels", tiny_labels(), magic=0x00000803)
    with raises_data_error(str(path), "magic number 0x00000803", "expected 0x00000801", "1 dimension)"):
        read_idx(path, LABELS_MAGIC)


def test_wrong_type_code(tmp_path):
    # float IDX (type 0x0d) is not accepted as unsigned bytes
    path = write_idx(tmp_path / "images", tiny_images(), magic=0x00000D03)
    with raises_data_error(str(path), "magic number 0x00000d03", "expected 0x00000803"):
        read_idx(path, IMAGES_MAGIC)


def test_truncated_raw_file(tmp_path, raw_bytes):
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(raw_bytes[0][:-100])
    with raises_data_error(str(path), "7839916 bytes", "expected 7840016", "10000x28x28", "truncated"):
        read_idx(path, IMAGES_MAGIC)


def test_truncated_gzip_file(tmp_path):
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(IMAGES_GZ.read_bytes()[:100_000])
    with raises_data_error(str(path), "truncated gzip"):
        read_idx(path, IMAGES_MAGIC)


def test_gzip_of_truncated_file(tmp_path, raw_bytes):
    # a valid gzip stream whose content is a truncated IDX file
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(raw_bytes[1][:5000]))
    with raises_data_error(str(path), "5000 bytes", "expected 10008", "10000 items", "truncated"):
        read_idx(path, LABELS_MAGIC)


def test_gzip_crc_error(tmp_path):
    raw = bytearray(LABELS_GZ.read_bytes())
    raw[-5] ^= 0x01  # CRC32 of the trailer
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(bytes(raw))
    with raises_data_error(str(path), "corrupt or truncated gzip"):
        read_idx(path, LABELS_MAGIC)


def test_gzip_corrupt_deflate_stream(tmp_path):
    raw = bytearray(LABELS_GZ.read_bytes())
    for i in range(100, 200):
        raw[i] ^= 0xFF
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(bytes(raw))
    with raises_data_error(str(path), "corrupt or truncated gzip"):
        read_idx(path, LABELS_MAGIC)


def test_trailing_bytes(tmp_path):
    path = tmp_path / "labels"
    path.write_bytes(idx_bytes(tiny_labels(3)) + b"\x00\x01")
    with raises_data_error(str(path), "13 bytes", "expected 11", "3 items", "trailing data"):
        read_idx(path, LABELS_MAGIC)


def test_shorter_than_header(tmp_path):
    path = tmp_path / "images"
    path.write_bytes(struct.pack(">II", IMAGES_MAGIC, 3))
    with raises_data_error(str(path), "8 bytes is too short for an IDX header of 16 bytes"):
        read_idx(path, IMAGES_MAGIC)


def test_empty_file(tmp_path):
    path = tmp_path / "labels"
    path.write_bytes(b"")
    with raises_data_error(str(path), "0 bytes is too short for an IDX header of 8 bytes"):
        read_idx(path, LABELS_MAGIC)


def test_header_dims_overflow(tmp_path):
    path = tmp_path / "images"
    path.write_bytes(struct.pack(">IIII", IMAGES_MAGIC, 2**31, 2**31, 4))
    with raises_data_error(str(path), "truncated"):
        read_idx(path, IMAGES_MAGIC)


def test_tiny_pair_roundtrip(tmp_path):
    images, labels = tiny_images(3), tiny_labels(3)
    x, y = read_idx_pair(write_idx(tmp_path / "i", images), write_idx(tmp_path / "l", labels, gz=True))
    np.testing.assert_array_equal(x, images.reshape(3, 784).astype(np.float32) / 255)
    assert y.tolist() == [0, 1, 2]


def test_count_mismatch(tmp_path):
    images = write_idx(tmp_path / "images", tiny_images(3))
    labels = write_idx(tmp_path / "labels", tiny_labels(2))
    with raises_data_error(f"{images} holds 3 images but {labels} holds 2 labels"):
        read_idx_pair(images, labels)


def test_label_out_of_range(tmp_path):
    images = write_idx(tmp_path / "images", tiny_images(3))
    labels = write_idx(tmp_path / "labels", np.array([1, 10, 3]))
    with raises_data_error(str(labels), "label 10 found", "expected digits 0-9"):
        read_idx_pair(images, labels)


def test_label_nine_is_fine(tmp_path):
    images = write_idx(tmp_path / "images", tiny_images(3))
    labels = write_idx(tmp_path / "labels", np.array([9, 0, 9]))
    assert read_idx_pair(images, labels)[1].tolist() == [9, 0, 9]


def test_images_not_28x28(tmp_path):
    images = write_idx(tmp_path / "images", tiny_images(3, side=32))
    labels = write_idx(tmp_path / "labels", tiny_labels(3))
    with raises_data_error(str(images), "images are 32x32, expected 28x28"):
        read_idx_pair(images, labels)


def test_missing_folder(tmp_path):
    missing = tmp_path / "nope"
    with raises_data_error(f"data folder {missing} does not exist"):
        load_idx_split(missing, "train")


def test_folder_without_files(tmp_path):
    (tmp_path / "unrelated.txt").write_text("x")
    with raises_data_error(str(tmp_path), "no MNIST train images file", "train-images-idx3-ubyte[.gz]"):
        load_idx_split(tmp_path, "train")


def test_folder_without_labels(tmp_path):
    write_idx(tmp_path / "t10k-images-idx3-ubyte", tiny_images(3))
    with raises_data_error(str(tmp_path), "no MNIST test labels file", "t10k-labels-idx1-ubyte[.gz]"):
        load_idx_split(tmp_path, "test")


def test_load_mnist_needs_train_files(tmp_path):
    write_idx(tmp_path / "t10k-images-idx3-ubyte", tiny_images(3))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", tiny_labels(3))
    with raises_data_error("no MNIST train images file"):
        data.load_mnist(tmp_path)


def write_split(folder: Path, split: str, images: np.ndarray, labels: np.ndarray) -> tuple[Path, Path]:
    """The standard-named IDX pair of one split in `folder` (made if needed)."""
    folder.mkdir(parents=True, exist_ok=True)
    prefix = "train" if split == "train" else "t10k"
    return (
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images),
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels),
    )


def as_float(images: np.ndarray) -> np.ndarray:
    return images.reshape(len(images), 784).astype(np.float64) / 255  # what the reader should give, in float64


def test_train_files_in_data_dir_test_files_in_test_dir(tmp_path):
    train_images, test_images = tiny_images(3), 255 - tiny_images(2)
    write_split(tmp_path / "train", "train", train_images, tiny_labels(3))
    write_split(tmp_path / "test", "test", test_images, np.array([7, 2]))
    m = data.load_mnist(tmp_path / "train", tmp_path / "test")
    np.testing.assert_allclose(m.train_x, as_float(train_images), rtol=1e-7)
    np.testing.assert_allclose(m.test_x, as_float(test_images), rtol=1e-7)
    assert m.train_y.tolist() == [0, 1, 2] and m.test_y.tolist() == [7, 2]
    assert m.source == f"MNIST IDX files in {tmp_path / 'train'}; test set from {tmp_path / 'test'}"


def test_test_dir_means_data_dirs_test_files_are_not_read(tmp_path):
    write_split(tmp_path / "full", "train", tiny_images(3), tiny_labels(3))
    write_split(tmp_path / "full", "test", tiny_images(2), tiny_labels(2))
    (tmp_path / "full" / "t10k-images-idx3-ubyte").write_bytes(b"corrupt")  # an error if read
    write_split(tmp_path / "test", "test", tiny_images(4), tiny_labels(4))
    m = data.load_mnist(tmp_path / "full", tmp_path / "test")
    assert m.test_x.shape == (4, 784) and m.test_y.tolist() == [0, 1, 2, 3]
    with raises_data_error(str(tmp_path / "full" / "t10k-images-idx3-ubyte"), "7 bytes is too short"):
        data.load_mnist(tmp_path / "full")


def test_train_files_only_without_test_dir(tmp_path):
    write_split(tmp_path, "train", tiny_images(3), tiny_labels(3))
    with raises_data_error(str(tmp_path), "no MNIST test images file", "t10k-images-idx3-ubyte[.gz]"):
        data.load_mnist(tmp_path)


EMPTY_IMAGES, EMPTY_LABELS = np.zeros((0, 28, 28), np.uint8), np.zeros((0,), np.uint8)


def test_empty_training_split(tmp_path):
    images, _ = write_split(tmp_path, "train", EMPTY_IMAGES, EMPTY_LABELS)
    write_split(tmp_path, "test", tiny_images(2), tiny_labels(2))
    assert read_idx_pair(*write_split(tmp_path / "copy", "train", EMPTY_IMAGES, EMPTY_LABELS))[0].shape == (0, 784)
    with raises_data_error(f"{images}: 0 images, expected at least 1 in the MNIST train split"):
        data.load_mnist(tmp_path)


def test_empty_test_split_in_data_dir(tmp_path):
    write_split(tmp_path, "train", tiny_images(3), tiny_labels(3))
    images, _ = write_split(tmp_path, "test", EMPTY_IMAGES, EMPTY_LABELS)
    with raises_data_error(f"{images}: 0 images, expected at least 1 in the MNIST test split"):
        data.load_mnist(tmp_path)


def test_empty_test_split_in_test_dir(tmp_path):
    images, _ = write_split(tmp_path / "test", "test", EMPTY_IMAGES, EMPTY_LABELS)
    with raises_data_error(f"{images}: 0 images, expected at least 1 in the MNIST test split"):
        data.load_mnist(None, tmp_path / "test")  # the embedded training split with an empty test folder


def test_zero_dimension_beside_huge_ones(tmp_path):
    # 0 x 2^32-1 x 2^32-1 items is 0 bytes, but numpy cannot make an array of that shape (found by tests/test_fuzz.py)
    path = tmp_path / "images"
    path.write_bytes(struct.pack(">IIII", IMAGES_MAGIC, 0, 2**32 - 1, 2**32 - 1))
    with raises_data_error(str(path), "dimensions 0x4294967295x4294967295 are too large"):
        read_idx(path, IMAGES_MAGIC)


# ---------------------------------------------------------------- the GAN's test split
def tiny_mnist(n_test: int) -> Mnist:
    x = np.linspace(0, 1, 5 * 784, dtype=np.float32).reshape(5, 784)
    return Mnist(x[:3], np.arange(3), x[3 : 3 + n_test], np.arange(n_test), "tiny IDX files in /somewhere")


@pytest.mark.parametrize("n_test", [0, 1])
def test_gan_needs_two_test_images(n_test):
    with pytest.raises(UserError) as info:
        GanTask(tiny_mnist(n_test))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"gan: the test split (tiny IDX files in /somewhere) holds {n_test} image(s), expected at least 2")


def test_gan_with_two_test_images():
    task = GanTask(tiny_mnist(2))
    assert task.n_infer == 2 and task.n_train == 3
    np.testing.assert_array_equal(task.real_test_x, tiny_mnist(2).test_x)


def test_unreadable_path_is_data_error(tmp_path):
    # a folder where a file is expected: read_bytes fails with an OSError
    folder = tmp_path / "t10k-images-idx3-ubyte"
    folder.mkdir()
    with raises_data_error(str(folder), "cannot read"):
        read_idx(folder, IMAGES_MAGIC)


# ---------------------------------------------------------------- embedded subset
@pytest.fixture(scope="module")
def embedded():
    return load_embedded_mnist()


def test_embedded_sizes_and_classes(embedded):
    m = embedded
    assert m.train_x.shape == (4000, 784) and m.train_x.dtype == np.float32
    assert m.test_x.shape == (1000, 784) and m.test_x.dtype == np.float32
    assert m.train_y.dtype == np.int64 and m.test_y.dtype == np.int64
    assert np.bincount(m.train_y, minlength=10).tolist() == [400] * 10
    assert np.bincount(m.test_y, minlength=10).tolist() == [100] * 10
    for x in (m.train_x, m.test_x):
        assert x.min() == 0.0 and x.max() == 1.0
    assert "4000/1000" in m.source


def test_embedded_split_is_disjoint_partition(embedded):
    x, y = data._embedded_arrays()
    assert x.shape == (5000, 784) and y.shape == (5000,)
    train_idx, test_idx = stratified_split(y, data.EMBEDDED_TRAIN_PER_CLASS, data.SPLIT_SEED)
    assert len(train_idx) == 4000 and len(test_idx) == 1000
    assert len(np.intersect1d(train_idx, test_idx)) == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train_idx, test_idx])), np.arange(5000))
    # load_embedded_mnist is exactly that split
    np.testing.assert_array_equal(embedded.train_x, x[train_idx])
    np.testing.assert_array_equal(embedded.train_y, y[train_idx])
    np.testing.assert_array_equal(embedded.test_x, x[test_idx])
    np.testing.assert_array_equal(embedded.test_y, y[test_idx])


def test_embedded_is_deterministic(embedded):
    again = load_embedded_mnist()
    for name in ("train_x", "train_y", "test_x", "test_y"):
        np.testing.assert_array_equal(getattr(again, name), getattr(embedded, name))


def test_stratified_split_per_class_and_seed():
    labels = np.repeat(np.arange(3), 5)  # 5 of each class
    train, test = stratified_split(labels, 2, seed=0)
    assert np.bincount(labels[train]).tolist() == [2, 2, 2]
    assert np.bincount(labels[test]).tolist() == [3, 3, 3]
    assert np.all(np.diff(train) > 0) and np.all(np.diff(test) > 0)  # sorted, unique
    again = stratified_split(labels, 2, seed=0)
    np.testing.assert_array_equal(again[0], train)
    other = [stratified_split(labels, 2, seed=s)[0] for s in range(1, 6)]
    assert any(not np.array_equal(o, train) for o in other)


# ---------------------------------------------------------------- binarize
def test_binarize_threshold():
    x = np.array([0.0, 0.4999, 0.5, 0.5001, 1.0], dtype=np.float32)
    b = binarize(x)
    assert b.dtype == np.float32
    assert b.tolist() == [0.0, 0.0, 0.0, 1.0, 1.0]


def test_binarize_pixel_levels(mnist_test):
    # 127/255 < 0.5 < 128/255
    x = np.array([127, 128], dtype=np.float32) / 255.0
    assert binarize(x).tolist() == [0.0, 1.0]
    b = binarize(mnist_test[0][:100])
    assert set(np.unique(b).tolist()) == {0.0, 1.0}
    np.testing.assert_array_equal(b, (mnist_test[0][:100] * 255 >= 128).astype(np.float32))


# ---------------------------------------------------------------- batching
def _epoch(n, bs, seed=0, epoch=1, **kw):
    return list(batch_indices(n, bs, seed, epoch, **kw))


def test_batch_indices_permutation_no_drop():
    batches = _epoch(103, 10, drop_last=False)
    assert [len(b) for b in batches] == [10] * 10 + [3]
    assert len(batches) == num_batches(103, 10, drop_last=False) == 11
    allidx = np.concatenate(batches)
    np.testing.assert_array_equal(np.sort(allidx), np.arange(103))
    assert not np.array_equal(allidx, np.arange(103))  # actually shuffled


def test_batch_indices_drop_last():
    batches = _epoch(103, 10, drop_last=True)
    assert [len(b) for b in batches] == [10] * 10
    assert len(batches) == num_batches(103, 10) == 10
    allidx = np.concatenate(batches)
    assert len(np.unique(allidx)) == 100
    assert allidx.min() >= 0 and allidx.max() < 103
    # the dropped remainder is the tail of the same permutation
    full = np.concatenate(_epoch(103, 10, drop_last=False))
    np.testing.assert_array_equal(allidx, full[:100])


def test_batch_indices_exact_multiple():
    assert num_batches(100, 10) == num_batches(100, 10, drop_last=False) == 10
    assert len(_epoch(100, 10)) == len(_epoch(100, 10, drop_last=False)) == 10


def test_batch_indices_batch_larger_than_n():
    assert _epoch(5, 10) == []
    assert num_batches(5, 10) == 0
    (only,) = _epoch(5, 10, drop_last=False)
    np.testing.assert_array_equal(np.sort(only), np.arange(5))
    assert num_batches(5, 10, drop_last=False) == 1


def test_batch_indices_reproducible_by_seed_and_epoch():
    a = np.concatenate(_epoch(1000, 100, seed=3, epoch=2))
    b = np.concatenate(_epoch(1000, 100, seed=3, epoch=2))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, np.random.default_rng([3, 2]).permutation(1000))
    assert not np.array_equal(a, np.concatenate(_epoch(1000, 100, seed=3, epoch=3)))
    assert not np.array_equal(a, np.concatenate(_epoch(1000, 100, seed=4, epoch=2)))


def test_batch_indices_no_shuffle():
    batches = _epoch(25, 10, shuffle=False, drop_last=False)
    np.testing.assert_array_equal(np.concatenate(batches), np.arange(25))
    assert [b.tolist() for b in batches][-1] == list(range(20, 25))
    np.testing.assert_array_equal(np.concatenate(_epoch(25, 10, shuffle=False)), np.arange(20))


@pytest.mark.parametrize("bs", [0, -1])
def test_batch_indices_bad_batch_size(bs):
    with pytest.raises(UserError, match=rf"^--batch-size must be at least 1, got {bs}$"):
        _epoch(10, bs)
