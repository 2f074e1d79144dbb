"""PyTorch machinery shared by all architectures: device, precision, step compilation, I/O.

`Backend` implements shared.contract.Backend, as jax_impl.training.Backend
does; the training command (shared/trainer.py) and the benchmark drive
either through it.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shared.errors import UserError
from shared.machine import cpu_name
from shared.weights import StateDict, WeightsError, WeightsSpec
from torch_impl.weights import load_model, save_model

MODES = ("torch-eager", "torch-compile")
DROPOUT_STREAM = 2  # the run's seed and this give the dropout generator's seed (the init draws from the seed itself)


def pin_float32_precision() -> None:
    """True float32 matmuls and convolutions (no TF32 on Ampere and later GPUs)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")


def select_device(name: str) -> torch.device:
    if name == "gpu" and not torch.cuda.is_available():
        raise UserError("--device gpu: torch sees no CUDA device")
    if name in ("gpu", "auto") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def to_numpy(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: to_numpy(v) for k, v in tree.items()}
    return tree.detach().cpu().numpy()


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """The model in eval mode, then every submodule back in the mode it had (as JAX's nnx.view leaves them)."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


def compiled(fn: Callable, mode: str) -> Callable:
    """fn as the mode runs it: itself (torch-eager) or torch.compile'd, one graph per input shape."""
    if mode not in MODES:
        raise UserError(f"--mode {mode}: torch supports {', '.join(MODES)}")
    if mode == "torch-eager":
        return fn
    # Never a dynamic-shape graph: the per-name RNN sees one shape per name
    # length (up to ~20), more than the default limit of 8 recompilations,
    # after which torch would silently run eager.
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    return torch.compile(fn, dynamic=False)


def optimizers_of(optimizer: Any) -> dict[str, torch.optim.Optimizer]:
    """An architecture's optimizer, or its NamedTuple of them (the GAN's, the AAE's), by name; unused ones (None) left out."""
    if isinstance(optimizer, torch.optim.Optimizer):
        return {"optimizer": optimizer}
    return {name: o for name, o in optimizer._asdict().items() if o is not None}


class CompiledStep:
    """A train step (model, optimizer, *batch) bound to its model and optimizer, eager or torch.compile'd."""

    def __init__(self, step_fn, model: torch.nn.Module, optimizer: torch.optim.Optimizer, mode: str = "torch-eager"):
        self.fn = compiled(step_fn, mode)
        self.model, self.optimizer = model, optimizer
        model.train()

    def __call__(self, *batch: torch.Tensor) -> torch.Tensor:
        return self.fn(self.model, self.optimizer, *batch)

    def write_back(self) -> None:
        """Nothing to do: torch updates the model in place (see the JAX twin)."""


class CompiledInference:
    """An inference function (model, *batch) bound to its model in eval mode, without autograd, eager or torch.compile'd.

    The benchmark's inference step; the model is put in eval mode for good
    (unlike Backend.predict, which restores it).
    """

    def __init__(self, fn, model: torch.nn.Module, mode: str = "torch-eager"):
        self.fn = compiled(fn, mode)
        self.model = model.eval()

    def __call__(self, *batch: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.inference_mode():
            return self.fn(self.model, *batch)


class Backend:
    framework = "torch"
    modes = MODES

    def __init__(self, arch: str, device: str = "auto"):
        self.arch_name = arch
        self.arch = importlib.import_module(f"torch_impl.{arch}")
        self.device = select_device(device)
        pin_float32_precision()

    def init_model(self, seed: int, init: Path | None = None, expected: WeightsSpec | None = None, **model_kwargs) -> torch.nn.Module:
        model = self.arch.init_model(seed, **model_kwargs).to(self.device)
        if init is not None:
            load_model(model, init, expected)
        return model

    def seed_dropout(self, seed: int) -> None:
        """Seed torch's global generator, which nn.Dropout draws its masks from, from the run's seed."""
        torch.manual_seed(int(np.random.SeedSequence([seed, DROPOUT_STREAM]).generate_state(1, np.uint64)[0]))

    def checkpoint_state(self, model: torch.nn.Module, optimizer: Any) -> StateDict:
        """What a checkpoint holds besides the weights: every optimizer's state and the generator's (see restore_state)."""
        arrays = {}
        for name, opt in optimizers_of(optimizer).items():
            for index, state in opt.state_dict()["state"].items():
                arrays.update({f"{name}.{index}.{key}": to_numpy(value) for key, value in state.items()})
        arrays["rng.cpu"] = torch.get_rng_state().numpy()
        if self.device.type == "cuda":
            arrays["rng.cuda"] = torch.cuda.get_rng_state(self.device).numpy()
        return arrays

    def restore_state(self, model: torch.nn.Module, optimizer: Any, arrays: StateDict, source: str) -> None:
        """Set the optimizers' and the generator's state from checkpoint_state's arrays."""
        for name, opt in optimizers_of(optimizer).items():
            state: dict[int, dict[str, torch.Tensor]] = {}
            for key, value in arrays.items():
                if key.startswith(f"{name}."):
                    index, field = key.removeprefix(f"{name}.").split(".", 1)
                    state.setdefault(int(index), {})[field] = torch.from_numpy(value.copy())
            opt.load_state_dict({**opt.state_dict(), "state": state})  # parameters without a gradient yet have no state
        if "rng.cpu" not in arrays:
            raise WeightsError(f"{source}: no 'rng.cpu' (torch's generator state)")
        torch.set_rng_state(torch.from_numpy(arrays["rng.cpu"].copy()))
        if self.device.type == "cuda" and "rng.cuda" in arrays:
            torch.cuda.set_rng_state(torch.from_numpy(arrays["rng.cuda"].copy()), self.device)

    def make_optimizer(self, model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
        return self.arch.make_optimizer(model, lr)

    def compile_step(self, model, optimizer, step: Callable, mode: str | None = None) -> CompiledStep:
        return CompiledStep(step, model, optimizer, mode or MODES[0])

    def compile_inference(self, model, fn: Callable, mode: str | None = None) -> CompiledInference:
        return CompiledInference(fn, model, mode or MODES[0])

    def to_device(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array)).to(self.device)

    to_numpy = staticmethod(to_numpy)

    def predict(self, model: torch.nn.Module, fn: Callable, *arrays: np.ndarray) -> dict[str, np.ndarray]:
        """fn(model, *arrays) in eval mode without gradients, numpy in and out; the model's modes are restored."""
        with eval_mode(model), torch.no_grad():
            return to_numpy(fn(model, *map(self.to_device, arrays)))

    def sync(self, result: Any = None) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def save_model(self, model: torch.nn.Module, path: Path, spec: WeightsSpec) -> None:
        save_model(model, path, spec)

    def device_name(self) -> str:
        if self.device.type == "cuda":
            return torch.cuda.get_device_name(self.device)
        return f"{cpu_name()} ({torch.get_num_threads()} threads)"

    def versions(self) -> dict[str, str]:
        return {"torch": torch.__version__}

    def settings(self) -> dict[str, object]:
        """What changes torch's speed here: threads, matmul precision, the backends in use."""
        return {
            "threads": torch.get_num_threads(),
            "interop_threads": torch.get_num_interop_threads(),
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "mkldnn": torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled,
            "cuda_matmul_tf32": torch.backends.cuda.matmul.allow_tf32,
            "cudnn_tf32": torch.backends.cudnn.allow_tf32,
        }
