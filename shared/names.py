"""Surnames labelled by language, for the character-level RNN classifier.

Two sources, one result (`Names`: folded names, int64 labels, a fixed split):

- a folder in the classic layout (`--data-dir`): one `Language.txt` per class,
  one name per line, UTF-8; the class is the file stem. A class file is a
  `.txt` file whose stem is a capitalised word of ASCII letters (`[A-Z][a-z]+`,
  as are the 18 classic files: Arabic.txt ... Vietnamese.txt). Other files
  (README.txt, notes.md, english.txt, Old-Norse.txt) are ignored with one
  warning line on stderr that names them; hidden files (.DS_Store, macOS's
  ._English.txt) and subfolders are ignored silently. Lines may end in LF,
  CRLF or CR alone (old Mac files): the three read alike;
- the embedded default, which needs no download: the per-locale surname lists
  that the Faker package ships (`faker.providers.person.<locale>.Provider`),
  transliterated to ASCII with `faker.decode.unidecode`. `EMBEDDED_SOURCES`
  below is the class list. The classes carry the names of the classic data's
  files, so the two are labelled alike; Scottish has no Faker locale and is absent (17 classes, not
  18). Arabic comes out of unidecode without vowels (e.g. "'Shj", "Bw lHj"),
  with upper-case letters for the emphatic consonants: it does not look like
  the classic Arabic list, so accuracies on the two sources do not compare
  class for class. The names are faker's, so `Names.source` (and with it each
  run's metrics.json config) records the installed faker version.

Measured after folding and removing duplicates, the same names with faker
40.40.0, 40.54.0 and 40.63.0 (14,080 names; split 11,263 train / 2,817 test,
the largest class 27% of the test split):
Arabic 296, Chinese 91, Czech 200, Dutch 1,071, English 1,118, French 400,
German 403, Greek 1,435, Irish 2,304, Italian 1,163, Japanese 49, Korean 44,
Polish 3,866, Portuguese 96, Russian 500, Spanish 1,034, Vietnamese 10.
A faker release that edits its lists changes these numbers (faker is not
pinned: the counts are the same across the releases measured).
The classic names folder that ships in the repository, tests/data/names, has 18 classes and 18,643 names
(14,915 / 3,728; Russian 9,342 of them, 50% of the test split).

Every name is folded to the 57-letter alphabet of the PyTorch tutorial
(`ALPHABET`): ASCII letters and " .,;'". Models see a name as a sequence of
one-hot rows of width 57, zero-padded to a common length in a batch.
"""
from __future__ import annotations

import importlib
import re
import string
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from shared.data import DataError
from shared.errors import UserError

ALPHABET: str = string.ascii_letters + " .,;'"  # a letter's index is its position here
N_LETTERS = 57
SPLIT_SEED = 0  # the split is the same for every run
TRAIN_FRACTION = 0.8

# class -> the (Faker locale, Provider attribute) lists whose names make it.
# Some attributes are tuples, some weighted dicts (name -> frequency): the keys count.
EMBEDDED_SOURCES: dict[str, tuple[tuple[str, str], ...]] = {
    "Arabic": (("ar_AA", "last_names"),),
    "Chinese": (("zh_CN", "last_romanized_names"),),
    "Czech": (("cs_CZ", "last_names"),),
    "Dutch": (("nl_NL", "last_names"),),
    "English": (("en_GB", "last_names"), ("en_US", "last_names")),
    "French": (("fr_FR", "last_names"),),
    "German": (("de_DE", "last_names"),),
    "Greek": (("el_GR", "last_names"),),
    "Irish": (("en_IE", "last_names"),),
    "Italian": (("it_IT", "last_names"),),
    "Japanese": (("ja_JP", "last_romanized_names"),),
    "Korean": (("ko_KR", "last_names"),),
    "Polish": (("pl_PL", "unisex_last_names"), ("pl_PL", "male_last_names")),
    "Portuguese": (("pt_PT", "last_names"),),
    "Russian": (("ru_RU", "last_names"),),
    "Spanish": (("es_ES", "last_names"),),
    "Vietnamese": (("vi_VN", "last_names"),),
}

_LETTER_INDEX = {letter: i for i, letter in enumerate(ALPHABET)}
_ASCII_LETTERS = frozenset(string.ascii_letters)
_UTF8_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class Names:
    train_names: list[str]
    train_y: np.ndarray  # int64, index into classes
    test_names: list[str]
    test_y: np.ndarray
    classes: list[str]  # sorted language names
    source: str  # human-readable description of where the names came from

    @property
    def max_length(self) -> int:
        """Longest name in train and test: the padded length that fits every batch."""
        return max(map(len, self.train_names + self.test_names), default=0)


# ---------------------------------------------------------------- folding
def fold(name: str) -> str:
    """`name` in the 57-letter alphabet, so every source feeds the model the same letters.

    unidecode first (é -> e, ß -> ss, Cyrillic and Greek transliterated), then
    every character not in ALPHABET is dropped (hyphens, digits, ...), then
    surrounding spaces are stripped.
    """
    return "".join(c for c in _unidecode()(name) if c in _LETTER_INDEX).strip()


def _unidecode() -> Callable[[str], str]:
    """faker's transliteration, imported on first use: ALPHABET and the encoders work without faker."""
    try:
        from faker.decode import unidecode
    except ImportError:
        raise DataError("folding names needs the faker package (faker.decode.unidecode): pip install -e .") from None
    return unidecode


def _has_letter(name: str) -> bool:
    return any(c in _ASCII_LETTERS for c in name)


# ---------------------------------------------------------------- a folder of Language.txt files
CLASS_FILE = re.compile(r"[A-Z][a-z]+\.txt")  # Language.txt, as every file of the classic data is named
_LISTED_IGNORED = 5  # the warning names this many ignored files, then counts the rest


def _read_lines(path: Path) -> list[str]:
    """Lines of a UTF-8 file; a decoding error names the line, which a bare decode does not."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    if raw.startswith(_UTF8_BOM):
        raw = raw[len(_UTF8_BOM) :]
    # CRLF (Windows) and CR alone (old Mac) become LF, so all three read as lines. Safe on the bytes:
    # 0x0d and 0x0a never occur inside a UTF-8 multi-byte sequence.
    raw = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise DataError(
            f"{path}: line {line} is not UTF-8 (byte 0x{raw[e.start]:02x}), expected UTF-8 text, one name per line"
        ) from None
    # split("\n"), not splitlines(): splitlines also breaks at form feeds, U+2028 and the like,
    # so line numbers would no longer match what an editor shows.
    return text.split("\n")


def class_files(data_dir: Path) -> tuple[list[Path], list[Path]]:
    """(class files, other visible files) of a names folder, each sorted; see the module docstring for the rule."""
    try:
        files = sorted(p for p in data_dir.iterdir() if p.is_file() and not p.name.startswith("."))
    except OSError as e:
        raise DataError(f"names folder {data_dir}: cannot list its files ({e.strerror})") from None
    chosen = [p for p in files if CLASS_FILE.fullmatch(p.name)]
    return chosen, [p for p in files if not CLASS_FILE.fullmatch(p.name)]


def _listing(paths: list[Path]) -> str:
    """The first file names, one line whatever they hold (a name may contain a newline or undecodable bytes)."""
    names = ", ".join(p.name if p.name.isprintable() else ascii(p.name) for p in paths[:_LISTED_IGNORED])
    more = len(paths) - _LISTED_IGNORED
    return f"{names} and {more} more" if more > 0 else names


def read_names_dir(data_dir: str | Path) -> dict[str, list[str]]:
    """class -> folded names from the folder's Language.txt files (class = file stem), classes sorted.

    Names keep their file order; blank lines are skipped; a name that folds
    onto one already seen in the same file (duplicate lines, "Krüger" after
    "Kruger") is dropped, so train and test never share a name within a class.
    The same name in two classes is kept: the classic data has such names.
    Files that are not class files are ignored, with one warning line on stderr.
    """
    data_dir = Path(data_dir)
    if not data_dir.exists():
        raise DataError(f"names folder {data_dir} does not exist")
    if not data_dir.is_dir():
        raise DataError(f"names folder {data_dir} is a file, expected a folder with one Language.txt file per class")
    paths, ignored = class_files(data_dir)
    if not paths:
        found = f" (found only {_listing(ignored)})" if ignored else ""
        raise DataError(
            f"{data_dir}: no class files{found}, expected one Language.txt file per class "
            "(a capitalised word of letters, e.g. English.txt; one name per line)"
        )
    if len(paths) < 2:
        raise DataError(
            f"{data_dir}: only one class file ({paths[0].name}), expected at least 2 (one Language.txt file per class)"
        )
    if ignored:
        # A warning, not an error: a README beside the classic files is common and harmless.
        print(
            f"warning: {data_dir}: ignored {len(ignored)} file{'s' if len(ignored) > 1 else ''} that are not "
            f"Language.txt class files (a capitalised word of letters + .txt): {_listing(ignored)}",
            file=sys.stderr,
        )
    by_class: dict[str, list[str]] = {}
    for path in paths:
        names: dict[str, None] = {}  # an ordered set
        for number, line in enumerate(_read_lines(path), start=1):
            original = line.strip()
            if not original:
                continue
            name = fold(original)
            if not _has_letter(name):
                raise DataError(
                    f"{path}: line {number}: {original!r} has no letter A-Z or a-z left after folding "
                    f"to the 57-letter alphabet, expected a name"
                )
            names.setdefault(name)
        if not names:
            raise DataError(f"{path}: no names, expected one name per line (UTF-8)")
        by_class[path.stem] = list(names)
    return by_class


# ---------------------------------------------------------------- the embedded default
def _provider_names(locale: str, attribute: str) -> list[str]:
    module_name = f"faker.providers.person.{locale}"
    try:
        provider = importlib.import_module(module_name).Provider
    except ImportError as e:
        raise DataError(
            f"the embedded names need the faker package ({module_name}: {e}): "
            "run `pip install -e .`, or pass --data-dir"
        ) from None
    entries = getattr(provider, attribute, None)
    if not isinstance(entries, (tuple, list, dict)):  # OrderedDict is a dict
        raise DataError(f"{module_name}.Provider.{attribute}: not a list of surnames in the installed faker")
    return [str(entry) for entry in entries]  # a dict gives its keys


@lru_cache(maxsize=1)
def _embedded_table() -> tuple[tuple[str, tuple[str, ...]], ...]:
    table = []
    for language, sources in sorted(EMBEDDED_SOURCES.items()):
        names: dict[str, None] = {}
        for locale, attribute in sources:
            for original in _provider_names(locale, attribute):
                name = fold(original)
                if not _has_letter(name):
                    continue  # nothing left to learn from; none in faker 40.40-40.63
                if not _has_letter(original):
                    # Scripts without case (Korean, Arabic) transliterate to lower case:
                    # "gim" -> "Gim", "'shj" -> "'Shj", like the Latin-script names.
                    first = next(i for i, c in enumerate(name) if c in _ASCII_LETTERS)
                    name = name[:first] + name[first].upper() + name[first + 1 :]
                names.setdefault(name)
        if not names:
            raise DataError(f"faker locale(s) {sources}: no surnames in the installed faker")
        table.append((language, tuple(names)))
    return tuple(table)


def embedded_names() -> dict[str, list[str]]:
    """class -> folded, deduplicated Faker surnames (see EMBEDDED_SOURCES); no randomness.

    Built once per process; each call returns fresh lists, so a caller that
    edits them does not change what the next caller gets.
    """
    return {language: list(names) for language, names in _embedded_table()}


def _faker_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("faker")
    except PackageNotFoundError:
        return "unknown version"


# ---------------------------------------------------------------- the split
def split_names(by_class: dict[str, list[str]], source: str, seed: int = SPLIT_SEED) -> Names:
    """A deterministic stratified split: each class TRAIN_FRACTION train, the rest test.

    Per class (index i in the sorted class list) a permutation drawn from
    np.random.default_rng([seed, i]) picks round(0.8 n) names for training; a
    class with at least 2 names keeps at least 1 in each part. Train and test
    list the classes in order, each class's names in their input order, so
    the result depends only on the names and the seed.
    """
    classes = sorted(by_class)
    if len(classes) < 2:
        raise DataError(f"{source}: {len(classes)} class(es) {classes}, expected at least 2")
    train_names: list[str] = []
    test_names: list[str] = []
    train_y: list[int] = []
    test_y: list[int] = []
    for index, language in enumerate(classes):
        names = by_class[language]
        n = len(names)
        if n == 0:
            raise DataError(f"{source}: class {language} has no names, expected at least 1")
        n_train = n if n == 1 else min(max(round(TRAIN_FRACTION * n), 1), n - 1)
        order = np.random.default_rng([seed, index]).permutation(n)
        for part, labels, chosen in (
            (train_names, train_y, order[:n_train]),
            (test_names, test_y, order[n_train:]),
        ):
            part.extend(names[i] for i in np.sort(chosen))
            labels.extend([index] * len(chosen))
    return Names(
        train_names=train_names,
        train_y=np.array(train_y, dtype=np.int64),
        test_names=test_names,
        test_y=np.array(test_y, dtype=np.int64),
        classes=classes,
        source=source,
    )


def load_names(data_dir: str | Path | None = None) -> Names:
    """Names for training and testing: a folder of Language.txt files, or None for the embedded default."""
    if data_dir is None:
        by_class = embedded_names()
        where = f"embedded Faker surnames (faker {_faker_version()})"
    else:
        by_class = read_names_dir(data_dir)
        where = f"names files in {data_dir}"
    total = sum(map(len, by_class.values()))
    return split_names(by_class, f"{where}, {len(by_class)} classes, {total} names")


# ---------------------------------------------------------------- encoding
def encode_letters(name: str) -> np.ndarray:
    """int64 letter indices into ALPHABET, shape (len(name),)."""
    try:
        return np.array([_LETTER_INDEX[c] for c in name], dtype=np.int64)
    except KeyError as e:
        raise UserError(
            f"name {name!r}: {e.args[0]!r} is not in the 57-letter alphabet (fold() the name first)"
        ) from None


def one_hot_name(name: str) -> np.ndarray:
    """float32 one-hot rows, shape (len(name), 57)."""
    return np.eye(N_LETTERS, dtype=np.float32)[encode_letters(name)]


def one_hot_batch(names: list[str], length: int) -> tuple[np.ndarray, np.ndarray]:
    """Float32 one-hot (B, length, 57), zero rows after each name's end, and int64 lengths (B,).

    The lengths let a model read each name's hidden state at its last letter
    rather than after the padding. Empty names are refused: they have no
    last letter to classify from.
    """
    batch = np.zeros((len(names), length, N_LETTERS), dtype=np.float32)
    lengths = np.zeros(len(names), dtype=np.int64)
    for row, name in enumerate(names):
        if not name:
            raise UserError(f"name {row} of the batch is empty, expected at least one letter")
        if len(name) > length:
            raise UserError(f"name {name!r} has {len(name)} letters, longer than the batch length {length}")
        letters = encode_letters(name)
        batch[row, np.arange(len(letters)), letters] = 1.0
        lengths[row] = len(letters)
    return batch, lengths
