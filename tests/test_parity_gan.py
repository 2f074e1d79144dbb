"""DCGAN: PyTorch and JAX compute the same thing (DESIGN.md, "Parity").

Same weights (converted both ways), the same real MNIST batches (scaled to
[-1, 1]) and the same numpy latents in; generator images and discriminator
logits (train mode with their running statistics, and eval mode), the
discriminator's and the generator's loss and every gradient, the running
statistics after each of the two steps, and 10 alternating D/G Adam steps
out; the gradients and the 10 steps in float64 too, where the two must agree
to rounding. Plus checks that share no code with either model: DCGAN's
initialisation statistics, and a float64 numpy forward pass of both networks
(transposed convolution by its definition).
"""
from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from jax_impl import gan as jgan
from jax_impl import weights as jax_weights
from jax_impl.training import CompiledStep
from shared.data import shuffled_mnist
from shared.hparams import GAN
from shared.weights import WeightsSpec
from tests.numpy_reference import numpy_batchnorm, numpy_conv2d, numpy_conv_transpose2d
from tests.parity import (
    DIRECTIONS,
    assert_both_equal_reference,
    assert_close,
    assert_state_dicts_close,
    jax_grads,
    jax_value_and_grad,
    paired_models,
    torch_grads,
)
from tests.tolerances import (
    BATCHNORM_TRAJECTORY_DISPLACEMENT_RTOL,
    BATCHNORM_TRAJECTORY_STATS_RTOL,
    FLOAT64_GRAD_RTOL,
    FORWARD_RTOL,
    GAN_GENERATOR_DISPLACEMENT_RTOL,
    GAN_GRAD_RTOL,
    GAN_TRAJECTORY_LOSS_RTOL,
    LOSS_RTOL,
    TRAJECTORY_FLOAT64_RTOL,
    TRAJECTORY_OUTLIER_MAX_FRACTION,
    TRAJECTORY_PARAM_ATOL,
)
from torch_impl import gan as tgan
from torch_impl import weights as torch_weights

BATCH = GAN.batch_size
G_COUNTERS = ("generator.bn1.num_batches_tracked", "generator.bn2.num_batches_tracked")
D_COUNTERS = ("discriminator.bn2.num_batches_tracked",)
N_GENERATOR = (100 * 128 * 7 * 7) + 2 * 128 + (128 * 64 * 4 * 4) + 2 * 64 + (64 * 1 * 4 * 4)
N_DISCRIMINATOR = (64 * 1 * 4 * 4) + (128 * 64 * 4 * 4) + 2 * 128 + (1 * 128 * 7 * 7)
WEIGHTS = ("generator.deconv1.weight", "generator.deconv2.weight", "generator.deconv3.weight",
           "discriminator.conv1.weight", "discriminator.conv2.weight", "discriminator.conv3.weight")  # fmt: skip
BATCHNORMS = ("generator.bn1", "generator.bn2", "discriminator.bn2")
# The float64 runs use the first 16 images and latents of each batch: float64 convolutions have
# no optimised kernels in either framework (torch falls back to slow_conv2d), and a float64 step
# of both at 64 takes ~1.4 s, 7x float32's. The batch size has no part in what they show.
FLOAT64_BATCH = 16


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    """(train images, test images) of the embedded MNIST split scaled to [-1, 1], the training set shuffled once."""
    train_x, _, test_x = shuffled_mnist()
    return train_x * 2 - 1, test_x * 2 - 1


@pytest.fixture(scope="module")
def batches(data) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Ten (real images (B, 784), discriminator latents z_d, generator latents z_g), the latents N(0, 1) from numpy."""
    x = data[0]
    rng = np.random.default_rng(11)
    latents = rng.standard_normal((10, 2, BATCH, GAN.latent_dim)).astype(np.float32)
    return [(x[i * BATCH : (i + 1) * BATCH], latents[i, 0], latents[i, 1]) for i in range(10)]


@pytest.fixture(params=DIRECTIONS)
def direction(request) -> str:
    return request.param


@pytest.fixture
def models(direction):
    return paired_models(tgan, jgan, direction)


@pytest.fixture
def trained_models(direction, batches):
    """Paired models whose running statistics are not the initial 0 and 1.

    Three alternating steps on the direction's source side (the JAX one
    compiled), then converted to the other side: the converters carry the statistics.
    """
    torch_model, jax_model = tgan.init_model(0), jgan.init_model(1)
    if direction == "torch->jax":
        opt = tgan.make_optimizer(torch_model)
        for batch in batches[:3]:
            tgan.train_step(torch_model, opt, *map(torch.as_tensor, batch))
        jax_weights.load_state_dict(jax_model, torch_weights.state_dict_from_model(torch_model))
    else:
        step = CompiledStep(jgan.train_step, jax_model, jgan.make_optimizer(jax_model))
        for batch in batches[:3]:
            step(*map(jnp.asarray, batch))
        step.write_back()
        torch_weights.load_state_dict(torch_model, jax_weights.state_dict_from_model(jax_model))
    return torch_model, jax_model


def state_dicts(torch_model, jax_model) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    return torch_weights.state_dict_from_model(torch_model), jax_weights.state_dict_from_model(jax_model)


def running_statistics(state_dict: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v for k, v in state_dict.items() if ".running_" in k}


def _float64_params(state_dict: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix) :]: v.astype(np.float64) for k, v in state_dict.items() if k.startswith(prefix)}


def _batchnorm(a: np.ndarray, p: dict[str, np.ndarray], name: str, batch_statistics: bool) -> np.ndarray:
    mean, var = (None, None) if batch_statistics else (p[f"{name}.running_mean"], p[f"{name}.running_var"])
    return numpy_batchnorm(a, p[f"{name}.weight"], p[f"{name}.bias"], mean, var, GAN.batchnorm_eps)


def numpy_generator(state_dict: dict[str, np.ndarray], z: np.ndarray, batch_statistics: bool) -> np.ndarray:
    """G(z) in float64 numpy from a torch state_dict, (B, 784): eval mode, or train mode with `batch_statistics`."""
    p = _float64_params(state_dict, "generator.")
    a = z.astype(np.float64).reshape(len(z), -1, 1, 1)
    a = np.maximum(_batchnorm(numpy_conv_transpose2d(a, p["deconv1.weight"]), p, "bn1", batch_statistics), 0)
    a = np.maximum(_batchnorm(numpy_conv_transpose2d(a, p["deconv2.weight"], stride=2, padding=1), p, "bn2", batch_statistics), 0)
    return np.tanh(numpy_conv_transpose2d(a, p["deconv3.weight"], stride=2, padding=1)).reshape(len(z), -1)


def numpy_discriminator(state_dict: dict[str, np.ndarray], x: np.ndarray, batch_statistics: bool) -> np.ndarray:
    """D(x) in float64 numpy from a torch state_dict: one logit per image, (B,)."""
    p = _float64_params(state_dict, "discriminator.")

    def leaky_relu(a):
        return np.where(a > 0, a, GAN.leaky_relu_slope * a)

    a = x.astype(np.float64).reshape(-1, 1, 28, 28)
    a = leaky_relu(numpy_conv2d(a, p["conv1.weight"], stride=2, padding=1))
    a = leaky_relu(_batchnorm(numpy_conv2d(a, p["conv2.weight"], stride=2, padding=1), p, "bn2", batch_statistics))
    return numpy_conv2d(a, p["conv3.weight"]).reshape(-1)


def numpy_bce_with_logits(logits: np.ndarray, target: float) -> float:
    """Mean binary cross-entropy of sigmoid(logits) against a constant target, in float64."""
    return float(np.mean(np.logaddexp(0, logits) - target * logits))


def test_parameter_shapes_counts_and_keys_are_equal():
    torch_model, jax_model = tgan.init_model(0), jgan.init_model(0)
    torch_sd, jax_sd = state_dicts(torch_model, jax_model)
    assert sorted(jax_sd) == sorted(torch_sd)  # running statistics and counters included
    assert {k: v.shape for k, v in jax_sd.items()} == {k: v.shape for k, v in torch_sd.items()}
    assert {k: v.dtype for k, v in jax_sd.items()} == {k: v.dtype for k, v in torch_sd.items()}  # counters int64
    assert sum(p.numel() for p in torch_model.generator.parameters()) == N_GENERATOR == 759_680
    assert sum(p.numel() for p in torch_model.discriminator.parameters()) == N_DISCRIMINATOR == 138_624
    assert sum(np.size(p) for p in jax.tree.leaves(nnx.state(jax_model.generator, nnx.Param))) == N_GENERATOR
    assert sum(np.size(p) for p in jax.tree.leaves(nnx.state(jax_model.discriminator, nnx.Param))) == N_DISCRIMINATOR
    assert sorted(k for k, _ in torch_model.named_buffers()) == sorted(k for k in jax_sd if "running_" in k or "num_batches" in k)
    assert all(".bias" not in k or k.rsplit(".", 2)[-2].startswith("bn") for k in torch_sd)  # no convolution biases


def test_initialisation_is_dcgans():
    """Conv weights ~ N(0, 0.02), BatchNorm scales ~ N(1, 0.02) and biases 0, in both frameworks (torch's default would fail)."""
    for state_dict in state_dicts(tgan.init_model(0), jgan.init_model(0)):
        for key in WEIGHTS:
            w = state_dict[key].astype(np.float64)
            assert abs(w.mean()) <= 5 * GAN.init_std / np.sqrt(w.size), key
            assert w.std() == pytest.approx(GAN.init_std, rel=0.1), key  # >= 1,024 draws: 2% standard error
        for bn in BATCHNORMS:
            scale = state_dict[f"{bn}.weight"].astype(np.float64)
            assert abs(scale.mean() - 1) <= 5 * GAN.init_std / np.sqrt(scale.size), bn
            assert scale.std() == pytest.approx(GAN.init_std, rel=0.35), bn  # 64 or 128 draws: <= 9% standard error
            np.testing.assert_array_equal(state_dict[f"{bn}.bias"], 0)
            np.testing.assert_array_equal(state_dict[f"{bn}.running_mean"], 0)
            np.testing.assert_array_equal(state_dict[f"{bn}.running_var"], 1)
            assert state_dict[f"{bn}.num_batches_tracked"] == 0


def test_train_mode_outputs_and_running_statistics_agree(models, batches):
    """G(z) and D(x) with batch statistics, against each other and float64 numpy; then the updated statistics."""
    torch_model, jax_model = models
    x, z, _ = batches[0]
    t_sd = torch_weights.state_dict_from_model(torch_model)  # the weights do not change in a forward pass
    with torch.no_grad():
        t_images = torch_model.generator(torch.as_tensor(z)).cpu().numpy()
        t_logits = torch_model.discriminator(torch.as_tensor(x)).cpu().numpy()
    j_images = np.asarray(jax_model.generator(jnp.asarray(z)))
    j_logits = np.asarray(jax_model.discriminator(jnp.asarray(x)))
    for what, t_out, j_out, expected in (
        ("images", t_images, j_images, numpy_generator(t_sd, z, batch_statistics=True)),
        ("logits", t_logits, j_logits, numpy_discriminator(t_sd, x, batch_statistics=True)),
    ):
        assert_close(j_out, t_out, FORWARD_RTOL, f"train-mode {what}")
        assert_both_equal_reference(t_out, j_out, expected, FORWARD_RTOL, f"train-mode {what}")
    assert t_images.shape == (BATCH, 784) and t_logits.shape == (BATCH,)
    t_sd, j_sd = state_dicts(torch_model, jax_model)
    assert_state_dicts_close(running_statistics(j_sd), running_statistics(t_sd), FORWARD_RTOL, "after one batch,")
    for key in G_COUNTERS + D_COUNTERS:
        assert j_sd[key] == t_sd[key] == 1, key
    assert np.abs(t_sd["generator.bn2.running_mean"]).max() > 1e-3, "the running statistics did not move"


def test_eval_mode_outputs_agree_and_equal_a_float64_numpy_forward_pass(trained_models, batches, data):
    torch_model, jax_model = trained_models
    x, z = data[1][:BATCH], batches[5][1]  # test images, latents the training did not see
    t_sd = torch_weights.state_dict_from_model(torch_model)
    torch_model.eval()
    jax_model.eval()
    with torch.no_grad():
        t_images = tgan.sample(torch_model, torch.as_tensor(z))["images"].cpu().numpy()
        t_logits = torch_model.discriminator(torch.as_tensor(x)).cpu().numpy()
        t_batch_stat_images = torch_model.train().generator(torch.as_tensor(z)).cpu().numpy()
    j_images = np.asarray(jgan.sample(jax_model, jnp.asarray(z))["images"])
    j_logits = np.asarray(jax_model.discriminator(jnp.asarray(x)))
    for what, t_out, j_out, expected in (
        ("images", t_images, j_images, numpy_generator(t_sd, z, batch_statistics=False)),
        ("logits", t_logits, j_logits, numpy_discriminator(t_sd, x, batch_statistics=False)),
    ):
        assert_close(j_out, t_out, FORWARD_RTOL, f"eval-mode {what}")
        assert_both_equal_reference(t_out, j_out, expected, FORWARD_RTOL, f"eval-mode {what}")
    assert t_images.shape == (BATCH, 784) and np.abs(t_images).max() <= 1
    # Eval mode really reads the running statistics: with batch statistics the images differ.
    assert np.abs(t_batch_stat_images - t_images).max() > 100 * FORWARD_RTOL
    assert int(jax_model.generator.bn1.num_batches_tracked.get_value()) == 6  # 2 per step; eval mode counts nothing
    assert int(jax_model.discriminator.bn2.num_batches_tracked.get_value()) == 9  # real and fake in D's step, fake in G's


def _float64(a: jax.Array) -> jax.Array:
    return a.astype(jnp.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a


@contextlib.contextmanager
def in_precision(dtype: str, torch_model, jax_model):
    """float32: nothing to do. float64: both models converted, and JAX computing in float64, for the block.

    And torch on one thread: its float64 convolutions have no optimised kernel
    (slow_conv2d), whose OpenMP barriers wait for any thread the OS has
    descheduled; on this 2-core machine shared with other work a float64 step
    took 3.1 s on 2 threads and 0.17 s on one.
    """
    if dtype == "float32":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with jax.enable_x64(True):
            torch_model.double()
            nnx.update(jax_model, jax.tree.map(_float64, nnx.state(jax_model, (nnx.Param, nnx.BatchStat))))
            yield
    finally:
        torch.set_num_threads(threads)


def _assert_grads_agree(t_grads: dict[str, np.ndarray], j_grads: dict[str, np.ndarray], network: torch.nn.Module, dtype: str) -> None:
    assert sorted(j_grads) == sorted(t_grads) == sorted(name for name, _ in network.named_parameters())
    rtol = PRECISIONS[dtype][1]
    for key in t_grads:
        assert t_grads[key].dtype == j_grads[key].dtype == np.dtype(dtype), key
        assert_close(j_grads[key], t_grads[key], rtol, f"gradient of '{key}'")


# (loss, gradient) tolerances. float32: gradients to GAN_GRAD_RTOL, for a ReLU that rounding
# switches (tests/tolerances.py); float64, where no ReLU is that close to 0: both to FLOAT64_GRAD_RTOL.
PRECISIONS = {"float32": (LOSS_RTOL, GAN_GRAD_RTOL), "float64": (FLOAT64_GRAD_RTOL, FLOAT64_GRAD_RTOL)}


@pytest.mark.parametrize("dtype", PRECISIONS)
def test_discriminator_loss_and_every_gradient_agree(models, batches, dtype):
    """BCE(D(x), 1) + BCE(D(G(z)), 0) from explicit x and z; the generator gets no gradient but updates its statistics."""
    torch_model, jax_model = models
    x, z, _ = (a[: BATCH if dtype == "float32" else FLOAT64_BATCH].astype(dtype) for a in batches[1])
    loss_rtol = PRECISIONS[dtype][0]
    t_sd = torch_weights.state_dict_from_model(torch_model)
    fake = numpy_generator(t_sd, z, batch_statistics=True)
    expected = numpy_bce_with_logits(numpy_discriminator(t_sd, x, True), 1.0) + numpy_bce_with_logits(numpy_discriminator(t_sd, fake, True), 0.0)
    with in_precision(dtype, torch_model, jax_model):
        torch_model.zero_grad(set_to_none=True)
        t_loss = tgan.discriminator_loss(torch_model.discriminator, torch_model.generator, torch.as_tensor(x), torch.as_tensor(z))
        t_loss.backward()
        j_loss, j_g = jax_value_and_grad(jgan.discriminator_loss, jax_model.discriminator, jax_model.generator, jnp.asarray(x), jnp.asarray(z))
        j_grads = jax_grads(jax_model.discriminator, j_g)
        t_sd, j_sd = state_dicts(torch_model, jax_model)
    assert_both_equal_reference(t_loss.item(), float(j_loss), expected, loss_rtol, "D loss")
    _assert_grads_agree(torch_grads(torch_model.discriminator), j_grads, torch_model.discriminator, dtype)
    assert all(p.grad is None for p in torch_model.generator.parameters()), "the fake images were not detached"
    assert_state_dicts_close(running_statistics(j_sd), running_statistics(t_sd), FORWARD_RTOL, "after the D loss,")
    assert j_sd[G_COUNTERS[0]] == t_sd[G_COUNTERS[0]] == 1 and j_sd[D_COUNTERS[0]] == t_sd[D_COUNTERS[0]] == 2  # D saw real and fake


@pytest.mark.parametrize("dtype", PRECISIONS)
def test_generator_loss_and_every_gradient_agree(models, batches, dtype):
    """BCE(D(G(z)), 1), the non-saturating loss, from explicit z; gradients of the generator's parameters."""
    torch_model, jax_model = models
    z = batches[1][2][: BATCH if dtype == "float32" else FLOAT64_BATCH].astype(dtype)
    loss_rtol = PRECISIONS[dtype][0]
    t_sd = torch_weights.state_dict_from_model(torch_model)
    expected = numpy_bce_with_logits(numpy_discriminator(t_sd, numpy_generator(t_sd, z, True), True), 1.0)
    with in_precision(dtype, torch_model, jax_model):
        torch_model.zero_grad(set_to_none=True)
        t_loss = tgan.generator_loss(torch_model.generator, torch_model.discriminator, torch.as_tensor(z))
        t_loss.backward()
        j_loss, j_g = jax_value_and_grad(jgan.generator_loss, jax_model.generator, jax_model.discriminator, jnp.asarray(z))
        j_grads = jax_grads(jax_model.generator, j_g)
        t_sd, j_sd = state_dicts(torch_model, jax_model)
    assert_both_equal_reference(t_loss.item(), float(j_loss), expected, loss_rtol, "G loss")
    _assert_grads_agree(torch_grads(torch_model.generator), j_grads, torch_model.generator, dtype)
    assert_state_dicts_close(running_statistics(j_sd), running_statistics(t_sd), FORWARD_RTOL, "after the G loss,")
    assert j_sd[G_COUNTERS[0]] == t_sd[G_COUNTERS[0]] == 1 and j_sd[D_COUNTERS[0]] == t_sd[D_COUNTERS[0]] == 1


def _parameters(state_dict: dict[str, np.ndarray], network: str) -> list[str]:
    return [k for k in state_dict if k.startswith(network) and ".running_" not in k and "num_batches" not in k]


@pytest.mark.parametrize("network", ["discriminator", "generator"])
def test_each_step_updates_its_network_and_the_same_running_statistics(models, batches, network):
    """One discriminator_step, or one generator_step, from the same weights (JAX's compiled, as training runs it).

    The loss and the running statistics (which the step's forward passes
    update, the other network's included) agree to the forward tolerances;
    the stepped network's parameters moved by Adam's first step, about lr per
    entry, and agree as in a trajectory; the other network's are untouched.
    """
    torch_model, jax_model = models
    x, z_d, z_g = batches[2]
    t_opt, j_opt = tgan.make_optimizer(torch_model), jgan.make_optimizer(jax_model)
    before = torch_weights.state_dict_from_model(torch_model)
    if network == "discriminator":
        t_loss = tgan.discriminator_step(torch_model, t_opt, torch.as_tensor(x), torch.as_tensor(z_d))
        j_loss = nnx.jit(jgan.discriminator_step)(jax_model, j_opt, jnp.asarray(x), jnp.asarray(z_d))
        counters = {G_COUNTERS[0]: 1, D_COUNTERS[0]: 2}
    else:
        t_loss = tgan.generator_step(torch_model, t_opt, torch.as_tensor(z_g))
        j_loss = nnx.jit(jgan.generator_step)(jax_model, j_opt, jnp.asarray(z_g))
        counters = {G_COUNTERS[0]: 1, D_COUNTERS[0]: 1}
        assert all(p.grad is None for p in torch_model.discriminator.parameters()), "the G step computed D's gradients"
    assert_close(float(j_loss), float(t_loss), LOSS_RTOL, f"{network} step loss")
    t_sd, j_sd = state_dicts(torch_model, jax_model)
    assert_state_dicts_close(running_statistics(j_sd), running_statistics(t_sd), FORWARD_RTOL, f"after the {network} step,")
    for key, count in counters.items():
        assert j_sd[key] == t_sd[key] == count, key
    params = _parameters(t_sd, network)
    n_outside = 0
    for key in params:
        diff = np.abs(j_sd[key].astype(np.float64) - t_sd[key])
        assert diff.max() <= 2.01 * GAN.lr, f"'{key}': max |diff| {diff.max():.3g} > 2 lr"  # Adam's first step is +-lr
        assert np.abs(t_sd[key] - before[key]).max() > 0.5 * GAN.lr, f"'{key}' did not move"
        n_outside += int((diff > TRAJECTORY_PARAM_ATOL).sum())
    n_total = sum(t_sd[k].size for k in params)
    assert n_outside <= TRAJECTORY_OUTLIER_MAX_FRACTION * n_total, f"{n_outside} of {n_total} entries differ by more than {TRAJECTORY_PARAM_ATOL:g}"
    other = "generator" if network == "discriminator" else "discriminator"
    for key in _parameters(t_sd, other):
        np.testing.assert_array_equal(t_sd[key], before[key], err_msg=f"torch's {network} step changed '{key}'")
        np.testing.assert_array_equal(j_sd[key], before[key], err_msg=f"JAX's {network} step changed '{key}'")


def gan_trajectories(torch_model, jax_model, batches) -> tuple[np.ndarray, np.ndarray]:
    """[d_loss, g_loss] of len(batches) train_steps in each framework (JAX through the jit-compiled CompiledStep)."""
    t_opt, j_opt = tgan.make_optimizer(torch_model), jgan.make_optimizer(jax_model)
    j_step = CompiledStep(jgan.train_step, jax_model, j_opt)
    t_losses, j_losses = [], []
    for batch in batches:
        t_losses.append(tgan.train_step(torch_model, t_opt, *map(torch.as_tensor, batch)).cpu().numpy())
        j_losses.append(np.asarray(j_step(*map(jnp.asarray, batch))))
    j_step.write_back()
    return np.array(t_losses, np.float64), np.array(j_losses, np.float64)


def test_ten_alternating_steps_follow_the_same_trajectory(models, batches):
    """The float32 steps users run; why most of it is held to GAN_* and BATCHNORM_* bounds: tests/tolerances.py."""
    torch_model, jax_model = models
    start = torch_weights.state_dict_from_model(torch_model)
    t_losses, j_losses = gan_trajectories(torch_model, jax_model, batches)
    assert t_losses.shape == j_losses.shape == (10, 2)
    assert_close(j_losses[0, 0], t_losses[0, 0], LOSS_RTOL, "D loss at step 1 (before any update)")
    for i, (t_loss, j_loss) in enumerate(zip(t_losses, j_losses)):
        for name, t, j in zip(("D", "G"), t_loss, j_loss):
            assert_close(j, t, GAN_TRAJECTORY_LOSS_RTOL, f"{name} loss at step {i + 1}")
    t_sd, j_sd = state_dicts(torch_model, jax_model)
    for network, rtol in (("generator", GAN_GENERATOR_DISPLACEMENT_RTOL), ("discriminator", BATCHNORM_TRAJECTORY_DISPLACEMENT_RTOL)):
        params = _parameters(t_sd, network)
        moved = np.sqrt(sum(np.sum((t_sd[k].astype(np.float64) - start[k]) ** 2) for k in params))
        apart = np.sqrt(sum(np.sum((j_sd[k].astype(np.float64) - t_sd[k]) ** 2) for k in params))
        assert apart <= rtol * moved, f"after 10 steps the {network}'s parameters are {apart:.3g} apart, moved {moved:.3g}"
        assert max(float(np.abs(t_sd[k] - start[k]).max()) for k in params) > 10 * TRAJECTORY_PARAM_ATOL, "parameters barely moved"
    assert_state_dicts_close(running_statistics(j_sd), running_statistics(t_sd), BATCHNORM_TRAJECTORY_STATS_RTOL, "after 10 steps,")
    for key in G_COUNTERS:
        assert j_sd[key] == t_sd[key] == 20, key  # the generator runs in both steps
    assert j_sd[D_COUNTERS[0]] == t_sd[D_COUNTERS[0]] == 30  # real and fake in D's step, fake in G's


@pytest.mark.slow  # 14 s; the float32 trajectory stays in the default suite
def test_ten_alternating_steps_agree_to_float64_rounding(batches):
    """The same 10 compiled steps in float64 (FLOAT64_BATCH): the float32 drift above is rounding, not a different computation."""
    torch_model, jax_model = paired_models(tgan, jgan, "torch->jax")
    start = torch_weights.state_dict_from_model(torch_model)
    with in_precision("float64", torch_model, jax_model):
        batches64 = [tuple(a[:FLOAT64_BATCH].astype(np.float64) for a in batch) for batch in batches]
        t_losses, j_losses = gan_trajectories(torch_model, jax_model, batches64)
        j_sd = jax_weights.state_dict_from_model(jax_model)
    assert_close(j_losses, t_losses, TRAJECTORY_FLOAT64_RTOL, "float64 [D, G] losses at steps 1-10")
    t_sd = torch_weights.state_dict_from_model(torch_model)
    assert j_sd["generator.deconv1.weight"].dtype == t_sd["generator.deconv1.weight"].dtype == np.float64
    assert_state_dicts_close(j_sd, t_sd, TRAJECTORY_FLOAT64_RTOL, "after 10 float64 steps,")
    params = [name for name, _ in torch_model.named_parameters()]
    assert max(float(np.abs(t_sd[k] - start[k]).max()) for k in params) > 10 * TRAJECTORY_PARAM_ATOL, "parameters barely moved"


def test_weight_files_round_trip_both_ways(tmp_path, batches):
    """A trained torch GAN -> file -> JAX -> file -> torch, bit for bit (ConvTranspose's flip included)."""
    torch_model = tgan.init_model(0)
    opt = tgan.make_optimizer(torch_model)
    tgan.train_step(torch_model, opt, *map(torch.as_tensor, batches[0]))
    expected = torch_weights.state_dict_from_model(torch_model)
    torch_weights.save_model(torch_model, tmp_path / "t.safetensors", WeightsSpec("gan", "default"))
    jax_model = jgan.init_model(5)
    jax_weights.load_model(jax_model, tmp_path / "t.safetensors")
    jax_weights.save_model(jax_model, tmp_path / "tj.safetensors", WeightsSpec("gan", "default"))
    back = tgan.init_model(9)
    torch_weights.load_model(back, tmp_path / "tj.safetensors")
    for key, value in torch_weights.state_dict_from_model(back).items():
        assert value.dtype == expected[key].dtype, key
        np.testing.assert_array_equal(value, expected[key], err_msg=key)  # bit for bit
    kernel = np.asarray(jax_model.generator.deconv2.kernel.get_value())
    np.testing.assert_array_equal(kernel, expected["generator.deconv2.weight"][:, :, ::-1, ::-1].transpose(2, 3, 0, 1))
