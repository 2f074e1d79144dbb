"""shared/names.py: folding, the classic names folder, the Faker default, the split, one-hot encoding, bad input."""
from __future__ import annotations

import unicodedata
from collections import Counter
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest

from shared.data import DataError
from shared.errors import UserError
from shared.names import (
    ALPHABET,
    CLASS_FILE,
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
from shared.tasks import RnnTask

CLASSIC_CLASSES = [
    "Arabic", "Chinese", "Czech", "Dutch", "English", "French", "German", "Greek", "Irish",
    "Italian", "Japanese", "Korean", "Polish", "Portuguese", "Russian", "Scottish", "Spanish", "Vietnamese",
]  # fmt: skip
EMBEDDED_CLASSES = [c for c in CLASSIC_CLASSES if c != "Scottish"]  # Faker has no Scottish locale
CLASSIC_TOTAL = 18_643  # distinct names after folding, measured once; the per-class counts are recomputed below
TUTORIAL_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ .,;'"  # written out, not imported
# The embedded counts of the module docstring and docs/data.md, measured with each of these faker releases
# (the same names in all three). Another release is checked only for what holds whatever its lists.
MEASURED_FAKER = {"40.40.0", "40.54.0", "40.63.0"}
EMBEDDED_COUNTS = {
    "Arabic": 296, "Chinese": 91, "Czech": 200, "Dutch": 1071, "English": 1118, "French": 400,
    "German": 403, "Greek": 1435, "Irish": 2304, "Italian": 1163, "Japanese": 49, "Korean": 44,
    "Polish": 3866, "Portuguese": 96, "Russian": 500, "Spanish": 1034, "Vietnamese": 10,
}  # fmt: skip


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


def test_classic_file_names_are_class_files(names_dir: Path, capsys: pytest.CaptureFixture[str]):
    files = sorted(p.name for p in names_dir.iterdir())
    assert files == [f"{language}.txt" for language in CLASSIC_CLASSES]
    assert all(CLASS_FILE.fullmatch(name) for name in files)
    read_names_dir(names_dir)
    assert capsys.readouterr().err == ""  # no file ignored, no warning


# ---------------------------------------------------------------- line endings
LINES = ["Smith", "O'Neal", "", "Jones", "Smith"]  # a blank line and a duplicate, as real files have


def folder_with_line_ending(folder: Path, ending: bytes) -> Path:
    folder.mkdir()
    write(folder, "English.txt", ending.join(line.encode() for line in LINES) + ending)
    write(folder, "German.txt", ending.join("M\u00fcller Schmidt Wei\u00df".encode().split(b" ")))  # no final newline
    return folder


def test_lf_crlf_and_cr_line_endings_read_alike(tmp_path: Path):
    endings = {"lf": b"\n", "crlf": b"\r\n", "cr": b"\r"}
    folders = {label: folder_with_line_ending(tmp_path / label, ending) for label, ending in endings.items()}
    expected = {"English": ["Smith", "O'Neal", "Jones"], "German": ["Muller", "Schmidt", "Weiss"]}
    for label, folder in folders.items():
        assert read_names_dir(folder) == expected, label  # a CR-only file was one name "SmithO'NealJonesSmith" before
    lf = load_names(folders["lf"])
    for label in ("crlf", "cr"):
        other = load_names(folders[label])
        assert (other.train_names, other.test_names, other.classes) == (lf.train_names, lf.test_names, lf.classes), label
        np.testing.assert_array_equal(other.train_y, lf.train_y)
        np.testing.assert_array_equal(other.test_y, lf.test_y)


def test_mixed_line_endings_in_one_file(tmp_path: Path):
    folder = two_good_classes(tmp_path)
    write(folder, "French.txt", b"Dupont\rMartin\r\nBernard\nPetit\r\r\nDurand")
    assert read_names_dir(folder)["French"] == ["Dupont", "Martin", "Bernard", "Petit", "Durand"]


def test_cr_only_file_error_names_the_editors_line(tmp_path: Path):
    bad = write(two_good_classes(tmp_path), "Polish.txt", b"Nowak\rKowalski\r\rZi\xb3ko\r")
    message = data_error(tmp_path)
    assert str(bad) in message and "line 4" in message and "0xb3" in message  # Latin-2 ł, line 4 in an editor


# ---------------------------------------------------------------- which files are classes
def test_files_that_are_not_class_files_are_ignored_with_one_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    folder = two_good_classes(tmp_path)
    for name in ("README.txt", "notes.md", "english.txt", "Old-Norse.txt", "Irish.txt.bak"):
        write(folder, name, b"Not a name list\n")
    write(folder, ".DS_Store", b"\x00\x01binary")  # hidden: macOS's, silently skipped
    write(folder, "._English.txt", b"\x00\x05\x16\x07\xff")  # AppleDouble file from a Mac zip, not UTF-8
    (folder / "Extra").mkdir()
    write(folder / "Extra", "French.txt", b"Dupont\n")  # subfolders are not read
    assert read_names_dir(folder) == {"English": ["Smith", "Jones"], "German": ["Muller", "Schmidt"]}
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"warning: {folder}: ignored 5 files")
    assert lines[0].endswith(": Irish.txt.bak, Old-Norse.txt, README.txt, english.txt, notes.md")
    assert "DS_Store" not in lines[0] and "._English" not in lines[0]


def test_warning_names_five_ignored_files_and_counts_the_rest(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    folder = two_good_classes(tmp_path)
    for i in range(7):
        write(folder, f"part{i}.txt", b"x\n")
    read_names_dir(folder)
    (line,) = capsys.readouterr().err.splitlines()
    assert "ignored 7 files" in line and line.endswith(": part0.txt, part1.txt, part2.txt, part3.txt, part4.txt and 2 more")


def test_readme_beside_one_class_is_not_a_second_class(tmp_path: Path):
    write(tmp_path, "English.txt", b"Smith\nJones\n")
    write(tmp_path, "README.txt", b"Surnames by language\n")  # made a class "README" before
    message = data_error(tmp_path)
    assert "only one class file (English.txt)" in message


def test_folder_of_only_other_files(tmp_path: Path):
    write(tmp_path, "readme.txt", b"x\n")
    write(tmp_path, "names.csv", b"Smith,English\n")
    message = data_error(tmp_path)
    assert f"{tmp_path}: no class files (found only names.csv, readme.txt)" in message
    assert "expected one Language.txt file per class" in message


@pytest.mark.parametrize(
    ("name", "is_class"),
    [("English.txt", True), ("Vietnamese.txt", True), ("README.txt", False), ("english.txt", False),
     ("ENGLISH.txt", False), ("Old-Norse.txt", False), ("Greek2.txt", False), ("E.txt", False),
     ("English.TXT", False), ("English.txt.gz", False), ("Español.txt", False)],
)  # fmt: skip
def test_class_file_rule(name: str, is_class: bool):
    assert bool(CLASS_FILE.fullmatch(name)) is is_class


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


def test_load_names_embedded_records_the_faker_version():
    data = load_names()
    assert data.classes == EMBEDDED_CLASSES
    check_split(data, embedded_names())
    installed = version("faker")  # from the package's metadata, not from shared/names.py
    assert f"faker {installed}" in data.source
    assert RnnTask.load().source == data.source  # what the trainer writes as the run's config "data"


def test_embedded_counts_are_the_documented_ones():
    if version("faker") not in MEASURED_FAKER:
        pytest.skip(f"faker {version('faker')} is not one the counts were measured with {sorted(MEASURED_FAKER)}: re-measure")
    by_class = embedded_names()
    assert {language: len(names) for language, names in by_class.items()} == EMBEDDED_COUNTS
    data = load_names()
    assert (len(data.train_names), len(data.test_names)) == (11_263, 2_817)
    assert sum(EMBEDDED_COUNTS.values()) == 14_080
    assert data.source.endswith("17 classes, 14080 names")


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
    message = data_error(tmp_path)
    assert f"{tmp_path}: no class files, expected one Language.txt file per class" in message
    write(tmp_path, "README.md", b"no names here\n")
    message = data_error(tmp_path)
    assert "no class files (found only README.md)" in message and "expected one Language.txt file per class" in message


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
