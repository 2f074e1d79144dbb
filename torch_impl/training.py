"""PyTorch machinery shared by all architectures: device, precision, step compilation, I/O.

`Backend` has the same methods as jax_impl.training.Backend; the training
command (shared/trainer.py) and the benchmark drive either through them.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shared.errors import UserError
from shared.machine import cpu_name
from torch_impl.weights import load_model, save_model

MODES = ("torch-eager", "torch-compile")


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


class CompiledStep:
    """train_step(model, optimizer, *batch) bound to its model and optimizer, eager or torch.compile'd."""

    def __init__(self, step_fn, model: torch.nn.Module, optimizer: torch.optim.Optimizer, mode: str = "torch-eager"):
        if mode not in MODES:
            raise UserError(f"--mode {mode}: torch supports {', '.join(MODES)}")
        if mode == "torch-compile":
            # One graph per input shape, never a dynamic-shape graph: the per-name
            # RNN step sees one shape per name length (up to ~20), more than the
            # default limit of 8 recompilations, after which torch would run eager.
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
            self.fn = torch.compile(step_fn, dynamic=False)
        else:
            self.fn = step_fn
        self.model, self.optimizer = model, optimizer
        model.train()

    def __call__(self, *batch: torch.Tensor) -> torch.Tensor:
        return self.fn(self.model, self.optimizer, *batch)

    def write_back(self) -> None:
        """Nothing to do: torch updates the model in place (see the JAX twin)."""


class Backend:
    framework = "torch"
    modes = MODES

    def __init__(self, arch: str, device: str = "auto"):
        self.arch_name = arch
        self.arch = importlib.import_module(f"torch_impl.{arch}")
        self.device = select_device(device)
        pin_float32_precision()

    def init_model(self, seed: int, init: Path | None = None, **model_kwargs) -> torch.nn.Module:
        model = self.arch.init_model(seed, **model_kwargs).to(self.device)
        if init is not None:
            load_model(model, init)
        return model

    def make_optimizer(self, model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
        return self.arch.make_optimizer(model, lr)

    def compile_step(self, model, optimizer, mode: str = "torch-eager", step_name: str = "train_step") -> CompiledStep:
        return CompiledStep(getattr(self.arch, step_name), model, optimizer, mode)

    def to_device(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array)).to(self.device)

    to_numpy = staticmethod(to_numpy)

    def predict(self, model: torch.nn.Module, fn_name: str, *arrays: np.ndarray) -> Any:
        """The architecture's `fn_name(model, *arrays)` in eval mode, numpy in and out."""
        was_training = model.training
        model.eval()
        with torch.no_grad():
            out = getattr(self.arch, fn_name)(model, *map(self.to_device, arrays))
        model.train(was_training)
        return to_numpy(out)

    def sync(self, _result: Any = None) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def save_model(self, model: torch.nn.Module, path: Path) -> None:
        save_model(model, path, self.arch_name)

    def device_name(self) -> str:
        if self.device.type == "cuda":
            return torch.cuda.get_device_name(self.device)
        return f"{cpu_name()} ({torch.get_num_threads()} threads)"

    def versions(self) -> dict[str, str]:
        return {"torch": torch.__version__}
