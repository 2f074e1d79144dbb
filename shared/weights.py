"""Weight files: safetensors holding PyTorch state_dict names and layouts.

Both frameworks read and write this one format; the JAX side converts
layouts explicitly (jax_impl/weights.py). Files are written atomically and
read without pickle.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from shared.errors import UserError

StateDict = dict[str, np.ndarray]


class WeightsError(UserError):
    """A weight file is missing, unreadable, or does not fit the model."""


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
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_weights(path: str | Path) -> StateDict:
    """Read a safetensors file into numpy arrays."""
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


def check_state_dict(expected: Mapping[str, tuple[int, ...]], got: Mapping[str, np.ndarray], source: str) -> None:
    """Raise WeightsError naming the first missing key, unexpected key or shape mismatch."""
    for key, shape in expected.items():
        if key not in got:
            raise WeightsError(f"{source}: missing key '{key}' (the model expects shape {tuple(shape)})")
    for key, value in got.items():
        if key not in expected:
            raise WeightsError(f"{source}: unexpected key '{key}' of shape {tuple(value.shape)} (not in the model)")
        if tuple(value.shape) != tuple(expected[key]):
            raise WeightsError(
                f"{source}: key '{key}' has shape {tuple(value.shape)}, the model expects {tuple(expected[key])}"
            )
