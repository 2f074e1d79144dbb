"""Flax NNX models <-> weight files (safetensors with PyTorch state_dict names and layouts).

A layer at attribute path ('encoder', 'hidden') is the torch key prefix
'encoder.hidden.'. Each supported layer type lists how its torch tensors map
to its NNX variables, e.g. Linear: weight (out, in) = kernel (in, out).T;
Conv: weight (out, in, kh, kw) = kernel (kh, kw, in, out) transposed;
ConvTranspose: weight (in, out, kh, kw) = kernel (kh, kw, in, out)
transposed and flipped in space (torch's transposed convolution convolves
the dilated input with its kernel flipped, nnx.ConvTranspose with its kernel
as it is), ConvTransposeByPhases the same;
BatchNorm: weight/bias/running_mean/running_var/num_batches_tracked =
scale/bias/mean/var/num_batches_tracked (the counter int64 in the file, as
torch stores it; int32 in JAX, whose default integers are 32-bit).
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import nnx

from jax_impl.layers import BatchNorm, ConvTransposeByPhases
from shared.weights import StateDict, WeightsSpec, check_state_dict, load_into_model, save_weights

Layout = dict[str, tuple[str, Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]]


def _same(a: np.ndarray) -> np.ndarray:
    return a


def _transpose(a: np.ndarray) -> np.ndarray:
    return a.T


def _hwio_to_oihw(a: np.ndarray) -> np.ndarray:
    return a.transpose(3, 2, 0, 1)


def _oihw_to_hwio(a: np.ndarray) -> np.ndarray:
    return a.transpose(2, 3, 1, 0)


def _hwio_to_iohw_flipped(a: np.ndarray) -> np.ndarray:
    """nnx.ConvTranspose kernel (kh, kw, in, out) -> torch ConvTranspose2d weight (in, out, kh, kw), flipped in space."""
    return np.ascontiguousarray(a[::-1, ::-1].transpose(2, 3, 0, 1))


def _iohw_to_hwio_flipped(a: np.ndarray) -> np.ndarray:
    """The inverse of _hwio_to_iohw_flipped."""
    return np.ascontiguousarray(a[:, :, ::-1, ::-1].transpose(2, 3, 0, 1))


def _to_int64(a: np.ndarray) -> np.ndarray:
    return a.astype(np.int64)


# torch name -> (NNX variable name, NNX->torch, torch->NNX); load_state_dict
# casts what torch->NNX gives to the NNX variable's dtype.
LAYOUTS: dict[type, Layout] = {
    nnx.Linear: {"weight": ("kernel", _transpose, _transpose), "bias": ("bias", _same, _same)},
    nnx.Conv: {"weight": ("kernel", _hwio_to_oihw, _oihw_to_hwio), "bias": ("bias", _same, _same)},
    nnx.ConvTranspose: {"weight": ("kernel", _hwio_to_iohw_flipped, _iohw_to_hwio_flipped), "bias": ("bias", _same, _same)},
    BatchNorm: {
        "weight": ("scale", _same, _same),
        "bias": ("bias", _same, _same),
        "running_mean": ("mean", _same, _same),
        "running_var": ("var", _same, _same),
        "num_batches_tracked": ("num_batches_tracked", _to_int64, _same),
    },
}

LAYOUTS[ConvTransposeByPhases] = LAYOUTS[nnx.ConvTranspose]  # jax_impl/layers.py: nnx.ConvTranspose's parameters, computed another way on CPU


def _layers(model: nnx.Module):
    """(torch key prefix, module, layout) for every supported layer of `model`."""
    for path, module in nnx.iter_modules(model):
        layout = LAYOUTS.get(type(module))
        if layout is not None:
            yield "".join(f"{p}." for p in path), module, layout


def _export(model: nnx.Module, kinds: type | tuple[type, ...]) -> StateDict:
    """The model's variables of the `kinds` (nnx.Param, nnx.BatchStat) under torch names and layouts.

    Raises if the model holds such a variable that no layout converts (a layer
    type missing from LAYOUTS), naming it, rather than leave it out of a file.
    """
    state_dict, converted = {}, set()
    for prefix, module, layout in _layers(model):
        for torch_name, (name, to_torch, _) in layout.items():
            variable = getattr(module, name, None)
            if isinstance(variable, kinds):
                state_dict[prefix + torch_name] = np.asarray(to_torch(np.asarray(variable.get_value())))
                converted.add(id(variable))
    for path, variable in nnx.iter_graph(model):
        if isinstance(variable, kinds) and id(variable) not in converted:
            name = ".".join(map(str, path))
            raise NotImplementedError(f"{type(model).__name__}: jax_impl/weights.py cannot convert '{name}'")
    return state_dict


def state_dict_from_model(model: nnx.Module) -> StateDict:
    """The model's parameters and running statistics as a PyTorch state_dict of numpy arrays."""
    return _export(model, (nnx.Param, nnx.BatchStat))


def state_dict_from_grads(model: nnx.Module, grads: nnx.State) -> StateDict:
    """Gradients (an nnx.State shaped like the model's parameters) under torch names and layouts.

    Only the parameters' keys, as torch's named_parameters() gives them: no
    running statistics, which have no gradient.
    """
    return _export(nnx.merge(nnx.graphdef(model), grads, nnx.state(model, nnx.Not(nnx.Param))), nnx.Param)


def load_state_dict(model: nnx.Module, state_dict: StateDict, source: str = "weights") -> None:
    """Set the model's variables from a PyTorch state_dict; keys and shapes are checked first."""
    expected = {k: (v.shape, v.dtype.name) for k, v in state_dict_from_model(model).items()}
    check_state_dict(expected, state_dict, source)
    for prefix, module, layout in _layers(model):
        for torch_name, (name, _, from_torch) in layout.items():
            variable = getattr(module, name, None)
            if variable is not None:
                value = from_torch(state_dict[prefix + torch_name])
                variable.set_value(jnp.asarray(value, dtype=variable.get_value().dtype))


def save_model(model: nnx.Module, path: str | Path, spec: WeightsSpec) -> None:
    save_weights(path, state_dict_from_model(model), spec.metadata("jax_impl"))


def load_model(model: nnx.Module, path: str | Path, expected: WeightsSpec | None = None) -> None:
    """The weights file at `path` into `model`; with `expected`, its metadata is checked first (shared.weights.check_metadata)."""
    load_into_model(path, expected, lambda state_dict: load_state_dict(model, state_dict, str(path)))
