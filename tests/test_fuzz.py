"""Fuzzing the readers: the IDX reader, the names reader and the weight loader, with hypothesis.

Arbitrary bytes, truncations, single bit flips and header corruption of
small real files give either the right result or the project's one-line
error (a UserError), never another exception. "Right" is decided by an
oracle written here from the format's description (struct, json, re and
numpy), not by the reader's code: where the oracle decodes the bytes, the
reader must return exactly that; where it does not, the reader must refuse.

Every property runs a fixed number of examples, derandomized (the same
examples on every run, so CI is reproducible), without a deadline (a slow
disk is not a failure). Single bit flips of the small files, and their
truncations, are tried exhaustively where the file is small enough.
"""
from __future__ import annotations

import gzip
import itertools
import json
import math
import re
import string
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest
from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st

from shared.data import IMAGES_MAGIC, LABELS_MAGIC, DataError, read_idx, read_idx_pair
from shared.errors import UserError
from shared.names import fold, read_names_dir
from shared.weights import load_weights, save_weights
from tests.conftest import MNIST_TEST_DIR, NAMES_DIR

T = TypeVar("T")


def fuzz(examples: int) -> Callable:
    """hypothesis settings of one property: `examples` cases, the same ones every run."""
    return settings(
        max_examples=examples, deadline=None, derandomize=True, database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )  # fmt: skip


class Files:
    """A fresh path per call under one folder: a file is never rewritten while an earlier result may map it."""

    def __init__(self, root: Path):
        self.root, self.counter = root, itertools.count()

    def write(self, raw: bytes, name: str = "file") -> Path:
        folder = self.root / str(next(self.counter))
        folder.mkdir()
        path = folder / name
        path.write_bytes(raw)
        return path

    def folder(self) -> Path:
        folder = self.root / str(next(self.counter))
        folder.mkdir()
        return folder


@pytest.fixture
def files(tmp_path: Path) -> Files:
    return Files(tmp_path)


def outcome(read: Callable[[], T], error: type[UserError] = UserError) -> T | UserError:
    """read()'s result, or the one-line project error it raised; any other exception fails the test."""
    try:
        return read()
    except error as e:
        assert "\n" not in str(e) and str(e), repr(str(e))
        return e


def flip(raw: bytes, bit: int) -> bytes:
    flipped = bytearray(raw)
    flipped[bit // 8] ^= 1 << (bit % 8)
    return bytes(flipped)


def every_flip(raw: bytes) -> Iterator[tuple[int, bytes]]:
    for bit in range(8 * len(raw)):
        yield bit, flip(raw, bit)


def same_arrays(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    """Equal keys, dtypes, shapes and bytes (NaN payloads included)."""
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and a[k].tobytes() == b[k].tobytes() for k in a
    )


# ---------------------------------------------------------------- IDX files
def idx_oracle(raw: bytes, magic: int) -> np.ndarray | None:
    """The uint8 array an unsigned-byte IDX file of this magic holds, or None if it is not one (raw bytes only)."""
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header or struct.unpack(">I", raw[:4])[0] != magic:
        return None
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    if len(raw) - header != math.prod(dims):
        return None
    if math.prod(d for d in dims if d) >= 2**63:  # numpy holds no array of that shape, even an empty one
        return None
    return np.array(list(raw[header:]), dtype=np.uint8).reshape(dims)


def idx_header(magic: int, dims: tuple[int, ...]) -> bytes:
    return struct.pack(f">I{len(dims)}I", magic, *dims)


@pytest.fixture(scope="module")
def real_idx() -> tuple[bytes, bytes]:
    """The first 4 digits of the official test set as a raw IDX image file and label file (3,152 and 12 bytes)."""
    images = read_idx(MNIST_TEST_DIR / "t10k-images-idx3-ubyte.gz", IMAGES_MAGIC)[:4]
    labels = read_idx(MNIST_TEST_DIR / "t10k-labels-idx1-ubyte.gz", LABELS_MAGIC)[:4]
    return idx_header(IMAGES_MAGIC, images.shape) + images.tobytes(), idx_header(LABELS_MAGIC, labels.shape) + labels.tobytes()


def check_idx(files: Files, raw: bytes, magic: int, expected: np.ndarray | None) -> None:
    got = outcome(lambda: read_idx(files.write(raw), magic), DataError)
    if expected is None:
        assert isinstance(got, DataError), f"read {got!r} where the oracle refuses"
    else:
        assert isinstance(got, np.ndarray), f"refused ({got}) where the oracle reads {expected.shape}"
        assert got.dtype == np.uint8 and got.shape == expected.shape and np.array_equal(got, expected)


@st.composite
def idx_files(draw: st.DrawFn) -> bytes:
    """The right magic, dimensions from 0 to 2^32 - 1, then a body of the promised length, one byte off, or 0-40 bytes."""
    magic = draw(st.sampled_from([IMAGES_MAGIC, LABELS_MAGIC]))
    dim = st.one_of(st.integers(0, 6), st.sampled_from([0, 28, 2**31, 2**32 - 1]), st.integers(0, 2**32 - 1))
    dims = tuple(draw(st.lists(dim, min_size=magic & 0xFF, max_size=magic & 0xFF)))
    promised = math.prod(dims)
    near = [n for n in (promised - 1, promised, promised + 1) if 0 <= n <= 4000]
    length = draw(st.one_of(st.integers(0, 40), st.sampled_from(near)) if near else st.integers(0, 40))
    pattern = draw(st.binary(min_size=1, max_size=16))  # repeated to the length: any bytes, cheaply
    return idx_header(magic, dims) + (pattern * (length // len(pattern) + 1))[:length]


idx_like = st.one_of(st.binary(max_size=64), idx_files())


@fuzz(200)
@given(raw=idx_like, gzipped=st.booleans())
def test_idx_reader_on_arbitrary_bytes(files: Files, raw: bytes, gzipped: bool):
    for magic in (IMAGES_MAGIC, LABELS_MAGIC):
        expected = idx_oracle(raw, magic)
        event(f"{'refused' if expected is None else 'read'} as {'images' if magic == IMAGES_MAGIC else 'labels'}")
        check_idx(files, gzip.compress(raw, mtime=0) if gzipped else raw, magic, expected)


BOUNDARY_DIMS = (0, 1, 28, 2**16, 2**31, 2**32 - 1)


def test_idx_reader_on_boundary_dimensions(files: Files):
    """Every triple of boundary sizes (an empty array beside 2^32 - 1 x 2^32 - 1 is one numpy cannot shape), bodies one byte off."""
    for dims in itertools.product(BOUNDARY_DIMS, repeat=3):
        promised = math.prod(dims)
        for length in {0, promised - 1, promised, promised + 1} & set(range(3 * 784 + 2)):
            raw = idx_header(IMAGES_MAGIC, dims) + bytes(range(256)) * (length // 256) + bytes(length % 256)
            check_idx(files, raw, IMAGES_MAGIC, idx_oracle(raw, IMAGES_MAGIC))


def test_idx_reader_on_every_truncation_and_header_flip(files: Files, real_idx: tuple[bytes, bytes]):
    for raw, magic in zip(real_idx, (IMAGES_MAGIC, LABELS_MAGIC)):
        header = 4 + 4 * (magic & 0xFF)
        for cut in [*range(header + 2), len(raw) // 2, len(raw) - 1]:  # in the magic, in the dimensions, in the data
            check_idx(files, raw[:cut], magic, None)
        for _, flipped in every_flip(raw[:header]):
            check_idx(files, flipped + raw[header:], magic, idx_oracle(flipped + raw[header:], magic))
        check_idx(files, raw + b"\x00", magic, None)  # trailing data


@fuzz(200)
@given(data=st.data())
def test_idx_pair_on_bit_flips_of_real_files(files: Files, real_idx: tuple[bytes, bytes], data: st.DataObject):
    images, labels = real_idx
    bits = data.draw(st.lists(st.integers(0, 8 * (len(images) + len(labels)) - 1), min_size=1, max_size=2))
    both = images + labels
    for bit in bits:
        both = flip(both, bit)
    images, labels = both[: len(images)], both[len(images) :]
    x, y = idx_oracle(images, IMAGES_MAGIC), idx_oracle(labels, LABELS_MAGIC)
    if x is not None and (x.shape[1:] != (28, 28) or y is None or len(x) != len(y) or (len(y) and y.max() > 9)):
        x = None
    got = outcome(lambda: read_idx_pair(files.write(images), files.write(labels)), DataError)
    if x is None:
        assert isinstance(got, DataError), f"read a pair where the oracle refuses (bits {bits})"
        return
    assert isinstance(got, tuple), f"refused ({got}) where the oracle reads (bits {bits})"
    got_x, got_y = got
    assert got_x.dtype == np.float32 and got_y.dtype == np.int64
    np.testing.assert_array_equal(got_x, (x.reshape(len(x), 784) / np.float32(255)).astype(np.float32))
    np.testing.assert_array_equal(got_y, y.astype(np.int64))


def check_gzip_flip(files: Files, raw: bytes, magic: int, bit: int) -> None:
    """A flip in a gzip stream is caught (magic, flags, deflate data, CRC, length) or changes nothing (mtime, OS byte, unused bits)."""
    got = outcome(lambda: read_idx(files.write(flip(gzip.compress(raw, mtime=0), bit)), magic), DataError)
    if not isinstance(got, DataError):
        assert np.array_equal(got, idx_oracle(raw, magic)), f"bit {bit} changed the data unnoticed"


@fuzz(150)
@given(data=st.data())
def test_gzipped_idx_bit_flip_is_refused_or_harmless(files: Files, real_idx: tuple[bytes, bytes], data: st.DataObject):
    images = real_idx[0]
    check_gzip_flip(files, images, IMAGES_MAGIC, data.draw(st.integers(0, 8 * len(gzip.compress(images, mtime=0)) - 1)))


def test_gzipped_idx_every_bit_flip_of_a_small_file(files: Files, real_idx: tuple[bytes, bytes]):
    for bit in range(8 * len(gzip.compress(real_idx[1], mtime=0))):
        check_gzip_flip(files, real_idx[1], LABELS_MAGIC, bit)


def test_gzipped_idx_every_truncation_is_refused(files: Files, real_idx: tuple[bytes, bytes]):
    packed = gzip.compress(real_idx[1], mtime=0)
    for cut in range(len(packed)):
        check_idx(files, packed[:cut], LABELS_MAGIC, None)


# ---------------------------------------------------------------- names folders
UTF8_BOM = b"\xef\xbb\xbf"


def names_oracle(raw: bytes) -> list[str] | None:
    """The names a class file holds, or None if it is no class file.

    Lines end in LF, CRLF or CR; blank lines are skipped; a line must keep a
    letter after fold() (shared/names.py's, checked against an independent
    fold in tests/test_names.py); names are kept once, in file order.
    """
    try:
        text = raw.removeprefix(UTF8_BOM).decode("utf-8")
    except UnicodeDecodeError:
        return None
    names: dict[str, None] = {}
    for line in re.split(r"\r\n|\r|\n", text):
        if not line.strip():
            continue
        name = fold(line)
        if not any(c in string.ascii_letters for c in name):
            return None
        names.setdefault(name)
    return list(names) or None


def read_class_file(files: Files, raw: bytes) -> dict[str, list[str]] | DataError:
    folder = files.folder()
    (folder / "English.txt").write_bytes(b"Smith\nJones\n")
    (folder / "German.txt").write_bytes(raw)
    return outcome(lambda: read_names_dir(folder), DataError)


def check_class_file(files: Files, raw: bytes) -> None:
    expected, got = names_oracle(raw), read_class_file(files, raw)
    if expected is None:
        assert isinstance(got, DataError), f"read {got!r} where the oracle refuses"
    else:
        assert got == {"English": ["Smith", "Jones"], "German": expected}, got


@pytest.fixture(scope="module")
def real_names() -> bytes:
    """The first 60 lines of the classic German.txt (umlauts included), CRLF line endings."""
    lines = (NAMES_DIR / "German.txt").read_bytes().split(b"\n")[:60]
    assert any(b"\xc3" in line for line in lines)  # a two-byte UTF-8 letter to flip inside
    return b"\r\n".join(lines) + b"\r\n"


name_text = st.lists(
    st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12), max_size=6
).flatmap(lambda lines: st.sampled_from(["\n", "\r\n", "\r"]).map(lambda end: end.join(lines).encode()))


@fuzz(200)
@given(raw=st.one_of(st.binary(max_size=48), name_text, name_text.map(lambda raw: UTF8_BOM + raw)))
def test_names_reader_on_arbitrary_bytes(files: Files, raw: bytes):
    check_class_file(files, raw)


@fuzz(200)
@given(data=st.data())
def test_names_reader_on_bit_flips_and_truncations_of_a_real_file(files: Files, real_names: bytes, data: st.DataObject):
    raw = flip(real_names, data.draw(st.integers(0, 8 * len(real_names) - 1)))
    check_class_file(files, raw[: data.draw(st.one_of(st.just(len(raw)), st.integers(0, len(raw))))])


def test_names_reader_on_every_truncation_of_a_real_file(files: Files, real_names: bytes):
    for cut in range(len(real_names) + 1):  # mid-line, mid-letter (a UTF-8 sequence cut in two), between CR and LF
        check_class_file(files, real_names[:cut])


file_names = st.text(
    st.one_of(st.sampled_from("EGReadmtx.-_ \n"), st.characters(codec="utf-8", exclude_characters="/\x00")), min_size=1, max_size=12
).filter(lambda name: name not in (".", "..") and len(name.encode("utf-8", "surrogatepass")) <= 255)
file_names = st.one_of(file_names, file_names.map(lambda stem: stem + ".txt"), st.sampled_from(["English.txt", "Greek.txt", "README.txt"]))


def is_class_file(name: str) -> bool:
    """Language.txt: a capitalised word of ASCII letters (at least two), then .txt."""
    stem = name.removesuffix(".txt")
    return name.endswith(".txt") and stem.isascii() and stem.isalpha() and len(stem) >= 2 and stem[0].isupper() and stem[1:].islower()


@fuzz(150)
@given(names=st.lists(file_names, max_size=8, unique=True))
def test_names_folder_reads_exactly_its_class_files(files: Files, names: list[str], capsys: pytest.CaptureFixture[str]):
    folder = files.folder()
    for i, name in enumerate(names):
        (folder / name).write_bytes(f"Name{'abcdefgh'[i]}\n".encode())
    capsys.readouterr()
    got = outcome(lambda: read_names_dir(folder), DataError)
    classes = {name[:-4]: [f"Name{'abcdefgh'[i]}"] for i, name in enumerate(names) if is_class_file(name)}
    ignored = [name for name in names if not is_class_file(name) and not name.startswith(".")]
    warning = capsys.readouterr().err
    if len(classes) < 2:
        assert isinstance(got, DataError)
        assert warning == ""
        return
    assert got == dict(sorted(classes.items()))
    assert (warning.count("\n"), warning.startswith("warning: ")) == ((1, True) if ignored else (0, False)), warning
    assert f"ignored {len(ignored)} file" in warning or not ignored
    for name in sorted(ignored)[:5]:  # the first five by name are named, on the one line
        assert (name if name.isprintable() else ascii(name)) in warning


# ---------------------------------------------------------------- weight files
DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
          "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?"}  # fmt: skip


def no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("duplicate key")
    return dict(pairs)


def is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**64


def begin(info: object) -> float:
    """Where a header entry's data starts, to order the entries; -1 for an entry that has no such number."""
    offsets = info.get("data_offsets") if isinstance(info, dict) else None
    return offsets[0] if isinstance(offsets, list) and offsets and is_count(offsets[0]) else -1


def safetensors_oracle(raw: bytes) -> dict[str, np.ndarray] | None:
    """The tensors of a safetensors file, from the format's description, or None if the bytes are not one.

    8 bytes little-endian header length N, N bytes of a JSON object (optional
    "__metadata__" of strings; each other key {dtype, shape, data_offsets}),
    then the data: every tensor's [begin, end) within it, back to back from 0
    to its end, end - begin = its element count x item size.
    """
    if len(raw) < 8:
        return None
    n = int.from_bytes(raw[:8], "little")
    if n > len(raw) - 8 or n == 0:
        return None
    try:
        header = json.loads(raw[8 : 8 + n].decode("utf-8"), object_pairs_hook=no_duplicate_keys, parse_constant=float)
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(header, dict):
        return None
    metadata = header.pop("__metadata__", None)  # optional: absent or null
    if metadata is not None and not (isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())):
        return None
    data, arrays, end = raw[8 + n :], {}, 0
    for key, info in sorted(header.items(), key=lambda item: begin(item[1])):
        if not isinstance(info, dict) or not isinstance(info.get("dtype"), str) or info["dtype"] not in DTYPES:
            return None
        shape, offsets = info.get("shape"), info.get("data_offsets")
        if not (isinstance(shape, list) and all(map(is_count, shape)) and isinstance(offsets, list) and len(offsets) == 2):
            return None
        if not all(map(is_count, offsets)) or offsets[0] != end:
            return None
        dtype = np.dtype(DTYPES[info["dtype"]])
        if offsets[1] - offsets[0] != math.prod(shape) * dtype.itemsize or offsets[1] > len(data):
            return None
        if math.prod(d for d in shape if d) * dtype.itemsize >= 2**63:  # numpy holds no array of that shape
            return None
        arrays[key] = np.frombuffer(data[offsets[0] : offsets[1]], dtype=dtype).reshape(shape)
        end = offsets[1]
    return arrays if end == len(data) else None


@pytest.fixture(scope="module")
def real_weights(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, dict[str, np.ndarray], range]:
    """A small file save_weights wrote (a layer, its bias, BatchNorm's counter), its tensors and its data bytes."""
    rng = np.random.default_rng(0)
    state = {
        "fc.weight": rng.standard_normal((3, 4)).astype(np.float32),
        "fc.bias": rng.standard_normal(3).astype(np.float32),
        "bn.num_batches_tracked": np.array(7, dtype=np.int64),
    }
    path = tmp_path_factory.mktemp("weights") / "weights.safetensors"
    save_weights(path, state, metadata={"arch": "mlp"})
    raw = path.read_bytes()
    data_start = 8 + int.from_bytes(raw[:8], "little")
    assert same_arrays(safetensors_oracle(raw), state)  # the oracle reads what safetensors writes
    return raw, state, range(data_start, len(raw))


def check_weights(files: Files, raw: bytes, must_read: bool = False) -> None:
    """load_weights on `raw`: the oracle's tensors, or a WeightsError; `must_read`: the bytes are a valid file."""
    expected = safetensors_oracle(raw)
    got = outcome(lambda: load_weights(files.write(raw, "w.safetensors")))
    if currently_in_test_context():  # a hypothesis example, not one of the exhaustive loops
        event("refused" if isinstance(got, UserError) else "read")
    if isinstance(got, UserError):
        assert not must_read, f"refused a valid file: {got}"
        return
    assert expected is not None, f"read {sorted(got)} where the oracle refuses"
    assert same_arrays({k: np.asarray(v) for k, v in got.items()}, expected)


def test_weights_unchanged_bytes_read_back(files: Files, real_weights):
    raw, state, _ = real_weights
    got = load_weights(files.write(raw, "w.safetensors"))
    assert same_arrays(got, state)


def test_weights_every_truncation_is_refused(files: Files, real_weights):
    raw = real_weights[0]
    for cut in range(len(raw)):  # in the length field, in the header, at its end, in the data
        got = outcome(lambda cut=cut: load_weights(files.write(raw[:cut], "w.safetensors")))
        assert isinstance(got, UserError), f"read a file truncated to {cut} of {len(raw)} bytes"
    assert isinstance(outcome(lambda: load_weights(files.write(raw + b"\0" * 8, "w.safetensors"))), UserError)


def test_weights_every_single_bit_flip(files: Files, real_weights):
    """All 8 x len(file) flips: in the header, the oracle's decode or an error; in the data, the flipped numbers."""
    raw, _, data = real_weights
    for bit, flipped in every_flip(raw):
        check_weights(files, flipped, must_read=bit // 8 in data)


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-3, 2**64 + 3), st.floats(), st.text(max_size=6)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)),
    max_leaves=8,
)
dtype_names = st.sampled_from(["F32", "I32", "U32", "F64", "I64", "U64", "F16", "BF16", "C64", "BOOL", "U8", "F8_E4M3", "F4", "X"])
sizes = st.one_of(st.integers(0, 13), st.sampled_from([2**31, 2**32 - 1, 2**62, 2**63, 2**64 - 1, 2**64]))


@st.composite
def edited_headers(draw: st.DrawFn, header: dict) -> bytes:
    """The real header with one or two edits: another dtype, shape or offsets, a key renamed, removed or added, other metadata."""
    header = json.loads(json.dumps(header))  # a copy
    for _ in range(draw(st.integers(1, 2))):
        if not header:  # the first edit removed the only entry
            break
        key = draw(st.sampled_from(sorted(header)))
        edit = draw(st.sampled_from(["dtype", "shape", "data_offsets", "rename", "remove", "add", "metadata"]))
        if edit in ("dtype", "shape", "data_offsets") and key != "__metadata__" and isinstance(header[key], dict):
            value = {"dtype": dtype_names, "shape": st.lists(sizes, max_size=4), "data_offsets": st.lists(sizes, min_size=2, max_size=2)}[edit]
            header[key][edit] = draw(st.one_of(value, json_values))
        elif edit == "rename":
            header[draw(st.sampled_from(["fc.weight", "fc.bias", "x", "", "__metadata__"]))] = header.pop(key)
        elif edit == "remove":
            header.pop(key)
        elif edit == "add":  # an empty tensor of any shape at the end, or anything at all
            offsets = [v.get("data_offsets") for v in header.values() if isinstance(v, dict)]  # a first edit may have made them anything
            end = max((o[1] for o in offsets if isinstance(o, list) and len(o) == 2 and isinstance(o[1], int)), default=0)
            info = {"dtype": draw(dtype_names), "shape": draw(st.lists(sizes, max_size=4)), "data_offsets": [end, end]}
            header[draw(st.text(max_size=3))] = draw(st.one_of(st.just(info), json_values))
        else:
            header["__metadata__"] = draw(st.one_of(st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=2), json_values))
    text = json.dumps(header, separators=(",", ":")).encode()
    return text + b" " * draw(st.sampled_from([0, -len(text) % 8]))  # safetensors pads to 8 bytes


@fuzz(200)
@given(data=st.data())
def test_weights_header_corruption(files: Files, real_weights, data: st.DataObject):
    raw, _, region = real_weights
    body = raw[region.start :]
    real_header = json.loads(raw[8 : region.start])
    edited = edited_headers(real_header)
    header = data.draw(st.one_of(edited, edited, json_values.map(json.dumps).map(str.encode), st.binary(max_size=40)))
    length = data.draw(st.one_of(st.just(len(header)), st.just(len(header)), st.integers(0, 2**64 - 1), st.integers(0, len(header) + 8)))
    check_weights(files, length.to_bytes(8, "little") + header + body)


ALL_DTYPES = ["F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U64", "U32", "U16", "U8", "BOOL", "C64",
              "F8_E4M3", "F8_E5M2", "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4", "I4", "Q8", "f32", ""]  # fmt: skip
SHAPES = [[], [0], [1], [2], [3], [4], [6], [12], [3, 4], [4, 3], [2, 6], [12, 1, 1], [0, 2**32 - 1, 2**32 - 1], [0, 2**63], [2**64 - 1]]


def header_bytes(header: dict) -> bytes:
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text


def test_weights_reinterpreted_headers(files: Files, real_weights):
    """Every dtype name and a grid of shapes for each tensor, offsets unchanged; and an empty tensor of each added at the end."""
    raw, _, region = real_weights
    body, header = raw[region.start :], json.loads(raw[8 : region.start])
    for key in [k for k in header if k != "__metadata__"]:
        for dtype, shape in itertools.product(ALL_DTYPES, SHAPES):
            edited = json.loads(json.dumps(header))
            edited[key].update(dtype=dtype, shape=shape)
            check_weights(files, header_bytes(edited) + body)
    for dtype, shape in itertools.product(ALL_DTYPES, SHAPES):
        edited = {**header, "empty": {"dtype": dtype, "shape": shape, "data_offsets": [len(body), len(body)]}}
        check_weights(files, header_bytes(edited) + body)


@fuzz(150)
@given(raw=st.binary(max_size=80))
def test_weights_arbitrary_bytes(files: Files, raw: bytes):
    check_weights(files, raw)
