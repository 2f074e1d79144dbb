"""Autoencoders (MLP and convolutional): PyTorch and JAX compute the same thing (DESIGN.md, "Parity").

Same weights (converted both ways), same real MNIST batches in; logits, the
binary cross-entropy, every gradient and a 10-step Adam trajectory out, for
both variants. Plus checks that share no code with either model: a float64
numpy forward pass (convolutions by im2col, transposed convolutions by their
definition) and the source's BCELoss on the sigmoid written out in numpy.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from jax_impl import autoencoder as jae
from jax_impl import weights as jax_weights
from shared.data import shuffled_mnist
from shared.hparams import AUTOENCODER
from tests.numpy_reference import numpy_autoencoder_logits, numpy_bce
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
from tests.tolerances import CONV_GRAD_RTOL, FORWARD_RTOL, GRAD_RTOL, LOSS_RTOL
from torch_impl import autoencoder as tae
from torch_impl import weights as torch_weights

BATCH = AUTOENCODER.batch_size
VARIANTS = ["mlp", "conv"]
N_PARAMS = {
    "mlp": (784 * 128 + 128) + (128 * 64 + 64) + (64 * 12 + 12) + (12 * 64 + 64) + (64 * 128 + 128) + (128 * 784 + 784),
    "conv": (16 * 1 * 3 * 3 + 16) + (8 * 16 * 3 * 3 + 8) + (8 * 16 * 3 * 3 + 16) + (16 * 1 * 3 * 3 + 1),
}


@pytest.fixture(scope="module")
def batches() -> list[np.ndarray]:
    """Ten real MNIST batches (B, 784) in [0, 1], the training split shuffled once (it is stored in label order)."""
    x = shuffled_mnist()[0]
    return [x[i * BATCH : (i + 1) * BATCH] for i in range(10)]


@pytest.fixture(params=VARIANTS)
def variant(request) -> str:
    return request.param


@pytest.fixture(params=DIRECTIONS)
def models(request, variant):
    return paired_models(tae, jae, request.param, variant=variant)


def test_parameter_shapes_counts_and_keys_are_equal(variant):
    torch_model, jax_model = tae.init_model(0, variant), jae.init_model(0, variant)
    torch_sd = torch_weights.state_dict_from_model(torch_model)
    jax_sd = jax_weights.state_dict_from_model(jax_model)
    assert {k: v.shape for k, v in jax_sd.items()} == {k: v.shape for k, v in torch_sd.items()}
    assert sum(p.numel() for p in torch_model.parameters()) == N_PARAMS[variant]
    assert sum(np.size(p) for p in jax.tree.leaves(nnx.state(jax_model, nnx.Param))) == N_PARAMS[variant]
    assert sum(1 for _ in torch_model.buffers()) == 0


def test_initialisation_follows_torchs_scheme(variant):
    """Every weight and bias ~ U(+-1/sqrt(fan_in)), in both frameworks.

    fan_in is torch's: weight.shape[1] * kh * kw for Linear, Conv2d and
    ConvTranspose2d alike, which for a transposed convolution (weight
    (in, out, kh, kw)) is out_channels * kh * kw. A bound from in_channels
    (deconv1: 8 x 9 instead of 16 x 9) would fail the max check.
    """
    for state_dict in (torch_weights.state_dict_from_model(tae.init_model(0, variant)), jax_weights.state_dict_from_model(jae.init_model(0, variant))):
        for key, w in state_dict.items():
            if not key.endswith(".weight"):
                continue
            bound = 1 / np.sqrt(np.prod(w.shape[1:]))
            b = state_dict[key.replace(".weight", ".bias")]
            assert np.abs(w).max() <= bound and np.abs(b).max() <= bound, key
            assert np.abs(w).max() > 0.9 * bound, key  # the whole interval is used (at least 144 entries)
            tol = 4 * 0.45 / np.sqrt(w.size)  # 4 standard errors of a uniform sample's standard deviation
            assert np.std(w) == pytest.approx(bound / np.sqrt(3), rel=tol), key


def test_unknown_variant_is_an_error_that_names_it():
    for arch in (tae, jae):
        with pytest.raises(ValueError, match="variant 'lstm'"):
            arch.init_model(0, "lstm")


def test_forward_outputs_agree_and_equal_a_float64_numpy_forward_pass(models, variant, batches):
    torch_model, jax_model = models
    x = batches[0]
    with torch.no_grad():
        t_out = {k: v.cpu().numpy() for k, v in tae.eval_outputs(torch_model, torch.as_tensor(x)).items()}
        t_recon = tae.reconstruct(torch_model, torch.as_tensor(x))["images"].cpu().numpy()
    j_out = {k: np.asarray(v) for k, v in jae.eval_outputs(jax_model, jnp.asarray(x)).items()}
    j_recon = np.asarray(jae.reconstruct(jax_model, jnp.asarray(x))["images"])
    expected = numpy_autoencoder_logits(torch_weights.state_dict_from_model(torch_model), x, variant)
    assert list(t_out) == list(j_out) == ["logits"]
    assert t_out["logits"].shape == (BATCH, 784)
    assert_close(j_out["logits"], t_out["logits"], FORWARD_RTOL, "logits")
    assert_both_equal_reference(t_out["logits"], j_out["logits"], expected, FORWARD_RTOL, "logits")
    assert_close(t_recon, 1 / (1 + np.exp(-expected)), FORWARD_RTOL, "torch reconstruction vs numpy sigmoid")
    assert_close(j_recon, 1 / (1 + np.exp(-expected)), FORWARD_RTOL, "jax reconstruction vs numpy sigmoid")


def test_loss_is_the_binary_cross_entropy_and_every_gradient_agrees(models, variant, batches):
    """The convolutional variant's gradients at CONV_GRAD_RTOL (tests/tolerances.py)."""
    torch_model, jax_model = models
    x = batches[1]
    expected = numpy_bce(numpy_autoencoder_logits(torch_weights.state_dict_from_model(torch_model), x, variant), x)
    t_loss, t_g, j_loss, j_g = loss_and_grads(tae, jae, torch_model, jax_model, (x,))
    assert_close(t_loss, expected, LOSS_RTOL, "torch loss vs numpy BCE")
    assert_close(j_loss, expected, LOSS_RTOL, "jax loss vs numpy BCE")
    assert len(t_g) == (12 if variant == "mlp" else 8)
    assert_state_dicts_close(j_g, t_g, GRAD_RTOL if variant == "mlp" else CONV_GRAD_RTOL, "gradient of")


def test_ten_adam_steps_follow_the_same_trajectory(models, batches):
    torch_model, jax_model = models
    start = torch_weights.state_dict_from_model(torch_model)
    t_losses, j_losses = trajectories(tae, jae, torch_model, jax_model, [(x,) for x in batches], AUTOENCODER.lr)
    assert_same_trajectory(torch_model, jax_model, start, t_losses, j_losses, AUTOENCODER.lr)
    assert t_losses[-1] < t_losses[0]  # it learns
