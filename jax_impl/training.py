"""JAX machinery shared by all architectures: device, precision, step compilation, I/O.

`Backend` has the same methods as torch_impl.training.Backend; the training
command (shared/trainer.py) and the benchmark drive either through them.
"""
from __future__ import annotations

import importlib
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
    """train_step(model, optimizer, *batch) as one jit-compiled pure function.

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
        self.leaves, self.treedef = jax.tree.flatten(state)

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
        self._jitted: dict[str, Any] = {}
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

    def compile_step(self, model, optimizer, mode: str = "jax-jit", step_name: str = "train_step") -> CompiledStep:
        return CompiledStep(getattr(self.arch, step_name), model, optimizer, mode)

    def to_device(self, array: np.ndarray) -> jax.Array:
        return jax.device_put(array, self.device)

    to_numpy = staticmethod(to_numpy)

    def predict(self, model: nnx.Module, fn_name: str, *arrays: np.ndarray) -> Any:
        """The architecture's `fn_name(model, *arrays)` in eval mode, jit-compiled, numpy in and out."""
        if fn_name not in self._jitted:
            self._jitted[fn_name] = nnx.jit(getattr(self.arch, fn_name))
        model.eval()
        out = self._jitted[fn_name](model, *map(self.to_device, arrays))
        model.train()
        return to_numpy(out)

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
