"""PyTorch models <-> weight files (safetensors with state_dict names and layouts)."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from shared.weights import StateDict, check_state_dict, load_weights, save_weights


def state_dict_from_model(model: nn.Module) -> StateDict:
    """A copy of the model's state_dict as numpy arrays (never aliasing the live tensors)."""
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def load_state_dict(model: nn.Module, state_dict: StateDict, source: str = "weights") -> None:
    """Load numpy arrays into `model`; keys and shapes are checked first."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    check_state_dict(expected, state_dict, source)
    device = next(model.parameters()).device
    model.load_state_dict({k: torch.from_numpy(v.copy()).to(device) for k, v in state_dict.items()})


def save_model(model: nn.Module, path: str | Path, arch: str) -> None:
    save_weights(path, state_dict_from_model(model), {"arch": arch, "written_by": "torch_impl"})


def load_model(model: nn.Module, path: str | Path) -> None:
    load_state_dict(model, load_weights(path), str(path))
