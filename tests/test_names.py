"""shared/names.py: folding, the classic names folder, the Faker default, the split, one-hot encoding, bad input."""
from __future__ import annotations

import unicodedata
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from shared.data import DataError
from shared.errors import UserError
from shared.names import (
    ALPHABET,
    N_LETTERS,
    SPLIT_SEED,
    TRAIN_FRACTION,
    Names,
    embedded_names,
    encode_letters,
    fold,
    load_names,
    one_hot_batch,
    one_hot_name,
    read_names_dir,
    split_names,
)
from tests.conftest import SHARED_DATA

CLASSIC_CLASSES = [
    "Arabic", "Chinese", "Czech", "Dutch", "English", "French", "German", "Greek", "Irish",
    "Italian", "Japanese", "Korean", "Polish", "Portuguese", "Russian", "Scottish", "Spanish", "Vietnamese",
]  # fmt: skip
EMBEDDED_CLASSES = [c for c in CLASSIC_CLASSES if c != "Scottish"]  # Faker has no Scottish locale
CLASSIC_TOTAL = 18_643  # distinct names after folding, measured once; the per-class counts are recomputed below
TUTORIAL_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ .,;'"  # written out, not imported


@pytest.fixture(scope="module")
def names_dir() -> Path:
    """The classic names files beside the project (../shared/data/names); fails, never skips, if missing."""
    path = SHARED_DATA / "names"
    if not (path / "Russian.txt").is_file():
        pytest.fail(f"{path}: the classic names files are missing (they come with ../shared/data)")
    return path


@pytest.fixture(scope="module")
def classic(names_dir: Path) -> dict[str, list[str]]:
    return read_names_dir(names_dir)


def oracle_fold(name: str) -> str:
    """An independent fold (NFKD drops accents; ß and ł have no decomposition) for the Latin-script classic data."""
    decomposed = unicodedata.normalize("NFKD", name).replace("ß", "ss").replace("ł", "l").replace("Ł", "L")
    return "".join(c for c in decomposed if c in TUTORIAL_ALPHABET).strip()


def only_alphabet(name: str) -> bool:
    return all(c in TUTORIAL_ALPHABET for c in name)


def write(folder: Path, name: str, raw: bytes) -> Path:
    path = folder / name
    path.write_bytes(raw)
    return path


def two_good_classes(folder: Path) -> Path:
    """A valid folder to which a test adds one bad class file (one class alone is an error of its own)."""
    folder.mkdir(parents=True, exist_ok=True)
    write(folder, "English.txt", b"Smith\nJones\n")
    write(folder, "German.txt", b"M\xc3\xbcller\nSchmidt\n")
    return folder


def data_error(folder: Path) -> str:
    with pytest.raises(DataError) as info:
        read_names_dir(folder)
    message = str(info.value)
    assert "\n" not in message, message
    assert isinstance(info.value, UserError)
    return message


# ---------------------------------------------------------------- alphabet and folding
def test_alphabet_is_the_tutorials_57_letters():
    assert len(ALPHABET) == N_LETTERS == 57
    assert len(set(ALPHABET)) == 57
    assert ALPHABET == TUTORIAL_ALPHABET


@pytest.mark.parametrize(
    ("raw", "folded"),
    [
        ("Müller", "Muller"),
        ("Al-Abharī", "AlAbhari"),  # the hyphen is not in the alphabet
        ("O'Neal", "O'Neal"),  # the apostrophe is
        ("Żuławski", "Zulawski"),
        ("Шевченко", "Shevchenko"),
        ("Αβραμίδης", "Abramides"),
        ("Groß", "Gross"),
        ("Rafaj1", "Rafaj"),
        ("  Smith \t", "Smith"),
        ("Saʽid", "Said"),
        ("To The First\xa0 Page", "To The First  Page"),  # inner spaces stay
        ("...", "..."),  # folds fine, but is no name: read_names_dir refuses it
        ("-", ""),
    ],
)
def test_fold(raw: str, folded: str):
    assert fold(raw) == folded


# ---------------------------------------------------------------- the classic folder
def test_classic_folder_classes_and_counts(names_dir: Path, classic: dict[str, list[str]]):
    assert list(classic) == CLASSIC_CLASSES
    raw_total = 0
    for language, names in classic.items():
        lines = (names_dir / f"{language}.txt").read_text(encoding="utf-8").split("\n")
        distinct_lines = {line.strip() for line in lines if line.strip()}
        raw_total += len(distinct_lines)
        expected = {oracle_fold(line) for line in distinct_lines}
        assert len(names) == len(expected), language
        assert set(names) == expected, language
        assert len(set(names)) == len(names), f"{language}: duplicates left"
        assert all(only_alphabet(n) and n == n.strip() and n for n in names), language
    assert sum(map(len, classic.values())) == CLASSIC_TOTAL
    assert raw_total == 18_670  # distinct stripped lines: folding merges 27 more (Krüger/Kruger, Urbanek1/Urbanek, ...)


def test_classic_folder_keeps_file_order_and_first_occurrence(names_dir: Path, classic: dict[str, list[str]]):
    for language, names in classic.items():
        lines = (names_dir / f"{language}.txt").read_text(encoding="utf-8").split("\n")
        first_seen = list(dict.fromkeys(oracle_fold(line) for line in lines if line.strip()))
        assert names == first_seen, language
    german = classic["German"]
    assert "Muller" in german and "Müller" not in german
    assert german.count("Kruger") == 1  # "Krüger" twice and "Kruger" in the file
    assert "AlAbhari" in classic["Arabic"]


# ---------------------------------------------------------------- the split
def check_split(data: Names, by_class: dict[str, list[str]]) -> None:
    assert data.classes == sorted(by_class)
    assert data.train_y.dtype == np.int64 and data.test_y.dtype == np.int64
    assert len(data.train_names) == len(data.train_y) and len(data.test_names) == len(data.test_y)
    for index, language in enumerate(data.classes):
        names = by_class[language]
        train = [n for n, y in zip(data.train_names, data.train_y) if y == index]
        test = [n for n, y in zip(data.test_names, data.test_y) if y == index]
        assert Counter(train) + Counter(test) == Counter(names), language
        assert not set(train) & set(test), language
        n = len(names)
        assert abs(len(test) - (1 - TRAIN_FRACTION) * n) <= 1, (language, len(test), n)
        if n >= 2:
            assert train and test, language
        # each part keeps the input order of its class
        position = {name: i for i, name in enumerate(names)}
        assert [position[x] for x in train] == sorted(position[x] for x in train)
        assert [position[x] for x in test] == sorted(position[x] for x in test)


def test_classic_split_is_stratified_and_deterministic(classic: dict[str, list[str]]):
    data = split_names(classic, "classic")
    check_split(data, classic)
    assert len(data.train_names) + len(data.test_names) == CLASSIC_TOTAL
    again = split_names(classic, "classic")
    assert data.train_names == again.train_names and data.test_names == again.test_names
    np.testing.assert_array_equal(data.train_y, again.train_y)
    np.testing.assert_array_equal(data.test_y, again.test_y)
    other = split_names(classic, "classic", seed=SPLIT_SEED + 1)
    assert other.test_names != data.test_names  # the seed does pick the split
    check_split(other, classic)
    assert data.max_length == max(len(n) for names in classic.values() for n in names)


def test_split_of_tiny_classes():
    by_class = {"B": ["x"], "A": ["p", "q"], "C": ["a", "b", "c"], "D": [f"n{i}" for i in range(5)]}
    data = split_names(by_class, "tiny")
    check_split(data, by_class)
    train_sizes = np.bincount(data.train_y, minlength=4)
    test_sizes = np.bincount(data.test_y, minlength=4)
    assert data.classes == ["A", "B", "C", "D"]
    assert train_sizes.tolist() == [1, 1, 2, 4]  # round(1.6) = 2 would leave A no test name
    assert test_sizes.tolist() == [1, 0, 1, 1]


def test_load_names_from_folder(names_dir: Path):
    data = load_names(names_dir)
    assert data.classes == CLASSIC_CLASSES
    assert str(names_dir) in data.source
    assert len(data.train_names) == 14_915 and len(data.test_names) == 3_728


# ---------------------------------------------------------------- the embedded default
def test_embedded_default():
    by_class = embedded_names()
    assert list(by_class) == EMBEDDED_CLASSES
    total = 0
    for language, names in by_class.items():
        assert names, language
        assert len(set(names)) == len(names), language
        assert all(only_alphabet(n) and fold(n) == n and any(c.isalpha() for c in n) for n in names), language
        total += len(names)
    assert total >= 500
    korean = by_class["Korean"]
    assert "Gim" in korean and all(n[0].isupper() for n in korean)
    assert {"Smirnov", "Ivanov"} <= set(by_class["Russian"])  # transliterated Cyrillic
    assert "Nguyen" in by_class["Vietnamese"]
    assert "Muller" in by_class["German"] or "Mueller" in by_class["German"]
    assert all(n[0].isupper() for n in by_class["Arabic"] if n[0] != "'")


def test_embedded_default_is_cached_but_not_shared():
    first = embedded_names()
    first["Korean"].append("Mutated")
    first["Extra"] = ["X"]
    second = embedded_names()
    assert "Mutated" not in second["Korean"] and "Extra" not in second


def test_load_names_embedded():
    data = load_names()
    assert data.classes == EMBEDDED_CLASSES
    check_split(data, embedded_names())
    assert "faker" in data.source.lower()


# ---------------------------------------------------------------- one-hot encoding
def test_encode_letters():
    letters = encode_letters("aZ ';")
    assert letters.dtype == np.int64
    assert letters.tolist() == [0, 51, 52, 56, 55]
    assert encode_letters("").shape == (0,)
    with pytest.raises(UserError, match="'ü'"):
        encode_letters("Müller")


def test_one_hot_batch_and_name():
    names = ["Ab", "O'Neal", "x"]
    batch, lengths = one_hot_batch(names, 8)
    assert batch.shape == (3, 8, N_LETTERS) and batch.dtype == np.float32
    assert lengths.dtype == np.int64 and lengths.tolist() == [2, 6, 1]
    for row, name in enumerate(names):
        sums = batch[row].sum(axis=1)
        np.testing.assert_array_equal(sums[: len(name)], 1.0)
        np.testing.assert_array_equal(sums[len(name) :], 0.0)
        assert "".join(ALPHABET[i] for i in batch[row, : len(name)].argmax(axis=1)) == name
        np.testing.assert_array_equal(one_hot_name(name), batch[row, : len(name)])
    assert one_hot_name("Ab").shape == (2, N_LETTERS) and one_hot_name("Ab").dtype == np.float32
    exact, _ = one_hot_batch(["Abc"], 3)
    assert exact.shape == (1, 3, N_LETTERS)
    with pytest.raises(UserError, match="longer than the batch length 5"):
        one_hot_batch(["Abcdef"], 5)
    with pytest.raises(UserError, match="empty"):
        one_hot_batch(["Ab", ""], 5)


# ---------------------------------------------------------------- bad input
def test_missing_folder(tmp_path: Path):
    missing = tmp_path / "nowhere"
    message = data_error(missing)
    assert str(missing) in message and "does not exist" in message


def test_file_instead_of_folder(tmp_path: Path):
    path = write(tmp_path, "names.txt", b"Smith\n")
    message = data_error(path)
    assert str(path) in message and "expected a folder" in message


def test_empty_folder(tmp_path: Path):
    write(tmp_path, "README.md", b"no names here\n")
    message = data_error(tmp_path)
    assert str(tmp_path) in message and "expected one Language.txt file per class" in message


def test_one_class_only(tmp_path: Path):
    write(tmp_path, "English.txt", b"Smith\n")
    message = data_error(tmp_path)
    assert "English.txt" in message and "at least 2" in message


@pytest.mark.parametrize("raw", [b"", b"\n  \n\t\n"], ids=["empty", "blank-lines"])
def test_class_file_without_names(tmp_path: Path, raw: bytes):
    bad = write(two_good_classes(tmp_path), "Scottish.txt", raw)
    message = data_error(tmp_path)
    assert str(bad) in message and "no names" in message


def test_bytes_that_are_not_utf8(tmp_path: Path):
    bad = write(two_good_classes(tmp_path), "Polish.txt", "Żuraw\nNowak\n".encode() + b"\xff\xfe\x00abc\n")
    message = data_error(tmp_path)
    assert str(bad) in message and "line 3" in message and "UTF-8" in message


def test_name_with_no_letter_after_folding(tmp_path: Path):
    bad = write(two_good_classes(tmp_path), "Irish.txt", b"O'Neal\n\n...\n")
    message = data_error(tmp_path)
    assert str(bad) in message and "line 3" in message and "'...'" in message


def test_name_of_only_dropped_characters(tmp_path: Path):
    bad = write(two_good_classes(tmp_path), "Czech.txt", "Novak\n–\n".encode())
    message = data_error(tmp_path)
    assert str(bad) in message and "line 2" in message and repr("–") in message


def test_good_tmp_folder_with_bom_crlf_and_duplicates(tmp_path: Path):
    folder = two_good_classes(tmp_path)
    write(folder, "French.txt", b"\xef\xbb\xbfB\xc3\xa9langer\r\nBelanger\r\n\r\nDupont\r\n")
    write(folder, "notes.csv", b"ignored")
    by_class = read_names_dir(folder)
    assert by_class == {"English": ["Smith", "Jones"], "French": ["Belanger", "Dupont"], "German": ["Muller", "Schmidt"]}


def test_same_name_in_two_classes_is_allowed(tmp_path: Path):
    write(tmp_path, "English.txt", b"Abel\nSmith\n")
    write(tmp_path, "French.txt", b"Abel\nDupont\n")
    assert read_names_dir(tmp_path) == {"English": ["Abel", "Smith"], "French": ["Abel", "Dupont"]}


def test_split_refuses_a_single_class():
    with pytest.raises(DataError, match="somewhere: 1 class"):
        split_names({"English": ["Smith", "Jones"]}, "somewhere")
