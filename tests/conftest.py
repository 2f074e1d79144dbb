"""Shared fixtures: both frameworks in full float32 precision, the test data folders."""
from __future__ import annotations

from pathlib import Path

import pytest

from jax_impl.training import pin_float32_precision as pin_jax
from torch_impl.training import pin_float32_precision as pin_torch

pin_torch()
pin_jax()

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def mnist_test_dir() -> Path:
    """The official MNIST test-set IDX files that sit beside the project (../shared/data/mnist)."""
    path = SHARED_DATA / "mnist"
    if not (path / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.fail(f"{path}: the official MNIST test files are missing (they come with ../shared/data)")
    return path
