"""Flax NNX models <-> weight files (safetensors with PyTorch state_dict names and layouts).

A layer at attribute path ('encoder', 'hidden') is the torch key prefix
'encoder.hidden.'. Each supported layer type lists how its torch tensors map
to its NNX variables, e.g. Linear: weight (out, in) = kernel (in, out).T.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from shared.weights import StateDict, check_state_dict, load_weights, save_weights

Layout = dict[str, tuple[str, Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]]


def _same(a: np.ndarray) -> np.ndarray:
    return a


def _transpose(a: np.ndarray) -> np.ndarray:
    return a.T


# torch name -> (NNX variable name, NNX->torch, torch->NNX)
LAYOUTS: dict[type, Layout] = {
    nnx.Linear: {"weight": ("kernel", _transpose, _transpose), "bias": ("bias", _same, _same)},
}


def _layers(model: nnx.Module):
    """(torch key prefix, module, layout) for every supported layer of `model`."""
    for path, module in nnx.iter_modules(model):
        layout = LAYOUTS.get(type(module))
        if layout is not None:
            yield "".join(f"{p}." for p in path), module, layout


def state_dict_from_model(model: nnx.Module) -> StateDict:
    """The model's variables as a PyTorch state_dict of numpy arrays."""
    state_dict = {}
    for prefix, module, layout in _layers(model):
        for torch_name, (name, to_torch, _) in layout.items():
            variable = getattr(module, name, None)
            if variable is not None:
                state_dict[prefix + torch_name] = np.asarray(to_torch(np.asarray(variable.get_value())))
    converted = sum(v.size for v in state_dict.values())
    total = sum(np.size(p) for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
    if converted < total:
        raise NotImplementedError(f"{type(model).__name__} has parameters in layers jax_impl/weights.py cannot convert")
    return state_dict


def state_dict_from_grads(model: nnx.Module, grads: nnx.State) -> StateDict:
    """Gradients (an nnx.State shaped like the model's parameters) under torch names and layouts."""
    return state_dict_from_model(nnx.merge(nnx.graphdef(model), grads, nnx.state(model, nnx.Not(nnx.Param))))


def load_state_dict(model: nnx.Module, state_dict: StateDict, source: str = "weights") -> None:
    """Set the model's variables from a PyTorch state_dict; keys and shapes are checked first."""
    expected = {k: v.shape for k, v in state_dict_from_model(model).items()}
    check_state_dict(expected, state_dict, source)
    for prefix, module, layout in _layers(model):
        for torch_name, (name, _, from_torch) in layout.items():
            variable = getattr(module, name, None)
            if variable is not None:
                value = from_torch(state_dict[prefix + torch_name])
                variable.set_value(jnp.asarray(value, dtype=variable.get_value().dtype))


def save_model(model: nnx.Module, path: str | Path, arch: str) -> None:
    save_weights(path, state_dict_from_model(model), {"arch": arch, "written_by": "jax_impl"})


def load_model(model: nnx.Module, path: str | Path) -> None:
    load_state_dict(model, load_weights(path), str(path))
