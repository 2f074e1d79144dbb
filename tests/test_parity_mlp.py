"""MLP classifier: PyTorch and JAX compute the same thing (DESIGN.md, "Parity").

Same weights (converted both ways) and batches in; logits, loss, every
gradient and a 10-step Adam trajectory out; plus a float64 numpy forward pass.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from jax_impl import mlp as jmlp
from jax_impl import weights as jax_weights
from shared.data import load_embedded_mnist
from tests.parity import (
    DIRECTIONS,
    assert_both_equal_reference,
    assert_close,
    assert_same_trajectory,
    assert_state_dicts_close,
    loss_and_grads,
    paired_models,
    trajectories,
)
from tests.tolerances import FORWARD_RTOL, GRAD_RTOL, LOSS_RTOL
from torch_impl import mlp as tmlp
from torch_impl import weights as torch_weights

# Smaller than training's 1000: with more examples per step, more ReLU
# pre-activations sit within float32 rounding of 0, and one that switches in
# one framework and not the other changes a unit's Adam step (see tolerances.py).
BATCH = 100
# Training's lr 0.01 is too chaotic for a 1e-4 trajectory: Adam's first steps
# move every weight by ~lr whatever the size of its gradient, so a ReLU that
# switches on one example in one framework only (float32 rounding at a
# pre-activation of ~1e-7) shifts its unit's next steps by a sizeable part of lr.
TRAJECTORY_LR = 1e-3


@pytest.fixture(scope="module")
def batches() -> list[tuple[np.ndarray, np.ndarray]]:
    """Ten real MNIST batches with their labels, shuffled as in training (the split is sorted by digit)."""
    data = load_embedded_mnist()
    order = np.random.default_rng(0).permutation(len(data.train_y))
    return [(data.train_x[idx], data.train_y[idx]) for idx in np.split(order[: 10 * BATCH], 10)]


@pytest.fixture(params=DIRECTIONS)
def models(request):
    return paired_models(tmlp, jmlp, request.param)


def test_parameter_shapes_and_counts_are_equal():
    torch_sd = torch_weights.state_dict_from_model(tmlp.init_model(0))
    jax_model = jmlp.init_model(0)
    assert {k: v.shape for k, v in torch_sd.items()} == {k: v.shape for k, v in jax_weights.state_dict_from_model(jax_model).items()}
    expected = (784 * 500 + 500) + (500 * 200 + 200) + (200 * 100 + 100) + (100 * 10 + 10)
    assert sum(v.size for v in torch_sd.values()) == expected == 513_810
    assert sum(np.size(p) for p in jax.tree.leaves(nnx.state(jax_model, nnx.Param))) == expected


def numpy_logits(state_dict: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """The MLP in float64 numpy: three ReLU layers and a linear output."""
    sd = {k: v.astype(np.float64) for k, v in state_dict.items()}
    h = x.astype(np.float64)
    for name in ("hidden1", "hidden2", "hidden3"):
        h = np.maximum(h @ sd[f"{name}.weight"].T + sd[f"{name}.bias"], 0.0)
    return h @ sd["out.weight"].T + sd["out.bias"]


def test_logits_agree_with_each_other_and_with_numpy(models, batches):
    torch_model, jax_model = models
    x, _ = batches[0]
    with torch.no_grad():
        t_logits = torch_model(torch.as_tensor(x)).cpu().numpy()
    j_logits = np.asarray(jax_model(jnp.asarray(x)))
    expected = numpy_logits(torch_weights.state_dict_from_model(torch_model), x)
    assert_both_equal_reference(t_logits, j_logits, expected, FORWARD_RTOL, "logits")


def test_loss_is_the_cross_entropy_and_every_gradient_agrees(models, batches):
    torch_model, jax_model = models
    x, y = batches[1]
    t_loss, t_grads, j_loss, j_grads = loss_and_grads(tmlp, jmlp, torch_model, jax_model, (x, y))
    logits = numpy_logits(torch_weights.state_dict_from_model(torch_model), x)
    log_softmax = logits - logits.max(1, keepdims=True)
    log_softmax -= np.log(np.exp(log_softmax).sum(1, keepdims=True))
    expected = -log_softmax[np.arange(len(y)), y].mean()
    assert_close(t_loss, expected, LOSS_RTOL, "torch loss vs numpy cross-entropy")
    assert_close(j_loss, expected, LOSS_RTOL, "jax loss vs numpy cross-entropy")
    assert len(t_grads) == 8
    assert_state_dicts_close(j_grads, t_grads, GRAD_RTOL, "gradient of")


def test_ten_adam_steps_follow_the_same_trajectory(models, batches):
    torch_model, jax_model = models
    start = torch_weights.state_dict_from_model(torch_model)
    t_losses, j_losses = trajectories(tmlp, jmlp, torch_model, jax_model, batches, TRAJECTORY_LR)
    assert_same_trajectory(torch_model, jax_model, start, t_losses, j_losses, TRAJECTORY_LR)
