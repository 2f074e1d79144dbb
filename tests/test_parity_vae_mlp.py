"""MLP VAE: PyTorch and JAX compute the same thing (DESIGN.md, "Parity").

Same weights (converted both ways), same data and noise in; forward
outputs, loss, every gradient and a 10-step Adam trajectory out. Plus
checks against computations that share no code with either model: the
analytic KL of two Gaussians, and a plain numpy forward pass.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from jax_impl import vae_mlp as jvae
from jax_impl import weights as jax_weights
from shared.data import binarize, load_embedded_mnist
from shared.hparams import VAE_MLP
from shared.metrics import neg_elbo
from shared.weights import WeightsSpec, load_weights
from tests.numpy_reference import numpy_vae_mlp
from tests.parity import (
    DIRECTIONS,
    assert_both_equal_reference,
    assert_close,
    assert_same_trajectory,
    assert_state_dicts_close,
    jax_grads,
    paired_models,
    torch_grads,
    trajectories,
)
from tests.tolerances import FORWARD_RTOL, GRAD_RTOL, LOSS_RTOL
from torch_impl import vae_mlp as tvae
from torch_impl import weights as torch_weights

BATCH = VAE_MLP.batch_size


@pytest.fixture(scope="module")
def batches() -> list[tuple[np.ndarray, np.ndarray]]:
    """Ten real binarised MNIST batches with their reparameterisation noise, drawn once with numpy."""
    x = binarize(load_embedded_mnist().train_x)
    rng = np.random.default_rng(7)
    return [
        (x[i * BATCH : (i + 1) * BATCH], rng.standard_normal((BATCH, VAE_MLP.latent_dim), dtype=np.float32))
        for i in range(10)
    ]


@pytest.fixture(params=DIRECTIONS)
def models(request):
    return paired_models(tvae, jvae, request.param)


def test_parameter_shapes_and_counts_are_equal():
    torch_sd = torch_weights.state_dict_from_model(tvae.init_model(0))
    jax_model = jvae.init_model(0)
    jax_sd = jax_weights.state_dict_from_model(jax_model)
    assert {k: v.shape for k, v in torch_sd.items()} == {k: v.shape for k, v in jax_sd.items()}
    expected = (784 * 500 + 500) + 2 * (500 * 5 + 5) + (5 * 500 + 500) + (500 * 784 + 784)
    assert sum(p.numel() for p in tvae.init_model(0).parameters()) == expected == 793_294
    assert sum(np.size(p) for p in jax.tree.leaves(nnx.state(jax_model, nnx.Param))) == expected


def test_forward_outputs_agree(models, batches):
    torch_model, jax_model = models
    x, eps = batches[0]
    with torch.no_grad():
        t_logits, t_mu, t_logsigma = (a.cpu().numpy() for a in torch_model(torch.as_tensor(x), torch.as_tensor(eps)))
    j_logits, j_mu, j_logsigma = (np.asarray(a) for a in jax_model(jnp.asarray(x), jnp.asarray(eps)))
    assert_close(j_mu, t_mu, FORWARD_RTOL, "encoder mu")
    assert_close(j_logsigma, t_logsigma, FORWARD_RTOL, "encoder logsigma")
    assert_close(j_logits, t_logits, FORWARD_RTOL, "decoder logits")


def test_loss_and_every_gradient_agree(models, batches):
    torch_model, jax_model = models
    x, eps = batches[0]
    t_loss = tvae.loss_fn(torch_model, torch.as_tensor(x), torch.as_tensor(eps))
    t_loss.backward()
    j_loss, j_grads = nnx.value_and_grad(jvae.loss_fn)(jax_model, jnp.asarray(x), jnp.asarray(eps))
    assert_close(float(j_loss), t_loss.item(), LOSS_RTOL, "loss")
    t_g, j_g = torch_grads(torch_model), jax_grads(jax_model, j_grads)
    assert len(t_g) == 10
    assert_state_dicts_close(j_g, t_g, GRAD_RTOL, "gradient of")


def test_ten_adam_steps_follow_the_same_trajectory(models, batches):
    torch_model, jax_model = models
    start = torch_weights.state_dict_from_model(torch_model)
    t_losses, j_losses = trajectories(tvae, jvae, torch_model, jax_model, batches, VAE_MLP.lr)
    assert_same_trajectory(torch_model, jax_model, start, t_losses, j_losses, VAE_MLP.lr)


def test_kl_equals_the_analytic_kl_of_two_gaussians():
    """KL(N(mu, diag sigma^2) || N(0, I)) by the general formula for Gaussians."""
    rng = np.random.default_rng(0)
    mu = rng.normal(size=(6, 5)).astype(np.float32)
    logsigma = rng.normal(scale=0.7, size=(6, 5)).astype(np.float32)
    expected = []
    for m, ls in zip(mu.astype(np.float64), logsigma.astype(np.float64)):
        cov_q = np.diag(np.exp(2 * ls))  # q = N(m, cov_q), p = N(0, I)
        k = len(m)
        expected.append(0.5 * (np.trace(cov_q) + m @ m - k - np.log(np.linalg.det(cov_q))))
    t_kl = tvae.kl_divergence(torch.as_tensor(mu), torch.as_tensor(logsigma)).cpu().numpy()
    j_kl = np.asarray(jvae.kl_divergence(jnp.asarray(mu), jnp.asarray(logsigma)))
    dist_kl = torch.distributions.kl_divergence(
        torch.distributions.Normal(torch.as_tensor(mu), torch.exp(torch.as_tensor(logsigma))),
        torch.distributions.Normal(0.0, 1.0),
    ).sum(-1)
    np.testing.assert_allclose(t_kl, expected, rtol=1e-5)
    np.testing.assert_allclose(j_kl, expected, rtol=1e-5)
    np.testing.assert_allclose(dist_kl.cpu().numpy(), expected, rtol=1e-5)
    # The source's two wrong variants would not pass: '+ logsigma^2' and '+ 2*logsigma'.
    wrong = 0.5 * np.sum(np.exp(2 * logsigma) + mu**2 - 1 + logsigma**2, axis=1)
    assert not np.allclose(wrong, expected, rtol=1e-3)


def numpy_loss(state_dict: dict[str, np.ndarray], x: np.ndarray, eps: np.ndarray) -> float:
    """The Flux source's loss written in float64 numpy, with its own eps-in-the-log likelihood."""
    logits, mu, logsigma = numpy_vae_mlp(state_dict, x, eps)
    p = 1 / (1 + np.exp(-logits))
    tiny = 1e-12  # float64 analogue of the source's eps(Float32)
    log_lik = np.sum(x * np.log(p + tiny) + (1 - x) * np.log(1 - p + tiny))
    kl = 0.5 * np.sum(np.exp(2 * logsigma) + mu**2 - 1 - 2 * logsigma)
    l2 = sum(np.sum(v.astype(np.float64) ** 2) for k, v in state_dict.items() if k.startswith("decoder."))
    return float(-(log_lik - kl) / len(x) + 0.01 * l2)


def test_loss_equals_a_plain_numpy_forward_pass(models, batches):
    torch_model, jax_model = models
    x, eps = batches[3]
    expected = numpy_loss(torch_weights.state_dict_from_model(torch_model), x, eps)
    t_loss = tvae.loss_fn(torch_model, torch.as_tensor(x), torch.as_tensor(eps)).item()
    j_loss = float(jvae.loss_fn(jax_model, jnp.asarray(x), jnp.asarray(eps)))
    assert_both_equal_reference(t_loss, j_loss, expected, LOSS_RTOL, "loss")


def test_shared_metric_equals_the_loss_without_its_penalty(batches):
    """shared.metrics.neg_elbo (what training reports) is the loss minus the decoder's L2 term; its two
    parts are torch's summed binary cross-entropy and torch.distributions' KL."""
    model = tvae.init_model(3)
    x, eps = batches[1]
    xt, et = torch.as_tensor(x), torch.as_tensor(eps)
    with torch.no_grad():
        logits, mu, logsigma = model(xt, et)
        loss = float(tvae.loss_fn(model, xt, et))
        l2 = float(tvae.decoder_l2(model))
        bce = float(torch.nn.functional.binary_cross_entropy_with_logits(logits, xt, reduction="sum")) / len(x)
        kl = torch.distributions.kl_divergence(
            torch.distributions.Normal(mu, torch.exp(logsigma)), torch.distributions.Normal(0.0, 1.0)
        ).sum(-1).mean()
    metric = neg_elbo(x, logits.cpu().numpy(), mu.cpu().numpy(), logsigma.cpu().numpy())
    assert metric["neg_elbo"] == pytest.approx(loss - VAE_MLP.decoder_l2 * l2, rel=1e-5)
    assert metric["neg_log_likelihood"] == pytest.approx(bce, rel=1e-5)  # torch's BCE summed over the pixels
    assert metric["kl"] == pytest.approx(float(kl), rel=1e-5)  # torch.distributions' Gaussian KL


def test_weight_files_round_trip_both_ways(tmp_path):
    torch_model, jax_model = tvae.init_model(0), jvae.init_model(5)
    torch_weights.save_model(torch_model, tmp_path / "t.safetensors", WeightsSpec("vae_mlp", "default"))
    jax_weights.load_model(jax_model, tmp_path / "t.safetensors")
    jax_weights.save_model(jax_model, tmp_path / "tj.safetensors", WeightsSpec("vae_mlp", "default"))
    back = tvae.init_model(9)
    torch_weights.load_model(back, tmp_path / "tj.safetensors")
    original = torch_weights.state_dict_from_model(torch_model)
    for key, value in torch_weights.state_dict_from_model(back).items():
        np.testing.assert_array_equal(value, original[key], err_msg=key)  # bit for bit
    kernel = np.asarray(jax_model.encoder.hidden.kernel.get_value())
    np.testing.assert_array_equal(kernel, original["encoder.hidden.weight"].T)  # Dense kernel = weight.T
    assert load_weights(tmp_path / "tj.safetensors").keys() == original.keys()
