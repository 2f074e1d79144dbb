"""Inputs shared by every row of one architecture: initial weights, batches, FLOP count."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from shared.data import batch_indices, load_embedded_mnist
from shared.errors import UserError
from shared.tasks import TASKS


def benchmark_batches(arch: str, batch_size: int, count: int, seed: int) -> list[tuple[np.ndarray, ...]]:
    """`count` training batches (with their noise) from the embedded MNIST split, epoch after epoch."""
    task = TASKS[arch](load_embedded_mnist())
    rng = np.random.default_rng([seed, 1])
    batches, epoch = [], 0
    while len(batches) < count:
        epoch += 1
        for idx in batch_indices(task.n_train, batch_size, seed, epoch):
            batches.append(task.train_batch(idx, rng))
            if len(batches) == count:
                break
        if epoch == 1 and not batches:
            raise UserError(f"--batch-size {batch_size} exceeds the {task.n_train} training examples")
    return batches


def write_initial_weights(arch: str, seed: int, path: Path) -> None:
    """Weights every row of `arch` starts from (torch's default init, drawn from `seed`)."""
    import importlib

    from torch_impl.weights import save_model

    save_model(importlib.import_module(f"torch_impl.{arch}").init_model(seed), path, arch)


def count_step_flops(arch: str, batch_size: int, seed: int) -> int:
    """Matmul and convolution FLOPs of one training step (forward + backward), counted by torch."""
    import importlib

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    module = importlib.import_module(f"torch_impl.{arch}")
    model = module.init_model(seed)
    optimizer = module.make_optimizer(model, 1e-9)
    batch = [torch.from_numpy(a) for a in benchmark_batches(arch, batch_size, 1, seed)[0]]
    with FlopCounterMode(display=False) as counter:
        module.train_step(model, optimizer, *batch)
    return int(counter.get_total_flops())
