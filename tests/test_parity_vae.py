"""Convolutional VAE: PyTorch and JAX compute the same thing (DESIGN.md, "Parity").

Same weights (converted both ways), same binarised MNIST batches and
reparameterisation noise in; train-mode outputs with the BatchNorm running
statistics, eval-mode outputs, the negative ELBO, every gradient and a
10-step Adam trajectory out. Plus checks that share no code with either
model: a float64 numpy forward pass, the analytic KL of two Gaussians, and the
layers the model is built from (centre crop, transposed convolution and its
converter) against numpy.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from jax_impl import vae as jvae
from jax_impl import weights as jax_weights
from jax_impl.initializers import torch_bias_init, torch_transpose_kernel_init
from jax_impl.layers import ConvTransposeByPhases, conv_transpose_by_phases
from jax_impl.layers import center_crop as jax_center_crop
from jax_impl.training import CompiledStep, compute_in
from shared.data import binarize, shuffled_mnist
from shared.hparams import VAE
from shared.metrics import neg_elbo
from tests.numpy_reference import numpy_conv_transpose2d, numpy_neg_elbo, numpy_vae
from tests.parity import (
    DIRECTIONS,
    assert_both_equal_reference,
    assert_close,
    assert_state_dicts_close,
    jax_grads,
    jax_value_and_grad,
    loss_and_grads,
    paired_models,
    torch_grads,
)
from tests.tolerances import (
    BATCHNORM_TRAJECTORY_DISPLACEMENT_RTOL,
    BATCHNORM_TRAJECTORY_LOSS_RTOL,
    BATCHNORM_TRAJECTORY_STATS_RTOL,
    BATCHNORM_TRAJECTORY_STRICT_STEPS,
    CONV_GRAD_RTOL,
    FLOAT64_GRAD_RTOL,
    FORWARD_RTOL,
    LOSS_RTOL,
    TRAJECTORY_FLOAT64_RTOL,
    TRAJECTORY_LOSS_RTOL,
    TRAJECTORY_PARAM_ATOL,
    VAE_BATCHNORM_GRAD_RTOL,
    VAE_TRAJECTORY_RUNNING_MEAN_RTOL,
)
from torch_impl import vae as tvae
from torch_impl import weights as torch_weights
from torch_impl.layers import center_crop as torch_center_crop

BATCH = VAE.batch_size
BATCHNORMS = ("input_bn", "bn1", "bn2", "bn3")
# Biases a train-mode BatchNorm removes again (it subtracts the batch mean): their gradient is 0 up to
# rounding. The source has them; the BatchNorm's running mean absorbs them.
FREE_BIASES = {"conv1.bias": "bn1", "conv2.bias": "bn2", "deconv1.bias": "bn3"}
# Gradients that are 0 (the free biases) or nearly (input_bn's scale: bn1 undoes it, except for its
# eps and at the padded border) are compared relative to the largest gradient entry of their layer.
GRADIENT_SCALE = {"conv1.bias": "conv1.weight", "conv2.bias": "conv2.weight", "deconv1.bias": "deconv1.weight", "input_bn.weight": "input_bn.bias"}
AFTER_THE_LAST_BATCHNORM = ("bn3.", "deconv2.")  # gradients held to CONV_GRAD_RTOL; all others flow back through a BatchNorm
N_PARAMS = (
    2 * 1  # input_bn
    + (32 * 1 * 4 * 4 + 32) + 2 * 32  # conv1, bn1
    + (64 * 32 * 4 * 4 + 64) + 2 * 64  # conv2, bn2
    + 2 * (64 * 7 * 7 * 20 + 20)  # mean, logvar
    + (20 * 64 * 7 * 7 + 64 * 7 * 7)  # develop
    + (64 * 32 * 3 * 3 + 32) + 2 * 32  # deconv1, bn3
    + (32 * 1 * 3 * 3 + 1)  # deconv2
)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    """(train, test) binarised embedded MNIST images (B, 784), the training split shuffled once."""
    train_x, _, test_x = shuffled_mnist()
    return binarize(train_x), binarize(test_x)


@pytest.fixture(scope="module")
def batches(data) -> list[tuple[np.ndarray, np.ndarray]]:
    """Ten real binarised MNIST batches with their reparameterisation noise (B, 20), drawn once with numpy."""
    rng = np.random.default_rng(11)
    x = data[0]
    return [
        (x[i * BATCH : (i + 1) * BATCH], rng.standard_normal((BATCH, VAE.latent_dim), dtype=np.float32))
        for i in range(10)
    ]


@pytest.fixture(params=DIRECTIONS)
def direction(request) -> str:
    return request.param


@pytest.fixture
def models(direction):
    return paired_models(tvae, jvae, direction)


@pytest.fixture(scope="module", params=DIRECTIONS)
def trained_state(request, batches) -> dict[str, np.ndarray]:
    """A state_dict whose running statistics are not the initial 0 and 1, from either side.

    Three Adam steps on the direction's source side (the JAX one compiled).
    """
    if request.param == "torch->jax":
        torch_model = tvae.init_model(0)
        opt = tvae.make_optimizer(torch_model)
        for x, eps in batches[:3]:
            tvae.train_step(torch_model, opt, torch.as_tensor(x), torch.as_tensor(eps))
        return torch_weights.state_dict_from_model(torch_model)
    jax_model = jvae.init_model(0)
    step = CompiledStep(jvae.train_step, jax_model, jvae.make_optimizer(jax_model))
    for x, eps in batches[:3]:
        step(jnp.asarray(x), jnp.asarray(eps))
    step.write_back()
    return jax_weights.state_dict_from_model(jax_model)


@pytest.fixture
def trained_models(trained_state):
    """Paired models holding the trained state: the converters carry the running statistics."""
    torch_model, jax_model = tvae.init_model(1), jvae.init_model(2)
    torch_weights.load_state_dict(torch_model, trained_state)
    jax_weights.load_state_dict(jax_model, trained_state)
    return torch_model, jax_model


def running_statistics(state_dict: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v for k, v in state_dict.items() if ".running_" in k}


def torch_outputs(torch_model, x, eps) -> dict[str, np.ndarray]:
    with torch.no_grad():
        return {k: v.cpu().numpy() for k, v in tvae.eval_outputs(torch_model, torch.as_tensor(x), torch.as_tensor(eps)).items()}


def jax_outputs(jax_model, x, eps) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in jvae.eval_outputs(jax_model, jnp.asarray(x), jnp.asarray(eps)).items()}


def assert_outputs_close(actual: dict, logits, mean, logvar, what: str) -> None:
    assert list(actual) == ["logits", "mean", "logvar"]
    assert actual["logits"].shape == (BATCH, 784) and actual["mean"].shape == actual["logvar"].shape == (BATCH, VAE.latent_dim)
    assert_close(actual["mean"], mean, FORWARD_RTOL, f"{what} mean")
    assert_close(actual["logvar"], logvar, FORWARD_RTOL, f"{what} logvar")
    assert_close(actual["logits"], logits, FORWARD_RTOL, f"{what} logits")


def test_parameter_shapes_counts_and_keys_are_equal():
    torch_model, jax_model = tvae.init_model(0), jvae.init_model(0)
    torch_sd = torch_weights.state_dict_from_model(torch_model)
    jax_sd = jax_weights.state_dict_from_model(jax_model)
    assert list(torch_sd)[:3] == ["input_bn.weight", "input_bn.bias", "input_bn.running_mean"]
    assert sorted(jax_sd) == sorted(torch_sd)  # running statistics and counters included
    assert {k: v.shape for k, v in jax_sd.items()} == {k: v.shape for k, v in torch_sd.items()}
    assert {k: v.dtype for k, v in jax_sd.items()} == {k: v.dtype for k, v in torch_sd.items()}  # counters int64
    assert torch_sd["deconv1.weight"].shape == (64, 32, 3, 3)  # ConvTranspose2d: (in, out, kh, kw)
    assert sum(p.numel() for p in torch_model.parameters()) == N_PARAMS == 243_723
    assert sum(np.size(p) for p in jax.tree.leaves(nnx.state(jax_model, nnx.Param))) == N_PARAMS
    buffers = sorted(k for k, _ in torch_model.named_buffers())
    assert buffers == sorted(f"{bn}.{s}" for bn in BATCHNORMS for s in ("running_mean", "running_var", "num_batches_tracked"))
    assert buffers == sorted(k for k in jax_sd if "running_" in k or "num_batches" in k)


def test_initialisation_follows_torchs_scheme():
    """Weights and biases ~ U(+-1/sqrt(fan_in)), BatchNorms at (1, 0, 0, 1, 0), in both frameworks.

    fan_in is torch's, weight.shape[1] * kh * kw: for a ConvTranspose2d
    (weight (in, out, kh, kw)) that is out_channels * kh * kw, and a bound
    from in_channels would fail the max check (deconv1: 64 x 9 vs 32 x 9;
    deconv2: 32 x 9 vs 1 x 9).
    """
    for state_dict in (torch_weights.state_dict_from_model(tvae.init_model(0)), jax_weights.state_dict_from_model(jvae.init_model(0))):
        for layer in ("conv1", "conv2", "mean", "logvar", "develop", "deconv1", "deconv2"):
            w, b = state_dict[f"{layer}.weight"], state_dict[f"{layer}.bias"]
            bound = 1 / np.sqrt(np.prod(w.shape[1:]))
            assert np.abs(w).max() <= bound and np.abs(b).max() <= bound, layer
            assert np.abs(w).max() > 0.9 * bound, layer  # the whole interval is used (at least 288 entries)
            tol = 4 * 0.45 / np.sqrt(w.size)  # 4 standard errors of a uniform sample's standard deviation
            assert np.std(w) == pytest.approx(bound / np.sqrt(3), rel=tol), layer
        for bn in BATCHNORMS:
            np.testing.assert_array_equal(state_dict[f"{bn}.weight"], 1)
            np.testing.assert_array_equal(state_dict[f"{bn}.bias"], 0)
            np.testing.assert_array_equal(state_dict[f"{bn}.running_mean"], 0)
            np.testing.assert_array_equal(state_dict[f"{bn}.running_var"], 1)
            assert state_dict[f"{bn}.num_batches_tracked"] == 0


def test_train_mode_outputs_and_running_statistics_agree_with_numpy(models, batches):
    torch_model, jax_model = models
    x, eps = batches[0]
    logits, mean, logvar, running = numpy_vae(torch_weights.state_dict_from_model(torch_model), x, eps, batch_statistics=True)
    t_out, j_out = torch_outputs(torch_model, x, eps), jax_outputs(jax_model, x, eps)
    assert_outputs_close(j_out, t_out["logits"], t_out["mean"], t_out["logvar"], "jax vs torch, train-mode")
    assert_outputs_close(t_out, logits, mean, logvar, "torch vs numpy, train-mode")
    assert_outputs_close(j_out, logits, mean, logvar, "jax vs numpy, train-mode")
    t_sd, j_sd = torch_weights.state_dict_from_model(torch_model), jax_weights.state_dict_from_model(jax_model)
    assert_state_dicts_close(running_statistics(j_sd), running_statistics(t_sd), FORWARD_RTOL, "after one batch,")
    assert_state_dicts_close(running_statistics(t_sd), running, FORWARD_RTOL, "torch vs numpy after one batch,")
    for bn in BATCHNORMS:
        assert j_sd[f"{bn}.num_batches_tracked"] == t_sd[f"{bn}.num_batches_tracked"] == 1, bn
    assert np.abs(t_sd["bn3.running_mean"]).max() > 1e-3, "the running statistics did not move"


def test_eval_mode_outputs_agree_with_numpy(trained_models, data, batches):
    torch_model, jax_model = trained_models
    x, eps = data[1][:BATCH], batches[9][1]  # test images
    expected = numpy_vae(torch_weights.state_dict_from_model(torch_model), x, eps)[:3]
    torch_model.eval()
    jax_model.eval()
    t_out, j_out = torch_outputs(torch_model, x, eps), jax_outputs(jax_model, x, eps)
    assert_outputs_close(j_out, t_out["logits"], t_out["mean"], t_out["logvar"], "jax vs torch, eval-mode")
    assert_outputs_close(t_out, *expected, "torch vs numpy, eval-mode")
    assert_outputs_close(j_out, *expected, "jax vs numpy, eval-mode")
    # Eval mode really reads the running statistics: with batch statistics the logits differ.
    t_batch_stat_logits = torch_outputs(torch_model.train(), x, eps)["logits"]
    assert np.abs(t_batch_stat_logits - t_out["logits"]).max() > 100 * FORWARD_RTOL * np.abs(t_out["logits"]).max()
    assert int(jax_model.bn1.num_batches_tracked.get_value()) == 3  # eval mode counts nothing


def test_reconstruct_and_sample_agree(trained_models, data):
    """reconstruct = sigmoid(decode(mean)); sample: sigmoid(decode(z)) and pixels u < means; eval mode."""
    torch_model, jax_model = trained_models
    torch_model.eval()
    jax_model.eval()
    rng = np.random.default_rng(5)
    x = data[1][BATCH : 2 * BATCH]
    z = rng.standard_normal((BATCH, VAE.latent_dim), dtype=np.float32)
    u = rng.uniform(size=(BATCH, 784)).astype(np.float32)
    state_dict = torch_weights.state_dict_from_model(torch_model)
    recon = 1 / (1 + np.exp(-numpy_vae(state_dict, x, np.zeros_like(z))[0]))  # decoded at z = mean
    means = 1 / (1 + np.exp(-numpy_vae(state_dict, x, None, z=z)[0]))  # decoded at z
    with torch.no_grad():
        t_recon = tvae.reconstruct(torch_model, torch.as_tensor(x))["images"].cpu().numpy()
        t_sample = {k: v.cpu().numpy() for k, v in tvae.sample(torch_model, torch.as_tensor(z), torch.as_tensor(u)).items()}
    j_recon = np.asarray(jvae.reconstruct(jax_model, jnp.asarray(x))["images"])
    j_sample = {k: np.asarray(v) for k, v in jvae.sample(jax_model, jnp.asarray(z), jnp.asarray(u)).items()}
    assert_both_equal_reference(t_recon, j_recon, recon, FORWARD_RTOL, "reconstruction")
    assert_both_equal_reference(t_sample["means"], j_sample["means"], means, FORWARD_RTOL, "sample means")
    decided = np.abs(u - means) > 1e-5  # where rounding cannot decide between 0 and 1
    assert decided.mean() > 0.99
    for name, pixels in (("torch", t_sample["pixels"]), ("jax", j_sample["pixels"])):
        assert pixels.dtype == np.float32 and set(np.unique(pixels)) <= {0.0, 1.0}, name
        np.testing.assert_array_equal(pixels[decided], (u < means)[decided], err_msg=name)


def assert_gradients_close(actual: dict, expected: dict, rtol_behind: float, rtol_after: float, what: str) -> None:
    """Each gradient relative to its largest entry (or its layer's, GRADIENT_SCALE): rtol_after for bn3 and deconv2, rtol_behind otherwise."""
    assert sorted(actual) == sorted(expected), f"{what}: keys differ"
    for key in expected:
        rtol = rtol_after if key.startswith(AFTER_THE_LAST_BATCHNORM) else rtol_behind
        scale = np.abs(expected[GRADIENT_SCALE.get(key, key)]).max()
        err = np.abs(np.asarray(actual[key], np.float64) - expected[key]).max()
        assert err <= rtol * scale, f"{what} '{key}': max |diff| {err:.3g} > {rtol:g} x {scale:.3g}"


def test_loss_is_the_negative_elbo_and_every_gradient_agrees(models, batches):
    """Train mode (batch statistics); why most gradients are held to VAE_BATCHNORM_GRAD_RTOL: tests/tolerances.py."""
    torch_model, jax_model = models
    x, eps = batches[1]
    expected = numpy_neg_elbo(*numpy_vae(torch_weights.state_dict_from_model(torch_model), x, eps, batch_statistics=True)[:3], x)["neg_elbo"]
    t_loss, t_g, j_loss, j_g = loss_and_grads(tvae, jvae, torch_model, jax_model, (x, eps))
    assert_close(t_loss, expected, LOSS_RTOL, "torch loss vs numpy -ELBO")
    assert_close(j_loss, expected, LOSS_RTOL, "jax loss vs numpy -ELBO")
    assert 100 < expected < 1000  # nats per image: summed over 784 pixels, not averaged
    assert sorted(t_g) == sorted(name for name, _ in torch_model.named_parameters())  # parameters only
    assert_gradients_close(j_g, t_g, VAE_BATCHNORM_GRAD_RTOL, CONV_GRAD_RTOL, "gradient of")
    for bias in FREE_BIASES:  # 0 up to rounding in both
        scale = np.abs(t_g[GRADIENT_SCALE[bias]]).max()
        assert np.abs(t_g[bias]).max() <= CONV_GRAD_RTOL * scale and np.abs(j_g[bias]).max() <= CONV_GRAD_RTOL * scale, bias


def _float64(a: jax.Array) -> jax.Array:
    return a.astype(jnp.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a


def float64_models():
    """Paired models (torch -> JAX) converted to float64; use the JAX one inside jax.enable_x64."""
    torch_model, jax_model = paired_models(tvae, jvae, "torch->jax")
    torch_model.double()
    with jax.enable_x64(True):
        nnx.update(jax_model, jax.tree.map(_float64, nnx.state(jax_model, (nnx.Param, nnx.BatchStat))))
    return torch_model, jax_model


def test_every_gradient_agrees_in_float64(batches):
    """The float32 differences above are rounding: in float64 every gradient agrees to FLOAT64_GRAD_RTOL."""
    x, eps = (a.astype(np.float64) for a in batches[1])
    torch_model, jax_model = float64_models()
    with jax.enable_x64(True):
        t_loss = tvae.loss_fn(torch_model, torch.as_tensor(x), torch.as_tensor(eps))
        t_loss.backward()
        j_loss, j_grads = jax_value_and_grad(jvae.loss_fn, jax_model, jnp.asarray(x), jnp.asarray(eps))
        t_g, j_g = torch_grads(torch_model), jax_grads(jax_model, j_grads)
        t_loss, j_loss = t_loss.item(), float(j_loss)
    assert t_g["conv1.weight"].dtype == j_g["conv1.weight"].dtype == np.float64
    assert_close(j_loss, t_loss, FLOAT64_GRAD_RTOL, "float64 loss")
    assert_gradients_close(j_g, t_g, FLOAT64_GRAD_RTOL, FLOAT64_GRAD_RTOL, "float64 gradient of")
    for bias in FREE_BIASES:  # 0 up to float64 rounding
        assert np.abs(t_g[bias]).max() <= 1e-12 * np.abs(t_g[GRADIENT_SCALE[bias]]).max(), bias


def adam_steps(torch_model, jax_model, batches, lr: float):
    """tests.parity.trajectories, also recording the free biases in effect at each step, for bias_free_running_means."""
    t_opt, j_opt = tvae.make_optimizer(torch_model, lr), jvae.make_optimizer(jax_model, lr)
    j_step = CompiledStep(jvae.train_step, jax_model, j_opt)
    t_losses, j_losses, t_biases, j_biases = [], [], [], []
    for x, eps in batches:
        j_step.write_back()  # the JAX model's variables up to date, to read its biases
        t_biases.append({k: v for k, v in torch_weights.state_dict_from_model(torch_model).items() if k in FREE_BIASES})
        j_biases.append({k: v for k, v in jax_weights.state_dict_from_model(jax_model).items() if k in FREE_BIASES})
        t_losses.append(float(tvae.train_step(torch_model, t_opt, torch.as_tensor(x), torch.as_tensor(eps))))
        j_losses.append(float(j_step(jnp.asarray(x), jnp.asarray(eps))))
    j_step.write_back()
    return t_losses, j_losses, t_biases, j_biases


def bias_free_running_means(state_dict: dict[str, np.ndarray], biases_per_step: list[dict]) -> dict[str, np.ndarray]:
    """The running means of bn1, bn2, bn3 minus what the free bias before each contributed to them.

    After T steps running_mean = sum_t m (1 - m)^(T-1-t) (batch mean without the bias_t + bias_t),
    m the momentum (from 0 at the start). The rest depends only on the other parameters.
    """
    m, steps = VAE.batchnorm_momentum, len(biases_per_step)
    out = {}
    for bias, bn in FREE_BIASES.items():
        contribution = sum(m * (1 - m) ** (steps - 1 - t) * b[bias].astype(np.float64) for t, b in enumerate(biases_per_step))
        out[f"{bn}.running_mean"] = state_dict[f"{bn}.running_mean"] - contribution
    return out


def other_running_statistics(state_dict: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The running statistics no free bias enters: every running_var and input_bn's running_mean."""
    return {k: v for k, v in running_statistics(state_dict).items() if k.endswith("running_var") or k.startswith("input_bn.")}


def test_ten_adam_steps_follow_the_same_trajectory(models, batches):
    """The float32 steps users run, held to the CNN's BATCHNORM_TRAJECTORY_* bounds, the running means to
    VAE_TRAJECTORY_RUNNING_MEAN_RTOL (why: tests/tolerances.py).

    The free biases are the exception: a float32 gradient that is 0 up to
    rounding is, to Adam, a gradient like any other, and it divides it by its
    own magnitude; each framework (and torch float32 vs float64) walks them by
    up to lr per step in directions of its own rounding. They change no
    train-mode output, so they are only held to 2 lr per step apart, and the
    running means they enter are compared without them (bias_free_running_means).
    """
    torch_model, jax_model = models
    start = torch_weights.state_dict_from_model(torch_model)
    t_losses, j_losses, t_biases, j_biases = adam_steps(torch_model, jax_model, batches, VAE.lr)
    for i, (t_loss, j_loss) in enumerate(zip(t_losses, j_losses)):
        rtol = TRAJECTORY_LOSS_RTOL if i < BATCHNORM_TRAJECTORY_STRICT_STEPS else BATCHNORM_TRAJECTORY_LOSS_RTOL
        assert_close(j_loss, t_loss, rtol, f"loss at step {i + 1}")
    t_sd, j_sd = torch_weights.state_dict_from_model(torch_model), jax_weights.state_dict_from_model(jax_model)
    params = [name for name, _ in torch_model.named_parameters() if name not in FREE_BIASES]
    moved = np.sqrt(sum(np.sum((t_sd[k].astype(np.float64) - start[k]) ** 2) for k in params))
    apart = np.sqrt(sum(np.sum((j_sd[k].astype(np.float64) - t_sd[k]) ** 2) for k in params))
    assert apart <= BATCHNORM_TRAJECTORY_DISPLACEMENT_RTOL * moved, f"after 10 steps the parameters are {apart:.3g} apart, moved {moved:.3g}"
    assert max(float(np.abs(t_sd[k] - start[k]).max()) for k in params) > 10 * TRAJECTORY_PARAM_ATOL, "parameters barely moved"
    for bias in FREE_BIASES:
        assert np.abs(j_sd[bias].astype(np.float64) - t_sd[bias]).max() <= 2 * VAE.lr * len(batches), bias
    assert_state_dicts_close(other_running_statistics(j_sd), other_running_statistics(t_sd), BATCHNORM_TRAJECTORY_STATS_RTOL, "after 10 steps,")
    assert_state_dicts_close(
        bias_free_running_means(j_sd, j_biases), bias_free_running_means(t_sd, t_biases), VAE_TRAJECTORY_RUNNING_MEAN_RTOL, "after 10 steps, bias-free"
    )
    for bn in BATCHNORMS:
        assert j_sd[f"{bn}.num_batches_tracked"] == t_sd[f"{bn}.num_batches_tracked"] == 10, bn


@pytest.mark.slow  # 10 s; the float32 trajectory stays in the default suite
def test_ten_adam_steps_agree_to_float64_rounding(batches):
    """The same 10 compiled steps in float64: the float32 drift above is rounding, not a different computation.

    In float64 the free biases' gradients (~1e-14) are far below Adam's
    eps (1e-8), so they barely move: their float32 walk above is rounding too.
    """
    torch_model, jax_model = float64_models()
    start = torch_weights.state_dict_from_model(torch_model)
    with jax.enable_x64(True):
        batches64 = [(x.astype(np.float64), eps.astype(np.float64)) for x, eps in batches]
        t_losses, j_losses, t_biases, j_biases = adam_steps(torch_model, jax_model, batches64, VAE.lr)
        j_sd = jax_weights.state_dict_from_model(jax_model)
    for i, (t_loss, j_loss) in enumerate(zip(t_losses, j_losses)):
        assert_close(j_loss, t_loss, TRAJECTORY_FLOAT64_RTOL, f"float64 loss at step {i + 1}")
    t_sd = torch_weights.state_dict_from_model(torch_model)
    assert j_sd["conv1.weight"].dtype == t_sd["conv1.weight"].dtype == np.float64
    params = {name: t_sd[name] for name, _ in torch_model.named_parameters() if name not in FREE_BIASES}
    assert_state_dicts_close({k: j_sd[k] for k in params}, params, TRAJECTORY_FLOAT64_RTOL, "after 10 float64 steps,")
    for bias in FREE_BIASES:
        for sd in (t_sd, j_sd):
            assert np.abs(sd[bias] - start[bias]).max() < 1e-3 * VAE.lr, bias
    assert_state_dicts_close(other_running_statistics(j_sd), other_running_statistics(t_sd), TRAJECTORY_FLOAT64_RTOL, "after 10 float64 steps,")
    assert_state_dicts_close(
        bias_free_running_means(j_sd, j_biases), bias_free_running_means(t_sd, t_biases), TRAJECTORY_FLOAT64_RTOL, "after 10 float64 steps, bias-free"
    )


def test_kl_equals_the_analytic_kl_of_two_gaussians():
    """KL(N(mean, diag exp(logvar)) || N(0, I)) by the general formula for two Gaussians, and by Monte Carlo."""
    rng = np.random.default_rng(0)
    mean = rng.normal(size=(6, VAE.latent_dim)).astype(np.float32)
    logvar = rng.normal(scale=1.0, size=(6, VAE.latent_dim)).astype(np.float32)
    expected = []
    for m, lv in zip(mean.astype(np.float64), logvar.astype(np.float64)):
        cov_q, cov_p, mean_p = np.diag(np.exp(lv)), np.eye(len(m)), np.zeros(len(m))  # q = N(m, cov_q), p = N(0, I)
        diff = mean_p - m
        expected.append(0.5 * (
            np.trace(np.linalg.solve(cov_p, cov_q)) + diff @ np.linalg.solve(cov_p, diff) - len(m)
            + np.linalg.slogdet(cov_p)[1] - np.linalg.slogdet(cov_q)[1]
        ))
    t_kl = tvae.kl_divergence(torch.as_tensor(mean), torch.as_tensor(logvar)).cpu().numpy()
    j_kl = np.asarray(jvae.kl_divergence(jnp.asarray(mean), jnp.asarray(logvar)))
    np.testing.assert_allclose(t_kl, expected, rtol=1e-5)
    np.testing.assert_allclose(j_kl, expected, rtol=1e-5)
    # Monte Carlo, E_q[log q(z) - log p(z)] with z drawn through the models' own reparameterize:
    # it is logvar the log-variance (a log standard deviation would give another KL).
    n = 200_000
    eps = rng.standard_normal((n, VAE.latent_dim)).astype(np.float32)
    for arch, to, back in ((tvae, torch.as_tensor, lambda a: a.cpu().numpy()), (jvae, jnp.asarray, np.asarray)):
        z = back(arch.reparameterize(to(np.repeat(mean[:1], n, 0)), to(np.repeat(logvar[:1], n, 0)), to(eps))).astype(np.float64)
        m, lv = mean[0].astype(np.float64), logvar[0].astype(np.float64)
        log_ratio = np.sum(-0.5 * (z - m) ** 2 / np.exp(lv) - 0.5 * lv + 0.5 * z**2, axis=1)  # log q(z) - log p(z)
        assert abs(log_ratio.mean() - expected[0]) <= 5 * log_ratio.std() / np.sqrt(n), arch.__name__


def test_center_crop_is_the_centre_slice():
    """Both center_crops against numpy slices written out by hand, odd and even margins, height != width."""
    x = np.random.default_rng(0).normal(size=(2, 3, 31, 30)).astype(np.float32)
    for (height, width), (top, left) in (((28, 28), (1, 1)), ((29, 27), (1, 1)), ((30, 30), (0, 0)), ((7, 9), (12, 10))):
        expected = x[:, :, top : top + height, left : left + width]
        np.testing.assert_array_equal(torch_center_crop(torch.as_tensor(x), height, width).cpu().numpy(), expected)
        j_out = np.asarray(jax_center_crop(jnp.asarray(x.transpose(0, 2, 3, 1)), height, width)).transpose(0, 3, 1, 2)
        np.testing.assert_array_equal(j_out, expected)
    np.testing.assert_array_equal(torch_center_crop(torch.as_tensor(x[:, :, :29, :29]), 28, 28).cpu().numpy(), x[:, :, :28, :28])  # the VAE's


def jax_conv_transpose2d(c_in: int, c_out: int, kernel: int, stride: int, padding: int, seed: int, one_pixel: bool = False) -> nnx.ConvTranspose:
    """What a model writes for torch's ConvTranspose2d(c_in, c_out, kernel, stride, padding): ConvTransposeByPhases when strided
    or fed a 1x1 input."""
    edge = kernel - 1 - padding
    layer = ConvTransposeByPhases if stride > 1 or one_pixel else nnx.ConvTranspose
    return layer(c_in, c_out, (kernel, kernel), strides=(stride, stride), padding=((edge, edge), (edge, edge)),
                 kernel_init=torch_transpose_kernel_init, bias_init=torch_bias_init(c_out * kernel * kernel), rngs=nnx.Rngs(seed))


@pytest.mark.parametrize("stride, padding, kernel, c_out", [(2, 0, 3, 5), (2, 1, 3, 5), (1, 1, 3, 5), (2, 1, 4, 5), (2, 1, 3, 1)])
def test_conv_transpose2d_converts_both_ways(stride, padding, kernel, c_out):
    """A torch ConvTranspose2d and its nnx.ConvTranspose conversion compute the same, and what numpy does; weights round-trip bit for bit."""
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 9, 7)).astype(np.float32)  # height != width
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        t_conv = torch.nn.ConvTranspose2d(3, c_out, kernel, stride=stride, padding=padding)
    j_conv = jax_conv_transpose2d(3, c_out, kernel, stride, padding, seed=1)
    t_sd = torch_weights.state_dict_from_model(t_conv)
    jax_weights.load_state_dict(j_conv, t_sd)
    flipped = t_sd["weight"][:, :, ::-1, ::-1].transpose(2, 3, 0, 1)  # (in, out, kh, kw) -> (kh, kw, in, out), flipped in space
    np.testing.assert_array_equal(np.asarray(j_conv.kernel.get_value()), flipped)
    with torch.no_grad():
        t_out = t_conv(torch.as_tensor(x)).cpu().numpy()
    j_out = np.asarray(j_conv(jnp.asarray(x.transpose(0, 2, 3, 1)))).transpose(0, 3, 1, 2)  # NHWC in and out
    expected = numpy_conv_transpose2d(x.astype(np.float64), t_sd["weight"].astype(np.float64), t_sd["bias"], stride, padding)
    assert expected.shape == (2, c_out, (9 - 1) * stride - 2 * padding + kernel, (7 - 1) * stride - 2 * padding + kernel)
    assert_both_equal_reference(t_out, j_out, expected, FORWARD_RTOL, "conv_transpose")
    back = jax_weights.state_dict_from_model(j_conv)
    assert back.keys() == t_sd.keys()
    for key in t_sd:
        np.testing.assert_array_equal(back[key], t_sd[key], err_msg=key)
    # ... and the other way: JAX's own weights into torch.
    j_conv = jax_conv_transpose2d(3, c_out, kernel, stride, padding, seed=2)
    torch_weights.load_state_dict(t_conv, jax_weights.state_dict_from_model(j_conv))
    with torch.no_grad():
        t_out = t_conv(torch.as_tensor(x)).cpu().numpy()
    j_out = np.asarray(j_conv(jnp.asarray(x.transpose(0, 2, 3, 1)))).transpose(0, 3, 1, 2)
    assert_close(j_out, t_out, FORWARD_RTOL, "conv_transpose outputs, jax weights")
    assert np.abs(j_out).max() > 0.1


@pytest.mark.parametrize("stride, padding, kernel, height, width", [(2, 0, 3, 7, 8), (2, 1, 3, 15, 16), (2, 1, 4, 7, 8), (2, 1, 4, 14, 15),
                                                                    (1, 0, 7, 1, 1), (1, 2, 7, 1, 1), (2, 1, 4, 1, 1),  # one pixel: the GAN's first
                                                                    pytest.param(3, 2, 5, 6, 7, marks=pytest.mark.slow)])  # stride 3: 7 s
def test_conv_transpose_by_phases_equals_lax_conv_transpose(stride, padding, kernel, height, width):
    """The CPU form of a strided transposed convolution (matmuls per output phase; of a 1x1 input, one product with every tap)
    against nnx.ConvTranspose's lax.conv_transpose: outputs and both gradients, and in bfloat16 (compute_in) the same float32 result."""
    layer = jax_conv_transpose2d(6, 4, kernel, stride, padding, seed=0, one_pixel=height == width == 1)
    assert isinstance(layer, ConvTransposeByPhases)
    x = jnp.asarray(np.random.default_rng(1).standard_normal((3, height, width, 6)), jnp.float32)
    kernel_value, bias = layer.kernel.get_value(), layer.bias.get_value()

    def by_phases(x, k):
        return jnp.sum(jnp.sin(conv_transpose_by_phases(x, k, stride, padding) + bias))

    def by_lax(x, k):
        edge = kernel - 1 - padding
        y = jax.lax.conv_transpose(x, k, (stride, stride), ((edge, edge), (edge, edge)), dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return jnp.sum(jnp.sin(y + bias))

    expected = nnx.ConvTranspose.__call__(layer, x)  # the parent class: lax.conv_transpose
    assert_close(conv_transpose_by_phases(x, kernel_value, stride, padding) + bias, expected, FORWARD_RTOL, "outputs")
    assert_close(layer(x), expected, FORWARD_RTOL, "ConvTransposeByPhases layer")
    gradients = [jax.jit(jax.grad(f, (0, 1)))(x, kernel_value) for f in (by_phases, by_lax)]  # compiled: eagerly, each primitive compiles alone
    for got, want, name in zip(*gradients, ("input", "kernel")):
        assert_close(got, want, CONV_GRAD_RTOL, f"{name} gradient")
    compute_in(layer, jnp.bfloat16)  # bfloat16 products with float32 results, as nnx.ConvTranspose computes with the same knobs
    got, want = layer(x), nnx.ConvTranspose.__call__(layer, x)
    assert got.dtype == want.dtype == jnp.float32
    assert_close(got, want, FORWARD_RTOL, "bfloat16 products")
    assert np.max(np.abs(got - expected)) > 10 * FORWARD_RTOL * np.max(np.abs(expected)), "bfloat16 not used"


def test_state_dicts_round_trip_both_ways(trained_models):
    """torch -> JAX -> torch through the converters, bit for bit, running statistics and counters included."""
    torch_model, _ = trained_models
    original = torch_weights.state_dict_from_model(torch_model)
    assert original["bn3.num_batches_tracked"] == 3
    jax_model = jvae.init_model(5)
    jax_weights.load_state_dict(jax_model, original)
    back = tvae.init_model(9)
    torch_weights.load_state_dict(back, jax_weights.state_dict_from_model(jax_model))
    for key, value in torch_weights.state_dict_from_model(back).items():
        assert value.dtype == original[key].dtype, key
        np.testing.assert_array_equal(value, original[key], err_msg=key)  # bit for bit
    np.testing.assert_array_equal(np.asarray(jax_model.mean.kernel.get_value()), original["mean.weight"].T)
    np.testing.assert_array_equal(np.asarray(jax_model.bn3.var.get_value()), original["bn3.running_var"])


def test_shared_metric_equals_the_loss(batches):
    """shared.metrics.neg_elbo (log standard deviations) with logsigma = logvar / 2 is this VAE's loss (train mode)."""
    model = tvae.init_model(3)
    x, eps = batches[1]
    with torch.no_grad():
        out = {k: v.cpu().numpy() for k, v in tvae.eval_outputs(model, torch.as_tensor(x), torch.as_tensor(eps)).items()}
        loss = float(tvae.loss_fn(model, torch.as_tensor(x), torch.as_tensor(eps)))
    metric = neg_elbo(x, out["logits"], out["mean"], out["logvar"] / 2)
    assert metric["neg_elbo"] == pytest.approx(loss, rel=1e-5)
