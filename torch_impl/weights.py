"""PyTorch models <-> weight files (safetensors with state_dict names and layouts)."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from shared.weights import StateDict, WeightsSpec, check_state_dict, load_into_model, save_weights


def state_dict_from_model(model: nn.Module) -> StateDict:
    """A copy of the model's state_dict as numpy arrays (never aliasing the live tensors)."""
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def load_state_dict(model: nn.Module, state_dict: StateDict, source: str = "weights") -> None:
    """Load numpy arrays into `model`; keys and shapes are checked first."""
    expected = {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in model.state_dict().items()}
    check_state_dict(expected, state_dict, source)
    device = next(model.parameters()).device
    model.load_state_dict({k: torch.from_numpy(v.copy()).to(device) for k, v in state_dict.items()})


def save_model(model: nn.Module, path: str | Path, spec: WeightsSpec) -> None:
    save_weights(path, state_dict_from_model(model), spec.metadata("torch_impl"))


def load_model(model: nn.Module, path: str | Path, expected: WeightsSpec | None = None) -> None:
    """The weights file at `path` into `model`; with `expected`, its metadata is checked first (shared.weights.check_metadata)."""
    load_into_model(path, expected, lambda state_dict: load_state_dict(model, state_dict, str(path)))
