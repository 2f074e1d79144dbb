"""JAX machinery shared by all architectures: device, precision, step compilation, I/O.

`Backend` implements shared.contract.Backend, as torch_impl.training.Backend
does; the training command (shared/trainer.py) and the benchmark drive
either through it.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax
import jax
import numpy as np
import optax
from flax import nnx

from jax_impl.weights import load_model, save_model
from shared.errors import UserError
from shared.machine import cpu_name

MODES = ("jax-jit",)


def pin_float32_precision() -> None:
    """True float32 matmuls and convolutions (no TF32 or bf16 passes on GPUs)."""
    jax.config.update("jax_default_matmul_precision", "highest")


def select_device(name: str) -> jax.Device:
    if name == "cpu":
        return jax.devices("cpu")[0]
    try:
        return jax.devices("gpu")[0]
    except RuntimeError:
        if name == "gpu":
            raise UserError("--device gpu: JAX sees no GPU (is jax[cuda] installed?)") from None
        return jax.devices("cpu")[0]


def to_numpy(tree: Any) -> Any:
    return jax.tree.map(np.asarray, tree)


class CompiledStep:
    """A train step (model, optimizer, *batch) as one jit-compiled pure function.

    The Flax NNX performance recipe: split model and optimizer into a graph
    definition and their state once, merge them inside the jitted function,
    and donate the state so XLA updates it in place. The state crosses the
    jit boundary as a flat list of arrays: flattening NNX Variable objects in
    Python on every call would cost more than the step itself on small models.
    The NNX objects are brought up to date only by write_back(), which the
    caller runs before using the model elsewhere (evaluation, saving).
    """

    def __init__(self, step_fn, model: nnx.Module, optimizer: nnx.Optimizer, mode: str = "jax-jit"):
        if mode not in MODES:
            raise UserError(f"--mode {mode}: JAX supports {', '.join(MODES)}")
        model.train()
        self.objects = (model, optimizer)
        graphdef, state = nnx.split(self.objects)
        leaves, self.treedef = jax.tree.flatten(state)
        # Committed to the device they are on, as the step's outputs will be: jit
        # compiles once per committedness, so uncommitted first inputs (as model
        # initialisation leaves them) would compile the whole step a second time.
        self.leaves = [jax.device_put(leaf, next(iter(leaf.devices()))) for leaf in leaves]

        def pure_step(leaves, *batch):
            model, optimizer = nnx.merge(graphdef, jax.tree.unflatten(self.treedef, leaves))
            loss = step_fn(model, optimizer, *batch)
            return jax.tree.leaves(nnx.state((model, optimizer))), loss

        self.fn = jax.jit(pure_step, donate_argnums=0)

    def __call__(self, *batch: jax.Array) -> jax.Array:
        self.leaves, loss = self.fn(self.leaves, *batch)
        return loss

    def write_back(self) -> None:
        nnx.update(self.objects, jax.tree.unflatten(self.treedef, self.leaves))


class Backend:
    framework = "jax"
    modes = MODES

    def __init__(self, arch: str, device: str = "auto"):
        self.arch_name = arch
        self.arch = importlib.import_module(f"jax_impl.{arch}")
        self.device = select_device(device)
        self._jitted: dict[Callable, Callable] = {}
        pin_float32_precision()

    def init_model(self, seed: int, init: Path | None = None, **model_kwargs) -> nnx.Module:
        with jax.default_device(self.device):
            model = self.arch.init_model(seed, **model_kwargs)
            if init is not None:
                load_model(model, init)
        return model

    def make_optimizer(self, model: nnx.Module, lr: float) -> nnx.Optimizer:
        with jax.default_device(self.device):
            return self.arch.make_optimizer(model, lr)

    def compile_step(self, model, optimizer, step: Callable, mode: str | None = None) -> CompiledStep:
        return CompiledStep(step, model, optimizer, mode or MODES[0])

    def to_device(self, array: np.ndarray) -> jax.Array:
        return jax.device_put(array, self.device)

    to_numpy = staticmethod(to_numpy)

    def predict(self, model: nnx.Module, fn: Callable, *arrays: np.ndarray) -> dict[str, np.ndarray]:
        """fn(model, *arrays) in eval mode, jit-compiled, numpy in and out (no gradient is taken).

        It runs on an eval-mode view of the model (nnx.view shares the arrays
        and sets dropout and BatchNorm to eval), so the model keeps its own mode.
        """
        if fn not in self._jitted:
            self._jitted[fn] = nnx.jit(fn)
        view = nnx.view(model, deterministic=True, use_running_average=True, raise_if_not_found=False)
        return to_numpy(self._jitted[fn](view, *map(self.to_device, arrays)))

    def sync(self, result: Any = None) -> None:
        jax.block_until_ready(result)

    def save_model(self, model: nnx.Module, path: Path) -> None:
        save_model(model, path, self.arch_name)

    def device_name(self) -> str:
        if self.device.platform == "gpu":
            return self.device.device_kind
        return cpu_name()

    def versions(self) -> dict[str, str]:
        return {"jax": jax.__version__, "flax": flax.__version__, "optax": optax.__version__}
