"""Inputs shared by every row of one architecture, task and batch size: task, initial weights, batches, FLOP count.

Every function here is deterministic in its arguments, so the driver and each
worker process compute the same batches for every mode of a configuration.
"""
from __future__ import annotations

import importlib
from functools import cache
from pathlib import Path

import numpy as np

from shared.contract import train_step_of
from shared.data import batch_indices
from shared.tasks import TASKS, Task

# Dropout draws its masks from each framework's own generator, so with it on
# no two rows would compute the same losses; the CNN and the AAE are timed with p = 0 (the CNN's
# dropout acts on a 100x128 activation, far below 1% of the step's time).
DETERMINISTIC_MODEL_KWARGS = {"cnn": {"dropout": 0.0}, "aae": {"dropout": 0.0}}

# Distinct batches a configuration cycles through: enough to vary the data, few enough that a
# sweep's large batches do not fill the memory column with input data. The per-name RNN needs
# more: its shapes are name lengths, and the timed names should cover several.
POOL = 8
PER_NAME_POOL = 32
SCAN_STEPS = POOL  # jax-scan: steps per compiled call at most (the whole pool in one call; the per-name RNN's names of one length)


def model_kwargs(arch: str, variant: str) -> dict:
    """Arguments of init_model in every row: the task's (the RNN's classes), dropout off."""
    return {**benchmark_task(arch, variant).model_kwargs, **DETERMINISTIC_MODEL_KWARGS.get(arch, {})}


@cache
def benchmark_task(arch: str, variant: str) -> Task:
    """The architecture's task on its embedded data (MNIST subset, or the Faker-built names)."""
    return TASKS[arch].load(variant)


def examples(task: Task, kind: str) -> int:
    """How many examples a batch of `kind` draws from: the training split, or the test split for inference."""
    return task.n_train if kind == "train" else task.n_infer


def draw_batches(task: Task, kind: str, batch_size: int, count: int, seed: int, first_epoch: int = 1) -> list[tuple[np.ndarray, ...]]:
    """`count` batches of `kind` (training batches with their noise, or inference inputs), epoch after epoch."""
    rng = np.random.default_rng([seed, first_epoch])
    make = task.train_batch if kind == "train" else task.infer_batch
    batches, epoch = [], first_epoch - 1
    while len(batches) < count:
        epoch += 1
        for idx in batch_indices(examples(task, kind), batch_size, seed, epoch):
            batches.append(make(idx, rng))
            if len(batches) == count:
                break
    return batches


def shapes(batch: tuple[np.ndarray, ...]) -> tuple[tuple[int, ...], ...]:
    return tuple(a.shape for a in batch)


def benchmark_batches(arch: str, variant: str, kind: str, batch_size: int, warmup: int, seed: int):
    """(warm-up batches, timed batches), the same for every row of (arch, variant, kind, batch size).

    The timed batches are a pool the rounds cycle through. The warm-up holds at
    least one batch of every input shape among them, so that no timed step
    compiles (the per-name RNN step has one shape per name length); then more
    batches, from other epochs, up to `warmup`.
    """
    task = benchmark_task(arch, variant)
    timed = draw_batches(task, kind, batch_size, PER_NAME_POOL if task.fixed_batch_size else POOL, seed)
    first_of_shape = {}
    for batch in timed:
        first_of_shape.setdefault(shapes(batch), batch)
    warm = list(first_of_shape.values())
    if len(warm) < warmup:
        warm += draw_batches(task, kind, batch_size, warmup - len(warm), seed, first_epoch=1000)
    return warm, timed


def write_initial_weights(arch: str, variant: str, seed: int, path: Path) -> None:
    """Weights every row of `arch` starts from (torch's default init, drawn from `seed`)."""
    from torch_impl.weights import save_model

    module = importlib.import_module(f"torch_impl.{arch}")
    save_model(module.init_model(seed, **model_kwargs(arch, variant)), path, benchmark_task(arch, variant).weights_spec())


def count_flops(arch: str, variant: str, kind: str, batch_size: int, seed: int) -> float:
    """Matmul and convolution FLOPs of one step, counted by torch: forward + backward for train, forward for infer.

    The mean over the timed batches, counting each input shape once (the
    per-name RNN's FLOPs grow with the name's length).
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    task = benchmark_task(arch, variant)
    module = importlib.import_module(f"torch_impl.{arch}")
    model = module.init_model(seed, **model_kwargs(arch, variant))
    optimizer = module.make_optimizer(model, 1e-12)
    if kind == "infer":
        model.eval()

    def run(batch):
        if kind == "train":
            return train_step_of(module, variant)(model, optimizer, *batch)
        return task.infer_step(module)(model, *batch)

    _, timed = benchmark_batches(arch, variant, kind, batch_size, 0, seed)
    flops_of_shape = {}
    for batch in timed:
        if shapes(batch) not in flops_of_shape:
            with FlopCounterMode(display=False) as counter, torch.set_grad_enabled(kind == "train"):
                run(tuple(map(torch.from_numpy, batch)))
            flops_of_shape[shapes(batch)] = counter.get_total_flops()
    return float(np.mean([flops_of_shape[shapes(batch)] for batch in timed]))
