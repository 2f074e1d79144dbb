"""CNN classifier: PyTorch and JAX compute the same thing (DESIGN.md, "Parity").

Same weights (converted both ways), same real MNIST batches in; logits,
BatchNorm running statistics (train mode) and eval-mode logits, loss, every
gradient and a 10-step Adam trajectory out. Dropout is off (p = 0) in the
parity runs; a separate test compares the two dropouts. Plus checks that
share no code with either model: a float64 numpy forward pass (convolution by
im2col), standalone Conv2d and BatchNorm layers against numpy.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from jax_impl import cnn as jcnn
from jax_impl import weights as jax_weights
from jax_impl.initializers import torch_bias_init, torch_kernel_init
from jax_impl.layers import BatchNorm, max_pool2
from jax_impl.training import CompiledStep
from shared.data import shuffled_mnist
from shared.hparams import CNN
from shared.weights import WeightsSpec, load_weights
from tests.numpy_reference import numpy_conv2d
from tests.parity import DIRECTIONS, assert_both_equal_reference, assert_close, assert_state_dicts_close, loss_and_grads, paired_models, trajectories
from tests.tolerances import (
    BATCHNORM_CONV_GRAD_RTOL,
    BATCHNORM_TRAJECTORY_DISPLACEMENT_RTOL,
    BATCHNORM_TRAJECTORY_LOSS_RTOL,
    BATCHNORM_TRAJECTORY_STATS_RTOL,
    BATCHNORM_TRAJECTORY_STRICT_STEPS,
    FORWARD_RTOL,
    GRAD_RTOL,
    LOSS_RTOL,
    TRAJECTORY_FLOAT64_RTOL,
    TRAJECTORY_LOSS_RTOL,
    TRAJECTORY_PARAM_ATOL,
)
from torch_impl import cnn as tcnn
from torch_impl import weights as torch_weights

BATCH = CNN.batch_size
CONV_BLOCKS = ("conv1.", "bn1.", "conv2.", "bn2.", "conv3.", "bn3.")  # gradients held to BATCHNORM_CONV_GRAD_RTOL
COUNTERS = ("bn1.num_batches_tracked", "bn2.num_batches_tracked", "bn3.num_batches_tracked", "bn4.num_batches_tracked")
N_PARAMS = (16 * 1 * 1 * 1) + 2 * 16 + (32 * 16 * 3 * 3) + 2 * 32 + (64 * 32 * 3 * 3) + 2 * 64 + (64 * 7 * 7 * 128) + 2 * 128 + (128 * 10 + 10)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train images, their labels, test images) of the embedded MNIST split, training set shuffled once."""
    return shuffled_mnist()


@pytest.fixture(scope="module")
def batches(data) -> list[tuple[np.ndarray, np.ndarray]]:
    """Ten real MNIST batches: images (B, 784) in [0, 1] and integer labels."""
    x, y, _ = data
    return [(x[i * BATCH : (i + 1) * BATCH], y[i * BATCH : (i + 1) * BATCH]) for i in range(10)]


@pytest.fixture(params=DIRECTIONS)
def direction(request) -> str:
    return request.param


@pytest.fixture
def models(direction):
    return paired_models(tcnn, jcnn, direction, dropout=0.0)


@pytest.fixture
def trained_models(direction, batches):
    """Paired models whose running statistics are not the initial 0 and 1.

    Three Adam steps on the direction's source side (the JAX one compiled),
    then converted to the other side: the converters carry the statistics.
    """
    torch_model, jax_model = tcnn.init_model(0, dropout=0.0), jcnn.init_model(1, dropout=0.0)
    if direction == "torch->jax":
        opt = tcnn.make_optimizer(torch_model)
        for x, y in batches[:3]:
            tcnn.train_step(torch_model, opt, torch.as_tensor(x), torch.as_tensor(y))
        jax_weights.load_state_dict(jax_model, torch_weights.state_dict_from_model(torch_model))
    else:
        step = CompiledStep(jcnn.train_step, jax_model, jcnn.make_optimizer(jax_model))
        for x, y in batches[:3]:
            step(jnp.asarray(x), jnp.asarray(y))
        step.write_back()
        torch_weights.load_state_dict(torch_model, jax_weights.state_dict_from_model(jax_model))
    return torch_model, jax_model


def running_statistics(state_dict: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v for k, v in state_dict.items() if ".running_" in k}


def numpy_logits(state_dict: dict[str, np.ndarray], x: np.ndarray, batch_statistics: bool = False) -> np.ndarray:
    """The CNN in float64 numpy, from a torch state_dict: eval mode, or train mode with `batch_statistics`."""
    p = {k: v.astype(np.float64) for k, v in state_dict.items()}

    def batchnorm(a, name):  # a is (B, C) or (B, C, H, W)
        shape = (1, -1) + (1,) * (a.ndim - 2)
        if batch_statistics:  # over all but the channel axis; the biased variance
            axes = (0,) + tuple(range(2, a.ndim))
            mean, var = a.mean(axes, keepdims=True), a.var(axes, keepdims=True)
        else:
            mean, var = p[f"{name}.running_mean"].reshape(shape), p[f"{name}.running_var"].reshape(shape)
        return (a - mean) / np.sqrt(var + CNN.batchnorm_eps) * p[f"{name}.weight"].reshape(shape) + p[f"{name}.bias"].reshape(shape)

    def max_pool(a):  # 2x2, stride 2
        b, c, h, w = a.shape
        return a.reshape(b, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))

    def relu(a):
        return np.maximum(a, 0.0)

    a = x.astype(np.float64).reshape(-1, 1, 28, 28)
    a = relu(batchnorm(numpy_conv2d(a, p["conv1.weight"]), "bn1"))
    a = max_pool(relu(batchnorm(numpy_conv2d(a, p["conv2.weight"], padding=1), "bn2")))
    a = max_pool(relu(batchnorm(numpy_conv2d(a, p["conv3.weight"], padding=1), "bn3")))
    a = relu(batchnorm(a.reshape(len(a), -1) @ p["fc1.weight"].T, "bn4"))  # flattened in (C, H, W) order
    return a @ p["out.weight"].T + p["out.bias"]


def test_parameter_shapes_counts_and_keys_are_equal():
    torch_model, jax_model = tcnn.init_model(0), jcnn.init_model(0)
    torch_sd = torch_weights.state_dict_from_model(torch_model)
    jax_sd = jax_weights.state_dict_from_model(jax_model)
    assert sorted(jax_sd) == sorted(torch_sd)  # running statistics and counters included
    assert {k: v.shape for k, v in jax_sd.items()} == {k: v.shape for k, v in torch_sd.items()}
    assert {k: v.dtype for k, v in jax_sd.items()} == {k: v.dtype for k, v in torch_sd.items()}  # counters int64
    assert sum(p.numel() for p in torch_model.parameters()) == N_PARAMS == 426_234
    assert sum(np.size(p) for p in jax.tree.leaves(nnx.state(jax_model, nnx.Param))) == N_PARAMS
    assert sorted(k for k, _ in torch_model.named_buffers()) == sorted(k for k in jax_sd if "running_" in k or "num_batches" in k)


def test_initialisation_follows_torchs_scheme():
    """Conv and Linear weights ~ U(+-1/sqrt(fan_in)) and BatchNorm at (1, 0, 0, 1, 0), in both frameworks."""
    for state_dict in (torch_weights.state_dict_from_model(tcnn.init_model(0)), jax_weights.state_dict_from_model(jcnn.init_model(0))):
        for key in ("conv2.weight", "conv3.weight", "fc1.weight", "out.weight"):
            w = state_dict[key]
            bound = 1 / np.sqrt(np.prod(w.shape[1:]))  # fan_in = in_channels * kh * kw, or in_features
            assert np.abs(w).max() <= bound
            assert np.std(w) == pytest.approx(bound / np.sqrt(3), rel=0.05), key  # a uniform's standard deviation
        for bn in ("bn1", "bn2", "bn3", "bn4"):
            np.testing.assert_array_equal(state_dict[f"{bn}.weight"], 1)
            np.testing.assert_array_equal(state_dict[f"{bn}.bias"], 0)
            np.testing.assert_array_equal(state_dict[f"{bn}.running_mean"], 0)
            np.testing.assert_array_equal(state_dict[f"{bn}.running_var"], 1)
            assert state_dict[f"{bn}.num_batches_tracked"] == 0


def test_train_mode_logits_and_running_statistics_agree(models, batches):
    torch_model, jax_model = models
    x, _ = batches[0]
    with torch.no_grad():
        t_logits = torch_model(torch.as_tensor(x)).cpu().numpy()
    j_logits = np.asarray(jax_model(jnp.asarray(x)))
    t_sd, j_sd = torch_weights.state_dict_from_model(torch_model), jax_weights.state_dict_from_model(jax_model)
    expected = numpy_logits(t_sd, x, batch_statistics=True)  # the weights do not change in a forward pass
    assert_close(j_logits, t_logits, FORWARD_RTOL, "train-mode logits")
    assert_both_equal_reference(t_logits, j_logits, expected, FORWARD_RTOL, "train-mode logits")
    assert_state_dicts_close(running_statistics(j_sd), running_statistics(t_sd), FORWARD_RTOL, "after one batch,")
    for key in COUNTERS:
        assert j_sd[key] == t_sd[key] == 1, key
    assert np.abs(t_sd["bn4.running_mean"]).max() > 1e-3, "the running statistics did not move"


def test_eval_mode_logits_agree(trained_models, data):
    torch_model, jax_model = trained_models
    x = data[2][:BATCH]  # test images
    torch_model.eval()
    jax_model.eval()
    with torch.no_grad():
        t_logits = torch_model(torch.as_tensor(x)).cpu().numpy()
        t_batch_stat_logits = torch_model.train()(torch.as_tensor(x)).cpu().numpy()
    j_logits = np.asarray(jax_model(jnp.asarray(x)))
    assert_close(j_logits, t_logits, FORWARD_RTOL, "eval-mode logits")
    # Eval mode really reads the running statistics: with batch statistics the logits differ.
    assert np.abs(t_batch_stat_logits - t_logits).max() > 100 * FORWARD_RTOL * np.abs(t_logits).max()
    assert int(jax_model.bn1.num_batches_tracked.get_value()) == 3  # eval mode counts nothing


def test_eval_logits_equal_a_float64_numpy_forward_pass(trained_models, data):
    torch_model, jax_model = trained_models
    x = data[2][BATCH : 2 * BATCH]
    expected = numpy_logits(torch_weights.state_dict_from_model(torch_model), x)
    with torch.no_grad():
        t_logits = torch_model.eval()(torch.as_tensor(x)).cpu().numpy()
    jax_model.eval()
    j_logits = np.asarray(jax_model(jnp.asarray(x)))
    assert_both_equal_reference(t_logits, j_logits, expected, FORWARD_RTOL, "eval logits")


def test_loss_is_the_cross_entropy_and_every_gradient_agrees(models, batches):
    """Train mode (batch statistics); gradients of the conv blocks at BATCHNORM_CONV_GRAD_RTOL (tolerances.py)."""
    torch_model, jax_model = models
    x, y = batches[1]
    logits = numpy_logits(torch_weights.state_dict_from_model(torch_model), x, batch_statistics=True)
    t_loss, t_g, j_loss, j_g = loss_and_grads(tcnn, jcnn, torch_model, jax_model, (x, y))
    log_softmax = logits - logits.max(1, keepdims=True)
    log_softmax -= np.log(np.exp(log_softmax).sum(1, keepdims=True))
    expected = -log_softmax[np.arange(len(y)), y].mean()
    assert_close(t_loss, expected, LOSS_RTOL, "torch loss vs numpy cross-entropy")
    assert_close(j_loss, expected, LOSS_RTOL, "jax loss vs numpy cross-entropy")
    assert sorted(j_g) == sorted(name for name, _ in torch_model.named_parameters())  # parameters only, no running statistics
    for key in t_g:
        rtol = BATCHNORM_CONV_GRAD_RTOL if key.startswith(CONV_BLOCKS) else GRAD_RTOL
        assert_close(j_g[key], t_g[key], rtol, f"gradient of '{key}'")


def test_ten_adam_steps_follow_the_same_trajectory(models, batches):
    """The float32 steps users run; why most of it is held to BATCHNORM_TRAJECTORY_*: tests/tolerances.py."""
    torch_model, jax_model = models
    start = torch_weights.state_dict_from_model(torch_model)
    t_losses, j_losses = trajectories(tcnn, jcnn, torch_model, jax_model, batches, CNN.lr)  # JAX: the compiled step
    for i, (t_loss, j_loss) in enumerate(zip(t_losses, j_losses)):
        rtol = TRAJECTORY_LOSS_RTOL if i < BATCHNORM_TRAJECTORY_STRICT_STEPS else BATCHNORM_TRAJECTORY_LOSS_RTOL
        assert_close(j_loss, t_loss, rtol, f"loss at step {i + 1}")
    t_sd, j_sd = torch_weights.state_dict_from_model(torch_model), jax_weights.state_dict_from_model(jax_model)
    params = [name for name, _ in torch_model.named_parameters()]
    moved = np.sqrt(sum(np.sum((t_sd[k].astype(np.float64) - start[k]) ** 2) for k in params))
    apart = np.sqrt(sum(np.sum((j_sd[k].astype(np.float64) - t_sd[k]) ** 2) for k in params))
    assert apart <= BATCHNORM_TRAJECTORY_DISPLACEMENT_RTOL * moved, f"after 10 steps the parameters are {apart:.3g} apart, moved {moved:.3g}"
    assert max(float(np.abs(t_sd[k] - start[k]).max()) for k in params) > 10 * TRAJECTORY_PARAM_ATOL, "parameters barely moved"
    assert_state_dicts_close(running_statistics(j_sd), running_statistics(t_sd), BATCHNORM_TRAJECTORY_STATS_RTOL, "after 10 steps,")
    for key in COUNTERS:
        assert j_sd[key] == t_sd[key] == 10, key


def _float64(a: jax.Array) -> jax.Array:
    return a.astype(jnp.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a


@pytest.mark.slow  # 10 s; the float32 trajectory stays in the default suite
def test_ten_adam_steps_agree_to_float64_rounding(batches):
    """The same 10 compiled steps in float64: the float32 drift above is rounding, not a different computation."""
    torch_model, jax_model = paired_models(tcnn, jcnn, "torch->jax", dropout=0.0)
    with jax.enable_x64(True):
        torch_model.double()
        nnx.update(jax_model, jax.tree.map(_float64, nnx.state(jax_model, (nnx.Param, nnx.BatchStat))))
        batches64 = [(x.astype(np.float64), y) for x, y in batches]
        t_losses, j_losses = trajectories(tcnn, jcnn, torch_model, jax_model, batches64, CNN.lr)
        j_sd = jax_weights.state_dict_from_model(jax_model)
    for i, (t_loss, j_loss) in enumerate(zip(t_losses, j_losses)):
        assert_close(j_loss, t_loss, TRAJECTORY_FLOAT64_RTOL, f"float64 loss at step {i + 1}")
    t_sd = torch_weights.state_dict_from_model(torch_model)
    assert j_sd["fc1.weight"].dtype == t_sd["fc1.weight"].dtype == np.float64
    assert_state_dicts_close(j_sd, t_sd, TRAJECTORY_FLOAT64_RTOL, "after 10 float64 steps,")


def jax_conv2d(stride: int, padding: int, seed: int) -> nnx.Conv:
    """The nnx.Conv a model writes for torch's Conv2d(3, 5, 3, stride, padding)."""
    return nnx.Conv(3, 5, (3, 3), strides=(stride, stride), padding=((padding, padding), (padding, padding)),
                    kernel_init=torch_kernel_init, bias_init=torch_bias_init(3 * 3 * 3), rngs=nnx.Rngs(seed))


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("padding", [0, 1])
def test_conv2d_converts_both_ways(stride, padding):
    """A torch Conv2d (with bias) and its nnx.Conv conversion compute the same; weights round-trip bit for bit."""
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 9, 9)).astype(np.float32)  # odd size: stride 2 drops a row
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        t_conv = torch.nn.Conv2d(3, 5, 3, stride=stride, padding=padding)
    j_conv = jax_conv2d(stride, padding, seed=1)
    t_sd = torch_weights.state_dict_from_model(t_conv)
    jax_weights.load_state_dict(j_conv, t_sd)
    np.testing.assert_array_equal(np.asarray(j_conv.kernel.get_value()), t_sd["weight"].transpose(2, 3, 1, 0))  # OIHW -> HWIO
    with torch.no_grad():
        t_out = t_conv(torch.as_tensor(x)).cpu().numpy()
    j_out = np.asarray(j_conv(jnp.asarray(x.transpose(0, 2, 3, 1)))).transpose(0, 3, 1, 2)  # NHWC in and out
    expected = numpy_conv2d(x.astype(np.float64), t_sd["weight"].astype(np.float64), t_sd["bias"], stride, padding)
    assert_both_equal_reference(t_out, j_out, expected, FORWARD_RTOL, "conv")
    back = jax_weights.state_dict_from_model(j_conv)
    assert back.keys() == t_sd.keys()
    for key in t_sd:
        np.testing.assert_array_equal(back[key], t_sd[key], err_msg=key)
    # ... and the other way: JAX's own weights into torch.
    j_conv = jax_conv2d(stride, padding, seed=2)
    torch_weights.load_state_dict(t_conv, jax_weights.state_dict_from_model(j_conv))
    with torch.no_grad():
        t_out = t_conv(torch.as_tensor(x)).cpu().numpy()
    j_out = np.asarray(j_conv(jnp.asarray(x.transpose(0, 2, 3, 1)))).transpose(0, 3, 1, 2)
    assert_close(j_out, t_out, FORWARD_RTOL, "conv outputs, jax weights")


def numpy_batchnorm_train(x: np.ndarray, weight, bias, mean, var, momentum: float, eps: float, unbiased: bool = True):
    """One torch train-mode BatchNorm call in float64: (output, new running mean, new running var). x: (N, C)."""
    batch_mean, batch_var = x.mean(0), x.var(0)  # biased: what the output is normalised with
    n = len(x)
    var_for_running = batch_var * n / (n - 1) if unbiased else batch_var
    out = (x - batch_mean) / np.sqrt(batch_var + eps) * weight + bias
    return out, (1 - momentum) * mean + momentum * batch_mean, (1 - momentum) * var + momentum * var_for_running


def test_max_pool2_takes_torchs_values_and_gradient_with_ties_and_nans():
    """Small integers make most windows hold equal maxima: the whole gradient goes to the first in row-major order,
    as torch's max_pool2d sends it; a NaN in a window is its maximum. Values also against nnx.max_pool."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 3, (3, 6, 8, 5)).astype(np.float32)  # NHWC
    x[0, 1, 2, 3] = x[2, 4, 5, 0] = np.nan
    g = rng.normal(size=(3, 3, 4, 5)).astype(np.float32)
    out, pullback = jax.vjp(max_pool2, jnp.asarray(x))
    xt = torch.tensor(x).permute(0, 3, 1, 2).requires_grad_()
    yt = torch.nn.functional.max_pool2d(xt, 2)
    yt.backward(torch.tensor(g).permute(0, 3, 1, 2))
    np.testing.assert_array_equal(np.asarray(out), yt.detach().permute(0, 2, 3, 1).numpy())
    np.testing.assert_array_equal(np.asarray(pullback(jnp.asarray(g))[0]), xt.grad.permute(0, 2, 3, 1).numpy())
    np.testing.assert_array_equal(np.asarray(out), np.asarray(nnx.max_pool(jnp.asarray(x), (2, 2), strides=(2, 2))))


@pytest.mark.parametrize("kind", ["1d", "2d"])
def test_batchnorm_matches_torch_and_a_hand_computation(kind):
    """Two train-mode calls (the second jit-compiled in JAX), then eval mode, against numpy.

    The running variance takes the unbiased batch variance (n / (n - 1)),
    which nnx.BatchNorm does not; small batches make the difference large.
    """
    rng = np.random.default_rng(3)
    channels, m, eps = 3, CNN.batchnorm_momentum, CNN.batchnorm_eps
    if kind == "1d":
        t_bn = torch.nn.BatchNorm1d(channels, eps=eps, momentum=m)
        xs = [rng.normal(2.0, 3.0, (5, channels)).astype(np.float32) for _ in range(3)]
        to_jax, rows = (lambda a: a), (lambda a: a)
    else:
        t_bn = torch.nn.BatchNorm2d(channels, eps=eps, momentum=m)
        xs = [rng.normal(2.0, 3.0, (2, channels, 2, 3)).astype(np.float32) for _ in range(3)]
        to_jax, rows = (
            lambda a: a.transpose(0, 2, 3, 1),  # NCHW -> NHWC
            lambda a: a.transpose(0, 2, 3, 1).reshape(-1, channels),  # one row per value a channel sees
        )
    with torch.no_grad():
        t_bn.weight.copy_(torch.as_tensor(rng.uniform(0.5, 2, channels).astype(np.float32)))
        t_bn.bias.copy_(torch.as_tensor(rng.normal(size=channels).astype(np.float32)))
    j_bn = BatchNorm(channels, eps=eps, momentum=m)
    jax_weights.load_state_dict(j_bn, torch_weights.state_dict_from_model(t_bn))
    weight, bias = t_bn.weight.detach().cpu().numpy().astype(np.float64), t_bn.bias.detach().cpu().numpy().astype(np.float64)
    mean, var = np.zeros(channels), np.ones(channels)
    jitted = nnx.jit(lambda bn, a: bn(a))
    for call, x in enumerate(xs[:2]):
        x64 = rows(x).astype(np.float64)
        _, _, var_biased = numpy_batchnorm_train(x64, weight, bias, mean, var, m, eps, unbiased=False)
        out, mean, var = numpy_batchnorm_train(x64, weight, bias, mean, var, m, eps)
        with torch.no_grad():
            t_out = rows(t_bn(torch.as_tensor(x)).cpu().numpy())
        j_out = (jitted(j_bn, jnp.asarray(to_jax(x))) if call else j_bn(jnp.asarray(to_jax(x)))).reshape(-1, channels)
        assert_close(t_out, out, FORWARD_RTOL, f"torch output, call {call + 1}")
        assert_close(j_out, out, FORWARD_RTOL, f"jax output, call {call + 1}")
        for name, value in (("torch", t_bn.running_var.cpu().numpy()), ("jax", np.asarray(j_bn.var.get_value()))):
            assert_close(value, var, FORWARD_RTOL, f"{name} running_var, call {call + 1}")
        assert_close(t_bn.running_mean.cpu().numpy(), mean, FORWARD_RTOL, "torch running_mean")
        assert_close(np.asarray(j_bn.mean.get_value()), mean, FORWARD_RTOL, "jax running_mean")
    assert np.abs(var - var_biased).max() > 1e3 * FORWARD_RTOL * np.abs(var).max()  # the check above can tell them apart
    assert int(t_bn.num_batches_tracked) == int(j_bn.num_batches_tracked.get_value()) == 2
    t_bn.eval()
    j_bn.eval()  # sets use_running_average=True, as on nnx.BatchNorm
    x = xs[2]
    expected = (rows(x).astype(np.float64) - mean) / np.sqrt(var + eps) * weight + bias
    with torch.no_grad():
        assert_close(rows(t_bn(torch.as_tensor(x)).cpu().numpy()), expected, FORWARD_RTOL, "torch eval output")
    assert_close(np.asarray(j_bn(jnp.asarray(to_jax(x)))).reshape(-1, channels), expected, FORWARD_RTOL, "jax eval output")
    assert int(j_bn.num_batches_tracked.get_value()) == 2


@pytest.mark.parametrize("p", [CNN.dropout, 0.2])  # 0.2: a drop rate read as a keep rate would show
def test_dropout_keeps_the_same_fraction_and_scale(p):
    """The models' own dropouts: same keep rate, same 1/(1-p) scaling; identity in eval mode."""
    x = np.random.default_rng(0).uniform(0.5, 1.5, (1000, 1000)).astype(np.float32)  # never 0: kept entries stay non-zero
    torch_model, jax_model = tcnn.init_model(0, dropout=p), jcnn.init_model(0, dropout=p)
    torch_model.train()
    jax_model.train()
    with torch.no_grad():
        t_out = torch_model.dropout(torch.as_tensor(x)).cpu().numpy()
    j_out = np.asarray(jax_model.dropout(jnp.asarray(x)))
    bound = 5 * np.sqrt(p * (1 - p) / x.size)  # 5 binomial standard deviations of a kept fraction
    t_kept, j_kept = t_out != 0, j_out != 0
    assert abs(t_kept.mean() - (1 - p)) <= bound
    assert abs(j_kept.mean() - (1 - p)) <= bound
    assert abs(t_kept.mean() - j_kept.mean()) <= np.sqrt(2) * bound
    scaled = x.astype(np.float64) / (1 - p)
    if p == 0.5:  # 1/(1-p) = 2: both exact
        np.testing.assert_array_equal(t_out[t_kept], scaled[t_kept])
        np.testing.assert_array_equal(j_out[j_kept], scaled[j_kept])
    else:  # torch multiplies by 1/(1-p), JAX divides by 1-p: each within float32 rounding of x/(1-p)
        np.testing.assert_allclose(t_out[t_kept], scaled[t_kept], rtol=2**-23)
        np.testing.assert_allclose(j_out[j_kept], scaled[j_kept], rtol=2**-23)
    # A fresh mask every call, also inside a compiled function (the RNG state is carried out of it).
    in_jit = nnx.jit(lambda model, a: model.dropout(a))
    first, second = (np.asarray(in_jit(jax_model, jnp.asarray(x[:100]))) != 0 for _ in range(2))
    assert (first != second).mean() > p * (1 - p)
    torch_model.eval()
    jax_model.eval()
    with torch.no_grad():
        np.testing.assert_array_equal(torch_model.dropout(torch.as_tensor(x)).cpu().numpy(), x)
    np.testing.assert_array_equal(np.asarray(jax_model.dropout(jnp.asarray(x))), x)


@pytest.fixture(scope="module")
def trained_torch_state(batches) -> dict[str, np.ndarray]:
    """A torch CNN's state_dict after two Adam steps: running statistics and counters that are not the initial ones."""
    torch_model = tcnn.init_model(0)
    opt = tcnn.make_optimizer(torch_model)
    for x, y in batches[:2]:
        tcnn.train_step(torch_model, opt, torch.as_tensor(x), torch.as_tensor(y))
    state_dict = torch_weights.state_dict_from_model(torch_model)
    assert state_dict["bn2.num_batches_tracked"] == 2
    return state_dict


def test_state_dicts_round_trip_both_ways(trained_torch_state):
    """torch -> JAX -> torch through the converters, bit for bit, counters int64 -> int32 -> int64."""
    jax_model = jcnn.init_model(5)
    jax_weights.load_state_dict(jax_model, trained_torch_state)
    assert jax_model.bn2.num_batches_tracked.get_value().dtype == jnp.int32
    back = tcnn.init_model(9)
    torch_weights.load_state_dict(back, jax_weights.state_dict_from_model(jax_model))
    for key, value in torch_weights.state_dict_from_model(back).items():
        assert value.dtype == trained_torch_state[key].dtype, key
        np.testing.assert_array_equal(value, trained_torch_state[key], err_msg=key)  # bit for bit
    kernel = np.asarray(jax_model.conv2.kernel.get_value())
    np.testing.assert_array_equal(kernel, trained_torch_state["conv2.weight"].transpose(2, 3, 1, 0))  # OIHW -> HWIO
    np.testing.assert_array_equal(np.asarray(jax_model.bn4.var.get_value()), trained_torch_state["bn4.running_var"])


def test_weight_files_round_trip_both_ways(tmp_path, trained_torch_state):
    torch_model, jax_model = tcnn.init_model(0), jcnn.init_model(5)
    torch_weights.load_state_dict(torch_model, trained_torch_state)
    torch_weights.save_model(torch_model, tmp_path / "t.safetensors", WeightsSpec("cnn", "default"))
    jax_weights.load_model(jax_model, tmp_path / "t.safetensors")
    jax_weights.save_model(jax_model, tmp_path / "tj.safetensors", WeightsSpec("cnn", "default"))
    back = tcnn.init_model(9)
    torch_weights.load_model(back, tmp_path / "tj.safetensors")
    for key, value in torch_weights.state_dict_from_model(back).items():
        assert value.dtype == trained_torch_state[key].dtype, key
        np.testing.assert_array_equal(value, trained_torch_state[key], err_msg=key)  # bit for bit
    file = load_weights(tmp_path / "tj.safetensors")
    assert file.keys() == trained_torch_state.keys()
    assert file["bn1.num_batches_tracked"].dtype == np.int64  # as torch stores it
    assert file["bn1.num_batches_tracked"].shape == ()


def test_converter_refuses_what_it_cannot_convert():
    """A variable of a layer type without a layout is an error naming it, never a file without it."""

    class WithFlaxBatchNorm(nnx.Module):
        def __init__(self):
            self.fc = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
            self.bn = nnx.BatchNorm(3, rngs=nnx.Rngs(0))  # flax's own: not torch's computation, no layout

    with pytest.raises(NotImplementedError, match=r"cannot convert 'bn\."):
        jax_weights.state_dict_from_model(WithFlaxBatchNorm())
