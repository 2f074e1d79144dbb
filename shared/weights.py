"""Weight files: safetensors holding PyTorch state_dict names and layouts.

Both frameworks read and write this one format; the JAX side converts
layouts explicitly (jax_impl/weights.py). Files are written atomically and
read without pickle.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import load_file, save_file

from shared.errors import UserError

StateDict = dict[str, np.ndarray]
Expected = Mapping[str, tuple[tuple[int, ...], str]]  # key -> (shape, dtype name) of what a model holds

FORMAT = "torch-jax-zoo"  # the metadata key "format" of every file this project writes
FORMAT_VERSION = 1  # the metadata layout below; a file of a newer version is refused


@dataclass(frozen=True)
class WeightsSpec:
    """What a weight file holds: the architecture, its variant, and what the weights mean beyond their shapes.

    `depends` names the data-dependent choices a file's numbers only make
    sense with: the RNN's ordered class list (output unit i is class i), the
    AAE's number of classes and code size. Written into every file's
    safetensors metadata and checked when a file is loaded.
    """

    arch: str
    variant: str
    depends: dict = field(default_factory=dict)  # JSON values

    def metadata(self, written_by: str) -> dict[str, str]:
        return {
            "format": FORMAT, "format_version": str(FORMAT_VERSION), "arch": self.arch, "variant": self.variant,
            "depends": json.dumps(self.depends, sort_keys=True), "written_by": written_by,
        }


class WeightsError(UserError):
    """A weight file is missing, unreadable, or does not fit the model."""


def umasked(mode: int) -> int:
    """`mode` as the user's umask leaves it: what open() would give, where mkstemp/mkdtemp give 0o600/0o700."""
    mask = os.umask(0)
    os.umask(mask)
    return mode & ~mask


def save_weights(path: str | Path, state_dict: Mapping[str, np.ndarray], metadata: dict[str, str] | None = None) -> None:
    """Write a safetensors file atomically (temporary file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # reshape: np.ascontiguousarray turns a 0-d array (BatchNorm's num_batches_tracked) into shape (1,)
    arrays = {k: np.ascontiguousarray(v).reshape(np.shape(v)) for k, v in state_dict.items()}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(arrays, tmp, metadata=metadata)
        os.chmod(tmp, umasked(0o666))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_weights(path: str | Path) -> StateDict:
    """Read a safetensors file into numpy arrays (load_into_model also checks what its metadata says)."""
    path = Path(path)
    if not path.exists():
        raise WeightsError(f"weights file {path} does not exist")
    if not path.is_file():
        raise WeightsError(f"weights file {path} is a folder, expected a .safetensors file")
    try:
        state_dict = load_file(path)
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightsError(f"{path}: not a readable safetensors file ({e})") from None
    except (TypeError, AttributeError) as e:  # a dtype numpy does not know: bfloat16 (TypeError), float8 (no np.float8_e4m3fn)
        raise WeightsError(f"{path}: holds a tensor type numpy cannot read ({e}); expected float32") from None
    for key, value in state_dict.items():
        if value.dtype.kind not in "fiub":  # bfloat16 reads as a void type once ml_dtypes is imported
            raise WeightsError(f"{path}: key '{key}' has dtype {value.dtype}, expected float32 (or int64 for a counter)")
    return state_dict


def load_into_model(path: str | Path, expected: WeightsSpec | None, load: Callable[[StateDict], None]) -> None:
    """Read the file, check its metadata against `expected` (if given), then `load` its arrays into a model.

    The warning for a file without metadata comes only once `load` has found
    its keys and shapes right: a file that does not fit gets its one error line.
    """
    state_dict = load_weights(path)
    warning = None if expected is None else check_metadata(path, read_metadata(path), expected)
    load(state_dict)
    if warning:
        print(warning, file=sys.stderr)


def read_metadata(path: str | Path) -> dict[str, str]:
    """The safetensors metadata of a file load_weights has read (empty when the file has none)."""
    try:
        with safe_open(str(path), "numpy") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightsError(f"{path}: not a readable safetensors file ({e})") from None


def check_metadata(path: str | Path, metadata: Mapping[str, str], expected: WeightsSpec) -> str | None:
    """Raise WeightsError if the file holds another architecture, variant or data dependence than `expected`.

    A file without this project's metadata (e.g. safetensors.torch.save_file
    of any state_dict) is let through: its keys and shapes are all there is to
    check. Returns the warning line to print for it, else None.
    """
    if metadata.get("format") != FORMAT:
        if "arch" in metadata and metadata["arch"] != expected.arch:  # written before the format had a version
            raise WeightsError(f"{path}: holds weights of {metadata['arch']}, expected {expected.arch}")
        return (f"warning: {path} has no {FORMAT} metadata (architecture, variant, format version); "
                f"loaded as {expected.arch} --variant {expected.variant} since its keys and shapes fit")
    version = metadata.get("format_version", "")
    if not version.isdigit() or int(version) > FORMAT_VERSION:
        raise WeightsError(f"{path}: format version {version!r}, this code reads versions up to {FORMAT_VERSION}")
    for key, want in (("arch", expected.arch), ("variant", expected.variant)):
        if metadata.get(key) != want:
            raise WeightsError(f"{path}: holds {key} {metadata.get(key)!r}, expected {want!r}")
    try:
        depends = json.loads(metadata.get("depends", "{}"))
    except json.JSONDecodeError:
        depends = None
    if not isinstance(depends, dict):
        raise WeightsError(f"{path}: metadata 'depends' is not a JSON object: {metadata['depends'][:80]!r}")
    for key in sorted(set(depends) | set(expected.depends)):
        if depends.get(key) != expected.depends.get(key):
            raise WeightsError(f"{path}: {key} differ: {_describe(depends.get(key))} in the file, {_describe(expected.depends.get(key))} here")
    return None


def _describe(value: object) -> str:
    """A metadata value for an error line: a long list by its length and first items."""
    if isinstance(value, list) and len(value) > 6:
        return f"{len(value)} [{', '.join(map(str, value[:4]))}, ...]"
    return "none" if value is None else json.dumps(value)


def check_state_dict(expected: Expected, got: Mapping[str, np.ndarray], source: str) -> None:
    """Raise WeightsError naming the first missing or unexpected key, or a key of another shape, dtype, or non-finite values.

    A float tensor must be float32, as every model here holds: another float
    type is refused rather than converted silently. An integer (BatchNorm's
    counter) may be any integer type.
    """
    for key, (shape, _) in expected.items():
        if key not in got:
            raise WeightsError(f"{source}: missing key '{key}' (the model expects shape {tuple(shape)})")
    for key, value in got.items():
        if key not in expected:
            raise WeightsError(f"{source}: unexpected key '{key}' of shape {tuple(value.shape)} (not in the model)")
        shape, dtype = expected[key]
        if tuple(value.shape) != tuple(shape):
            raise WeightsError(f"{source}: key '{key}' has shape {tuple(value.shape)}, the model expects {tuple(shape)}")
        if np.dtype(dtype).kind == "i" and value.dtype.kind in "iu":
            continue
        if value.dtype != np.dtype(dtype):
            raise WeightsError(
                f"{source}: key '{key}' has dtype {value.dtype}, the model holds {dtype}; convert the file first "
                f"(e.g. {{k: v.float() for k, v in state_dict.items()}} in torch), nothing is converted silently"
            )
        bad = int(np.count_nonzero(~np.isfinite(value)))
        if bad:
            raise WeightsError(f"{source}: key '{key}' holds {bad} non-finite values (NaN or infinity) of {value.size}")
