"""Data parallelism, framework-free: where a process stands, the checks, each replica's slice, a bounded wait.

Both training commands and the benchmark train data-parallel through each
framework's own engine: torch_impl/distributed.py (torch.distributed and
DistributedDataParallel, one process per device, launched by torchrun) and
jax_impl/distributed.py (one jit-compiled step over a batch sharded on a
device mesh; several processes through jax.distributed). What the two share
is here: the global batch is the batch a single-device run takes, and each
replica computes on its equal slice of it (replica r: rows r*B/N to
(r+1)*B/N - 1), so that N devices train on the same data in the same order
as one. See docs/distributed.md.
"""
from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from shared.errors import EXIT_USER_ERROR, UserError

BATCHNORM_STATS = ("global", "per-replica")  # --batchnorm: statistics over the global batch, or over each replica's slice
DEFAULT_TIMEOUT_S = 300.0  # --dist-timeout: how long a process waits for its peers to join


@dataclass(frozen=True)
class Parallel:
    """This process's place in a (data-parallel) run; the defaults are a single-device run."""

    replicas: int = 1  # the devices the global batch is split over, all processes together
    rank: int = 0  # this process among `processes` (process 0 writes the run's files)
    processes: int = 1
    batchnorm: str = "global"  # BATCHNORM_STATS

    @property
    def writer(self) -> bool:
        """The one process that evaluates and writes checkpoints, metrics and pictures."""
        return self.rank == 0


def check_data_parallel(arch: str, variant: str, fixed_batch_size: int | None, batch_size: int, replicas: int) -> None:
    """One-line errors for a data-parallel run the model cannot do."""
    if replicas == 1:
        return
    if fixed_batch_size:
        raise UserError(f"--devices {replicas}: {arch} --variant {variant} trains on one example per step, which cannot be split "
                        f"over {replicas} devices (train --variant batched data-parallel instead)")
    if batch_size % replicas:
        raise UserError(f"--batch-size {batch_size} is not divisible by --devices {replicas}: each device takes an equal slice "
                        "of the global batch")


def check_devices(devices: int, available: int, what: str) -> None:
    """More replicas asked for than the machine has (`what` names the devices counted)."""
    if devices > available:
        raise UserError(f"--devices {devices}: this machine has {available} {what}")


def cpu_count() -> int:
    """CPU cores of this machine: one CPU replica each (threads pinned to fewer cores still see them all)."""
    return os.cpu_count() or 1


def replica_slice(batch: tuple[np.ndarray, ...], replica: int, replicas: int) -> tuple[np.ndarray, ...]:
    """Replica `replica`'s rows of every array of a global batch (every array has the batch on its first axis)."""
    size = len(batch[0]) // replicas
    return tuple(a[replica * size : (replica + 1) * size] for a in batch)


@contextmanager
def bounded_wait(seconds: float, message: str) -> Iterator[None]:
    """Run the block, or print `error: message` and exit with status 2 after `seconds`: a process never hangs on a peer.

    A watchdog thread, because the frameworks' own waits can block in C++ past
    any Python exception (JAX's coordination client aborts the process when
    its own deadline passes).
    """
    done = threading.Event()

    def watch() -> None:
        if not done.wait(seconds):
            print(f"error: {message}", file=sys.stderr, flush=True)
            os._exit(EXIT_USER_ERROR)

    watchdog = threading.Thread(target=watch, daemon=True)
    watchdog.start()
    try:
        yield
    finally:
        done.set()
