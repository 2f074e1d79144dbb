"""Inputs shared by every row of one architecture: task, initial weights, batches, FLOP count."""
from __future__ import annotations

import importlib
from functools import cache
from pathlib import Path

import numpy as np

from shared.data import batch_indices
from shared.errors import UserError
from shared.tasks import TASKS, Task

# Dropout draws its masks from each framework's own generator, so with it on
# no two rows would compute the same losses; the CNN and the AAE are timed with p = 0 (the CNN's
# dropout acts on a 100x128 activation, far below 1% of the step's time).
DETERMINISTIC_MODEL_KWARGS = {"cnn": {"dropout": 0.0}, "aae": {"dropout": 0.0}}


def model_kwargs(arch: str, variant: str) -> dict:
    """Arguments of init_model in every row: the task's (the RNN's classes), dropout off."""
    return {**benchmark_task(arch, variant).model_kwargs, **DETERMINISTIC_MODEL_KWARGS.get(arch, {})}


@cache
def benchmark_task(arch: str, variant: str) -> Task:
    """The architecture's task on its embedded data (MNIST subset, or the Faker-built names)."""
    return TASKS[arch].load(variant)


def draw_batches(task: Task, batch_size: int, count: int, seed: int, first_epoch: int = 1) -> list[tuple[np.ndarray, ...]]:
    """`count` training batches (with their noise), epoch after epoch from `first_epoch`."""
    rng = np.random.default_rng([seed, first_epoch])
    batches, epoch = [], first_epoch - 1
    while len(batches) < count:
        epoch += 1
        for idx in batch_indices(task.n_train, batch_size, seed, epoch):
            batches.append(task.train_batch(idx, rng))
            if len(batches) == count:
                break
        if epoch == first_epoch and not batches:
            raise UserError(f"--batch-size {batch_size} exceeds the {task.n_train} training examples")
    return batches


def shapes(batch: tuple[np.ndarray, ...]) -> tuple[tuple[int, ...], ...]:
    return tuple(a.shape for a in batch)


def benchmark_batches(arch: str, variant: str, batch_size: int, warmup: int, steps: int, seed: int):
    """(warm-up batches, timed batches), the same for every row of (arch, variant).

    The warm-up holds at least one batch of every input shape among the timed
    batches, so that no timed step compiles (the per-name RNN step has one
    shape per name length); then more batches up to `warmup`.
    """
    task = benchmark_task(arch, variant)
    timed = draw_batches(task, batch_size, steps, seed)
    first_of_shape = {}
    for batch in timed:
        first_of_shape.setdefault(shapes(batch), batch)
    warm = list(first_of_shape.values())
    if len(warm) < warmup:
        warm += draw_batches(task, batch_size, warmup - len(warm), seed, first_epoch=1000)
    return warm, timed


def write_initial_weights(arch: str, variant: str, seed: int, path: Path) -> None:
    """Weights every row of `arch` starts from (torch's default init, drawn from `seed`)."""
    from torch_impl.weights import save_model

    module = importlib.import_module(f"torch_impl.{arch}")
    save_model(module.init_model(seed, **model_kwargs(arch, variant)), path, arch)


def count_step_flops(arch: str, variant: str, batch_size: int, steps: int, seed: int) -> float:
    """Matmul and convolution FLOPs of one training step (forward + backward), counted by torch.

    The mean over the timed batches, counting each input shape once (the
    per-name RNN's FLOPs grow with the name's length).
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    task = benchmark_task(arch, variant)
    module = importlib.import_module(f"torch_impl.{arch}")
    model = module.init_model(seed, **model_kwargs(arch, variant))
    optimizer = module.make_optimizer(model, 1e-12)
    _, timed = benchmark_batches(arch, variant, batch_size, 0, steps, seed)
    flops_of_shape = {}
    for batch in timed:
        if shapes(batch) not in flops_of_shape:
            with FlopCounterMode(display=False) as counter:
                task.train_step(module)(model, optimizer, *map(torch.from_numpy, batch))
            flops_of_shape[shapes(batch)] = counter.get_total_flops()
    return float(np.mean([flops_of_shape[shapes(batch)] for batch in timed]))
