"""Helpers of the parity tests: paired models with the same weights, gradients, comparisons."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from flax import nnx

from jax_impl import weights as jax_weights
from tests.tolerances import TRAJECTORY_LOSS_RTOL, TRAJECTORY_OUTLIER_MAX_FRACTION, TRAJECTORY_PARAM_ATOL
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
    return {name: p.grad.detach().cpu().numpy().copy() for name, p in model.named_parameters()}


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


def assert_both_equal_reference(torch_value, jax_value, expected, rtol: float, what: str) -> None:
    """Each framework's value against an independent float64 numpy computation of the same thing."""
    assert_close(torch_value, expected, rtol, f"torch {what} vs numpy")
    assert_close(jax_value, expected, rtol, f"jax {what} vs numpy")


def assert_state_dicts_close(actual: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray], rtol: float, what: str) -> None:
    assert sorted(actual) == sorted(expected), f"{what}: keys differ"
    for key in expected:
        assert_close(actual[key], expected[key], rtol, f"{what} '{key}'")


def assert_state_dicts_within(actual: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray], atol: float, what: str) -> None:
    assert sorted(actual) == sorted(expected), f"{what}: keys differ"
    for key in expected:
        err = float(np.max(np.abs(np.asarray(actual[key], np.float64) - expected[key])))
        assert err <= atol, f"{what} '{key}': max |diff| {err:.3g} > {atol:g}"


def jax_value_and_grad(fn, *args, argnums=0):
    """nnx.value_and_grad(fn)(*args), jit-compiled as the training step is.

    One compilation of the whole gradient, instead of one per primitive when
    run eagerly: the conv VAE's first gradient took 24 s eagerly, 5 s compiled,
    on a 2-core AMD EPYC (Zen 3). Updated BatchNorm statistics are carried out.
    """
    return nnx.jit(nnx.value_and_grad(fn, argnums=argnums))(*args)


def loss_and_grads(torch_arch, jax_arch, torch_model, jax_model, batch):
    """(torch loss, torch grads, jax loss, jax grads) of each module's `loss_fn(model, *batch)`, grads as torch state dicts."""
    import jax.numpy as jnp

    torch_model.zero_grad(set_to_none=True)
    t_loss = torch_arch.loss_fn(torch_model, *(torch.as_tensor(a) for a in batch))
    t_loss.backward()
    j_loss, j_grads = jax_value_and_grad(jax_arch.loss_fn, jax_model, *(jnp.asarray(a) for a in batch))
    return t_loss.item(), torch_grads(torch_model), float(j_loss), jax_grads(jax_model, j_grads)


def trajectories(torch_arch, jax_arch, torch_model, jax_model, batches, lr: float, step_of=lambda arch: arch.train_step):
    """Losses of len(batches) optimizer steps in each framework (JAX through the jit-compiled CompiledStep).

    `step_of(module)` is the step they take (default: the module's train_step).
    """
    import jax.numpy as jnp

    from jax_impl.training import CompiledStep

    t_opt, j_opt = torch_arch.make_optimizer(torch_model, lr), jax_arch.make_optimizer(jax_model, lr)
    t_step = step_of(torch_arch)
    j_step = CompiledStep(step_of(jax_arch), jax_model, j_opt)
    t_losses, j_losses = [], []
    for batch in batches:
        t_losses.append(float(t_step(torch_model, t_opt, *(torch.as_tensor(a) for a in batch))))
        j_losses.append(float(j_step(*(jnp.asarray(a) for a in batch))))
    j_step.write_back()
    return t_losses, j_losses


def assert_same_trajectory(torch_model, jax_model, start, t_losses, j_losses, lr: float) -> None:
    """Losses at every step, and the parameters at the end, held to the trajectory tolerances.

    Every parameter entry must end within TRAJECTORY_PARAM_ATOL, except a
    rare few (TRAJECTORY_OUTLIER_MAX_FRACTION, see tests/tolerances.py for
    why), which must stay within one learning rate per step. The parameters
    must have moved well beyond the tolerance, or the test would prove nothing.
    """
    for i, (t, j) in enumerate(zip(t_losses, j_losses)):
        assert_close(j, t, TRAJECTORY_LOSS_RTOL, f"loss at step {i + 1}")
    params = sorted(name for name, _ in torch_model.named_parameters())
    t_all = torch_weights.state_dict_from_model(torch_model)
    assert_parameters_within(jax_weights.state_dict_from_model(jax_model), t_all, start, params, lr, len(t_losses))


def assert_parameters_within(actual: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray], start: Mapping[str, np.ndarray],
                             params: list[str], lr: float, steps: int) -> None:
    """The parameters `params` after `steps` steps of learning rate `lr` from `start`: each entry within
    TRAJECTORY_PARAM_ATOL but a rare few (within lr per step), and moved well beyond it."""
    n_outside, n_total = 0, 0
    for name in params:
        diff = np.abs(actual[name].astype(np.float64) - expected[name])
        assert diff.max() <= lr * steps, f"after {steps} steps '{name}': max |diff| {diff.max():.3g} > lr x steps"
        n_outside, n_total = n_outside + int((diff > TRAJECTORY_PARAM_ATOL).sum()), n_total + diff.size
    assert n_outside <= TRAJECTORY_OUTLIER_MAX_FRACTION * n_total, (
        f"after {steps} steps {n_outside} of {n_total} parameter entries differ by more than {TRAJECTORY_PARAM_ATOL:g}"
    )
    moved = max(float(np.abs(expected[k] - start[k]).max()) for k in params)
    assert moved > 10 * TRAJECTORY_PARAM_ATOL, "parameters barely moved: the test would prove nothing"
