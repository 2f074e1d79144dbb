"""Helpers of the parity tests: paired models with the same weights, gradients, comparisons."""
from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
from flax import nnx

from jax_impl import weights as jax_weights
from torch_impl import weights as torch_weights

DIRECTIONS = ["torch->jax", "jax->torch"]


def paired_models(torch_arch, jax_arch, direction: str, seed: int = 0, **model_kwargs):
    """A torch model and a JAX model holding the same weights, initialised on the `direction`'s source side."""
    torch_model = torch_arch.init_model(seed, **model_kwargs)
    jax_model = jax_arch.init_model(seed + 1, **model_kwargs)  # different weights until converted
    if direction == "torch->jax":
        jax_weights.load_state_dict(jax_model, torch_weights.state_dict_from_model(torch_model))
    else:
        torch_weights.load_state_dict(torch_model, jax_weights.state_dict_from_model(jax_model))
    return torch_model, jax_model


def torch_grads(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {name: p.grad.detach().numpy().copy() for name, p in model.named_parameters()}


def jax_grads(model: nnx.Module, grads: nnx.State) -> dict[str, np.ndarray]:
    return jax_weights.state_dict_from_grads(model, grads)


def assert_close(actual, expected, rtol: float, what: str) -> None:
    """|actual - expected| <= rtol * max|expected|, elementwise, with a readable failure."""
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    scale = max(float(np.max(np.abs(expected))) if expected.size else 0.0, 1e-30)
    err = float(np.max(np.abs(actual - expected))) if expected.size else 0.0
    assert err <= rtol * scale, f"{what}: max |diff| {err:.3g} > {rtol:g} x max |expected| {scale:.3g}"


def assert_state_dicts_close(actual: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray], rtol: float, what: str) -> None:
    assert sorted(actual) == sorted(expected), f"{what}: keys differ"
    for key in expected:
        assert_close(actual[key], expected[key], rtol, f"{what} '{key}'")


def assert_state_dicts_within(actual: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray], atol: float, what: str) -> None:
    assert sorted(actual) == sorted(expected), f"{what}: keys differ"
    for key in expected:
        err = float(np.max(np.abs(np.asarray(actual[key], np.float64) - expected[key])))
        assert err <= atol, f"{what} '{key}': max |diff| {err:.3g} > {atol:g}"
