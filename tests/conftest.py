"""Shared fixtures: both frameworks in full float32 precision, the test data folders, one JAX compilation cache.

The suite compiles the same JAX computations many times over: each parity
test builds its own jit-compiled step for each direction, and the training
and benchmark tests start new processes. A persistent compilation cache in a
folder of this session (shared by the xdist workers and the subprocesses,
removed at the end) compiles each of them once; what runs, and what is
checked, is the same.
"""
from __future__ import annotations

import atexit
import os
import shutil
import signal
import tempfile
from pathlib import Path

import pytest


def _pin_xdist_worker() -> None:
    """Under pytest-xdist (-n N), each worker gets its own share of the CPUs, and its subprocesses too.

    Two processes whose thread pools each span both cores of a 2-core machine
    slow torch down many times over (OpenMP threads spin waiting for a core);
    pinned, each worker's torch and XLA size their pools to its share.
    """
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if not worker or not count:
        return
    cpus = sorted(os.sched_getaffinity(0))
    share = cpus[int(worker.removeprefix("gw")) % int(count) :: int(count)] or cpus
    os.sched_setaffinity(0, share)
    os.environ["OMP_NUM_THREADS"] = str(len(share))


def _session_jax_cache() -> str:
    """The folder of this session's JAX compilation cache: made by the first process, shared by its xdist workers."""
    folder = os.environ.get("ZOO_TESTS_JAX_CACHE")
    if not folder:
        folder = os.environ["ZOO_TESTS_JAX_CACHE"] = tempfile.mkdtemp(prefix="zoo-tests-jax-cache-")
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


_pin_xdist_worker()
_JAX_CACHE = _session_jax_cache()
os.environ.update({
    "JAX_COMPILATION_CACHE_DIR": _JAX_CACHE,
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
})

import jax  # noqa: E402

from jax_impl.training import pin_float32_precision as pin_jax  # noqa: E402
from torch_impl.training import pin_float32_precision as pin_torch  # noqa: E402

jax.config.update("jax_compilation_cache_dir", _JAX_CACHE)  # this process, whenever JAX was first imported
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
pin_torch()
pin_jax()

REPO_ROOT = Path(__file__).resolve().parents[1]
TEST_DATA = REPO_ROOT / "tests" / "data"  # real files the tests read, with their sources: tests/data/README.md
MNIST_TEST_DIR = TEST_DATA / "mnist"  # the official MNIST test set
NAMES_DIR = TEST_DATA / "names"  # the classic 18-language names folder


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--device", choices=("cpu", "gpu"), default="cpu",
                     help="where the parity tests compute: cpu (default), or gpu: torch's CUDA device and JAX's first GPU (docs/testing.md)")


# A suite started in the background by a non-interactive shell (`nohup ... &`) inherits SIGINT ignored, and so would every
# process a test starts; the tests that interrupt a benchmark or a GPU-check step need it to act as a Ctrl-C.
signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("device") == "gpu":
        compute_on_the_gpu()


def compute_on_the_gpu() -> None:
    """Both frameworks' default device the GPU, before any test module builds a model; the float32 pins above still hold.

    The parity tests make their tensors where the defaults say: torch.as_tensor
    and factory functions follow torch's default device, jnp.asarray JAX's.
    """
    import torch

    if not torch.cuda.is_available():
        raise pytest.UsageError("--device gpu: torch sees no CUDA device (no GPU here, or a CPU build of torch; docs/gpu.md)")
    # Several test processes (xdist workers) share the GPU: without this, each JAX would take 75% of its memory at start.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    try:
        gpu = jax.devices("gpu")[0]
    except RuntimeError:  # no GPU platform in this jaxlib, or JAX_PLATFORMS leaves it out
        raise pytest.UsageError("--device gpu: JAX sees no GPU (a CPU-only jaxlib? pip install -e '.[gpu]', docs/gpu.md)") from None
    torch.set_default_device("cuda")
    jax.config.update("jax_default_device", gpu)


@pytest.fixture(scope="session")
def mnist_test_dir() -> Path:
    """The official MNIST test-set IDX files (tests/data/mnist)."""
    return MNIST_TEST_DIR


@pytest.fixture(scope="session")
def names_dir() -> Path:
    """The classic names folder (tests/data/names)."""
    return NAMES_DIR


def unwritable_folder(tmp_path: Path) -> Path:
    """An existing folder this process cannot create files in: mode 0o555, or, for root (whom modes do not stop), /sys."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    for candidate in (folder, Path("/sys")):
        try:
            os.close(os.open(candidate / ".probe", os.O_CREAT | os.O_WRONLY, 0o600))
            (candidate / ".probe").unlink()
        except OSError:
            return candidate
    pytest.skip("no folder here refuses writes to this process (root on a system without a read-only /sys)")


def slow_for(values, slow) -> list:
    """`values` for pytest.mark.parametrize, those in `slow` behind the slow marker (the default suite keeps the others)."""
    return [pytest.param(v, marks=pytest.mark.slow) if v in slow else v for v in values]
