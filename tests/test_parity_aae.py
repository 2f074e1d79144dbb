"""Adversarial autoencoder, three variants: PyTorch and JAX compute the same thing (DESIGN.md, "Parity").

Same weights (converted both ways), the same real MNIST batches and the same
numpy prior samples in, dropout off: the outputs of Q, P, D (and D_cat);
each phase's loss and every gradient it produces (reconstruction: Q and P;
discriminator: D and D_cat; generator: Q; classification: Q), in float32 and
float64; each phase's step, which updates its networks and no other; and 10
full steps through the six optimizers, in float32 and float64. Plus checks
that share no code with either model: a float64 numpy forward pass of every
network and of every loss as the source writes it (logs of sigmoids), and
torch's initialisation statistics; and that both frameworks' dropout is on
in train mode and off in eval mode, Q's eval mode inside the compiled step included.
"""
from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from jax_impl import aae as jaae
from jax_impl import weights as jax_weights
from jax_impl.training import CompiledStep
from shared.data import shuffled_mnist
from shared.hparams import hparams, variants
from tests.parity import DIRECTIONS, assert_both_equal_reference, assert_close, paired_models
from tests.tolerances import (
    AAE_GRAD_RTOL,
    AAE_SEMI_DISPLACEMENT_RTOL,
    AAE_SEMI_TRAJECTORY_LOSS_RTOL,
    AAE_TRAJECTORY_LOSS_RTOL,
    FLOAT64_GRAD_RTOL,
    FORWARD_RTOL,
    LOSS_RTOL,
    TRAJECTORY_FLOAT64_RTOL,
    TRAJECTORY_LOSS_RTOL,
    TRAJECTORY_OUTLIER_MAX_FRACTION,
    TRAJECTORY_PARAM_ATOL,
)
from torch_impl import aae as taae
from torch_impl import weights as torch_weights

VARIANTS = variants("aae")
BATCH = hparams("aae").batch_size
N, C = 1000, 10  # hidden units, classes
Z_DIM = {"unsupervised": 2, "supervised": 2, "semisupervised": 10}  # the blog post's 2-d; its semi-supervised script's 10
PHASES = {  # phase -> the networks it updates (whose gradients it produces)
    "reconstruction": ("encoder", "decoder"),
    "discriminator": ("discriminator", "discriminator_cat"),
    "generator": ("encoder",),
    "classification": ("encoder",),
}
PHASE_STEPS = {  # phase -> (torch step, JAX step)
    "reconstruction": (taae.reconstruction_step, jaae.reconstruction_step),
    "discriminator": (taae.discriminator_step, jaae.discriminator_step),
    "generator": (taae.generator_step, jaae.generator_step),
    "classification": (taae.classification_step, jaae.classification_step),
}
TRAIN_STEPS = {  # variant -> (torch step, JAX step)
    "unsupervised": (taae.train_step_unsupervised, jaae.train_step_unsupervised),
    "supervised": (taae.train_step_supervised, jaae.train_step_supervised),
    "semisupervised": (taae.train_step_semisupervised, jaae.train_step_semisupervised),
}
# The float64 trajectories use the first 20 examples of each batch: a float64 step at 100 takes
# several times float32's on CPU, and the batch size has no part in what they show.
FLOAT64_BATCH = 20


@pytest.fixture(scope="module", autouse=True)
def torch_on_one_thread():
    """torch on one thread for this module: its OpenMP barriers wait for any thread the OS has
    descheduled, and on a 2-core machine shared with other work a float32 AAE step took 1.3 s on
    2 threads and 0.07 s on one (JAX's, compiled: 0.05 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    """The embedded training split (images in [0, 1], integer labels), shuffled once (it is stored in label order)."""
    train_x, train_y, _ = shuffled_mnist()
    return train_x, train_y


def make_batches(data, variant: str, count: int = 10) -> list[tuple[np.ndarray, ...]]:
    """`count` argument tuples of train_step_{variant} (after model and optimizer), every random draw from numpy.

    z_prior = prior_std * N(0, I); y_prior one-hot samples of a uniform
    categorical; the labelled batch from the other end of the split.
    """
    x, y = data
    hp = hparams("aae", variant)
    rng = np.random.default_rng(11)
    batches = []
    for i in range(count):
        rows, labelled = slice(i * BATCH, (i + 1) * BATCH), slice(len(x) - (i + 1) * BATCH, len(x) - i * BATCH)
        z_prior = (hp.prior_std * rng.standard_normal((BATCH, hp.z_dim))).astype(np.float32)
        y_prior = np.eye(C, dtype=np.float32)[rng.integers(C, size=BATCH)]
        batches.append({
            "unsupervised": (x[rows], z_prior),
            "supervised": (x[rows], y[rows], z_prior),
            "semisupervised": (x[rows], z_prior, y_prior, x[labelled], y[labelled]),
        }[variant])
    return batches


def unpack(variant: str, batch: tuple[np.ndarray, ...]) -> dict:
    """A train_step batch by name: x, y (integer labels, supervised), z_prior, y_prior, x_labelled, y_labelled."""
    names = {"unsupervised": ("x", "z_prior"), "supervised": ("x", "y", "z_prior"),
             "semisupervised": ("x", "z_prior", "y_prior", "x_labelled", "y_labelled")}[variant]  # fmt: skip
    return {"y": None, "y_prior": None, "x_labelled": None, "y_labelled": None, **dict(zip(names, batch))}


@pytest.fixture(params=VARIANTS)
def variant(request) -> str:
    return request.param


@pytest.fixture(params=DIRECTIONS)
def direction(request) -> str:
    return request.param


@pytest.fixture
def models(variant, direction):
    return paired_models(taae, jaae, direction, variant=variant, dropout=0.0)


@pytest.fixture
def batches(data, variant) -> list[tuple[np.ndarray, ...]]:
    return make_batches(data, variant)


def state_dicts(torch_model, jax_model) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    return torch_weights.state_dict_from_model(torch_model), jax_weights.state_dict_from_model(jax_model)


def network_keys(state_dict: dict[str, np.ndarray], networks) -> list[str]:
    return [k for k in state_dict if k.split(".")[0] in networks]


# --- float64 numpy: every network and loss from a torch state_dict ------------------------------


def _mlp(p: dict[str, np.ndarray], network: str, a: np.ndarray, out: str = "lin3") -> np.ndarray:
    """Linear, ReLU, Linear, ReLU (dropout off), then the `out` Linear, in float64."""
    for name in ("lin1", "lin2"):
        a = np.maximum(a @ p[f"{network}.{name}.weight"].T + p[f"{network}.{name}.bias"], 0)
    return a @ p[f"{network}.{out}.weight"].T + p[f"{network}.{out}.bias"]


def _softmax(a: np.ndarray) -> np.ndarray:
    e = np.exp(a - a.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _sigmoid(a: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-a))


class NumpyAae:
    """The model in float64 numpy with dropout off, written from the source: what both frameworks must compute."""

    def __init__(self, state_dict: dict[str, np.ndarray], variant: str):
        self.p = {k: v.astype(np.float64) for k, v in state_dict.items()}
        self.variant = variant

    def encoder(self, x):
        x = x.astype(np.float64)
        return _mlp(self.p, "encoder", x, "lin3gauss"), _mlp(self.p, "encoder", x, "lin3cat") if self.variant == "semisupervised" else None

    def decoder(self, z, y=None):
        return _mlp(self.p, "decoder", z if y is None else np.concatenate([y, z], -1))

    def discriminator(self, a, name="discriminator"):
        return _mlp(self.p, name, a.astype(np.float64))[:, 0]

    def code(self, y_onehot, class_logits):
        """What P sees besides z in training: nothing, the labels (supervised), softmax(class logits) (semi-supervised)."""
        if self.variant == "semisupervised":
            return _softmax(class_logits)
        return y_onehot if self.variant == "supervised" else None

    def losses(self, x, y, z_prior, y_prior=None, x_labelled=None, y_labelled=None) -> dict[str, list[float]]:
        """Each phase's loss(es), as the source writes them: logs of sigmoids, BCE of probabilities, softmax then log."""
        z, class_logits = self.encoder(x)
        prob = _sigmoid(self.decoder(z, self.code(None if y is None else np.eye(C)[y], class_logits)))
        out = {"reconstruction": [-np.mean(x * np.log(prob) + (1 - x) * np.log(1 - prob))]}
        d_real, d_fake = _sigmoid(self.discriminator(z_prior)), _sigmoid(self.discriminator(z))
        out["discriminator"] = [-np.mean(np.log(d_real) + np.log(1 - d_fake))]
        out["generator"] = [-np.mean(np.log(d_fake))]
        if self.variant == "semisupervised":
            cat_real = _sigmoid(self.discriminator(y_prior, "discriminator_cat"))
            cat_fake = _sigmoid(self.discriminator(_softmax(class_logits), "discriminator_cat"))
            out["discriminator"].append(-np.mean(np.log(cat_real) + np.log(1 - cat_fake)))
            out["generator"] = [out["generator"][0] - np.mean(np.log(cat_fake))]
            log_p = np.log(_softmax(self.encoder(x_labelled)[1]))
            out["classification"] = [-np.mean(log_p[np.arange(len(y_labelled)), y_labelled])]
        return {k: [float(v) for v in vs] for k, vs in out.items()}


# --- each phase's loss(es) and gradients, as the steps compute them -----------------------------


def torch_phase(model, phase: str, b: dict) -> tuple[list[float], dict[str, np.ndarray]]:
    """The phase's loss(es) and the gradients of the networks it updates, in torch."""
    t = {k: None if v is None else torch.as_tensor(v) for k, v in b.items()}
    model.zero_grad(set_to_none=True)
    if phase == "reconstruction":
        y = None if t["y"] is None else torch.nn.functional.one_hot(t["y"], C).to(t["x"].dtype)
        losses = [taae.reconstruction_loss(model.encoder, model.decoder, t["x"], y)]
    elif phase == "discriminator":  # Q's codes in eval mode, without gradient, as discriminator_step makes them
        model.encoder.eval()
        with torch.no_grad():
            z_fake, class_logits = model.encoder(t["x"])
        model.encoder.train()
        losses = [taae.discriminator_loss(model.discriminator, t["z_prior"], z_fake)]
        if class_logits is not None:
            losses.append(taae.discriminator_loss(model.discriminator_cat, t["y_prior"], torch.softmax(class_logits, -1)))
    elif phase == "generator":
        losses = [taae.generator_loss(model.encoder, model.discriminator, t["x"], model.discriminator_cat)]
    else:
        losses = [taae.classification_loss(model.encoder, t["x_labelled"], t["y_labelled"])]
    sum(losses).backward()
    grads = {  # no gradient at all (classification: lin3gauss) is a zero gradient, as JAX gives it
        name: np.zeros(p.shape, np.dtype(str(p.dtype).removeprefix("torch."))) if p.grad is None else p.grad.cpu().numpy().copy()
        for name, p in model.named_parameters() if name.split(".")[0] in PHASES[phase]
    }
    return [loss.item() for loss in losses], grads


def _jax_grads(network: str, module, grads) -> dict[str, np.ndarray]:
    return {f"{network}.{k}": v for k, v in jax_weights.state_dict_from_grads(module, grads).items()}


def jax_phase(model, phase: str, b: dict) -> tuple[list[float], dict[str, np.ndarray]]:
    """The phase's loss(es) and gradients in JAX: nnx.value_and_grad over the network(s) it updates."""
    j = {k: None if v is None else jnp.asarray(v) for k, v in b.items()}
    if phase == "reconstruction":
        y = None if j["y"] is None else jax.nn.one_hot(j["y"], C, dtype=j["x"].dtype)
        loss, (g_q, g_p) = nnx.value_and_grad(jaae.reconstruction_loss, argnums=(0, 1))(model.encoder, model.decoder, j["x"], y)
        return [float(loss)], {**_jax_grads("encoder", model.encoder, g_q), **_jax_grads("decoder", model.decoder, g_p)}
    if phase == "discriminator":
        model.encoder.eval()
        z_fake, class_logits = model.encoder(j["x"])
        model.encoder.train()
        loss, g = nnx.value_and_grad(jaae.discriminator_loss)(model.discriminator, j["z_prior"], z_fake)
        losses, grads = [float(loss)], _jax_grads("discriminator", model.discriminator, g)
        if class_logits is not None:
            loss, g = nnx.value_and_grad(jaae.discriminator_loss)(model.discriminator_cat, j["y_prior"], jax.nn.softmax(class_logits, -1))
            losses.append(float(loss))
            grads.update(_jax_grads("discriminator_cat", model.discriminator_cat, g))
        return losses, grads
    if phase == "generator":
        loss, g = nnx.value_and_grad(jaae.generator_loss)(model.encoder, model.discriminator, j["x"], model.discriminator_cat)
    else:
        loss, g = nnx.value_and_grad(jaae.classification_loss)(model.encoder, j["x_labelled"], j["y_labelled"])
    return [float(loss)], _jax_grads("encoder", model.encoder, g)


def phases_of(variant: str) -> list[str]:
    return [p for p in PHASES if p != "classification" or variant == "semisupervised"]


def _float64(a: jax.Array) -> jax.Array:
    return a.astype(jnp.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a


@contextlib.contextmanager
def in_precision(dtype: str, torch_model, jax_model):
    """float32: nothing to do. float64: both models converted, and JAX computing in float64, for the block."""
    if dtype == "float32":
        yield
        return
    with jax.enable_x64(True):
        torch_model.double()
        nnx.update(jax_model, jax.tree.map(_float64, nnx.state(jax_model, nnx.Param)))
        yield


def as_dtype(arrays, dtype: str, count: int | None = None):
    """The floating arrays of a batch (tuple or dict) in `dtype`, the first `count` examples of each."""
    def convert(a):
        return a if a is None else (a.astype(dtype) if a.dtype.kind == "f" else a)[:count]

    return {k: convert(v) for k, v in arrays.items()} if isinstance(arrays, dict) else tuple(map(convert, arrays))


def aae_trajectories(variant: str, torch_model, jax_model, batches) -> tuple[np.ndarray, np.ndarray]:
    """The losses of len(batches) of the variant's train steps in each framework (JAX through the jit-compiled CompiledStep).

    tests.parity.trajectories expects one loss per step; these steps return a vector.
    """
    t_opt, j_opt = taae.make_optimizer(torch_model), jaae.make_optimizer(jax_model)
    t_step, j_step = TRAIN_STEPS[variant][0], CompiledStep(TRAIN_STEPS[variant][1], jax_model, j_opt)
    t_losses, j_losses = [], []
    for batch in batches:
        t_losses.append(t_step(torch_model, t_opt, *map(torch.as_tensor, batch)).cpu().numpy())
        j_losses.append(np.asarray(j_step(*map(jnp.asarray, batch))))
    j_step.write_back()
    return np.array(t_losses, np.float64), np.array(j_losses, np.float64)


def _floats(loss) -> list[float]:
    """A step's loss, or the discriminator step's tuple of losses, as floats."""
    return [float(v) for v in (loss if isinstance(loss, tuple) else (loss,))]


def step_lrs(variant: str) -> dict[str, float]:
    """The learning rates that update each network in one train step, summed (Q: encoder, generator, classifier)."""
    hp = hparams("aae", variant)
    encoder = hp.lr + hp.regularization_lr + (hp.classification_lr or 0.0)
    return {"encoder": encoder, "decoder": hp.lr, "discriminator": hp.regularization_lr, "discriminator_cat": hp.regularization_lr}


# --- the tests ------------------------------------------------------------------------------------


def test_parameter_shapes_counts_and_keys_are_equal(variant):
    torch_model, jax_model = taae.init_model(0, variant), jaae.init_model(0, variant)
    torch_sd, jax_sd = state_dicts(torch_model, jax_model)
    assert {k: v.shape for k, v in jax_sd.items()} == {k: v.shape for k, v in torch_sd.items()}
    semi, conditioned = variant == "semisupervised", variant != "unsupervised"

    def mlp(d_in, d_out):
        return (d_in * N + N) + (N * N + N) + (N * d_out + d_out)

    Z = Z_DIM[variant]
    expected = {
        "encoder": mlp(784, Z) + (N * C + C if semi else 0),  # lin3cat beside lin3gauss
        "decoder": mlp(Z + (C if conditioned else 0), 784),
        "discriminator": mlp(Z, 1),
        **({"discriminator_cat": mlp(C, 1)} if semi else {}),
    }
    assert {k.split(".")[0] for k in torch_sd} == set(expected)
    for network, count in expected.items():
        assert sum(p.numel() for p in getattr(torch_model, network).parameters()) == count, network
        assert sum(np.size(p) for p in jax.tree.leaves(nnx.state(getattr(jax_model, network), nnx.Param))) == count, network
    assert ("encoder.lin3cat.weight" in torch_sd) == semi
    assert sum(1 for _ in torch_model.buffers()) == 0
    assert (torch_model.discriminator_cat is None) == (jax_model.discriminator_cat is None) == (not semi)


def test_initialisation_follows_torchs_scheme(variant):
    """Every weight and bias ~ U(+-1/sqrt(fan_in)) in both frameworks (flax's default LeCun normal would fail)."""
    for state_dict in state_dicts(taae.init_model(0, variant), jaae.init_model(0, variant)):
        for key, w in state_dict.items():
            if not key.endswith(".weight"):
                continue
            bound = 1 / np.sqrt(w.shape[1])
            b = state_dict[key.replace(".weight", ".bias")]
            assert np.abs(w).max() <= bound and np.abs(b).max() <= bound, key
            assert np.abs(w).max() > 0.9 * bound, key  # the whole interval is used (at least 1,000 entries)
            tol = 4 * 0.45 / np.sqrt(w.size)  # 4 standard errors of a uniform sample's standard deviation
            assert np.std(w) == pytest.approx(bound / np.sqrt(3), rel=tol), key


def test_unknown_variant_is_an_error_that_names_it():
    for arch in (taae, jaae):
        with pytest.raises(ValueError, match="variant 'adversarial'"):
            arch.init_model(0, "adversarial")


def test_outputs_of_every_network_agree_and_equal_a_float64_numpy_forward_pass(models, variant, batches):
    """Q's z (and class logits), P's images and reconstruction logits (conditioned as in training), D's and D_cat's
    logits: through encode, decode, eval_outputs and the discriminators, against each other and numpy."""
    torch_model, jax_model = models
    b = unpack(variant, batches[0])
    x, z_prior = b["x"], b["z_prior"]
    y_onehot = np.eye(C, dtype=np.float32)[np.arange(BATCH) % C if b["y"] is None else b["y"]]
    ref = NumpyAae(torch_weights.state_dict_from_model(torch_model), variant)
    with torch.no_grad():
        xt, zt, yt = map(torch.as_tensor, (x, z_prior, y_onehot))
        t_out = {**taae.encode(torch_model, xt), **taae.decode(torch_model, zt, yt), "D": torch_model.discriminator(zt)}
        t_out.update({f"eval {k}": v for k, v in taae.eval_outputs(torch_model, xt, yt).items()})
        if variant == "semisupervised":
            t_out["D_cat"] = torch_model.discriminator_cat(yt)
    xj, zj, yj = map(jnp.asarray, (x, z_prior, y_onehot))
    j_out = {**jaae.encode(jax_model, xj), **jaae.decode(jax_model, zj, yj), "D": jax_model.discriminator(zj)}
    j_out.update({f"eval {k}": v for k, v in jaae.eval_outputs(jax_model, xj, yj).items()})
    if variant == "semisupervised":
        j_out["D_cat"] = jax_model.discriminator_cat(yj)
    z, class_logits = ref.encoder(x)
    expected = {
        "z": z,
        "images": _sigmoid(ref.decoder(z_prior, None if variant == "unsupervised" else y_onehot)),  # decode's y: any digits
        "D": ref.discriminator(z_prior),
        "eval logits": ref.decoder(z, ref.code(y_onehot, class_logits)),
        "eval z": z,
    }
    if variant == "semisupervised":
        expected.update({"class_logits": class_logits, "eval class_logits": class_logits, "D_cat": ref.discriminator(y_onehot, "discriminator_cat")})
    assert sorted(t_out) == sorted(j_out) == sorted(expected)
    for what, e in expected.items():
        t, j = t_out[what].cpu().numpy(), np.asarray(j_out[what])
        assert t.shape == j.shape == e.shape, what
        assert_close(j, t, FORWARD_RTOL, what)
        assert_both_equal_reference(t, j, e, FORWARD_RTOL, what)
    assert expected["D"].shape == (BATCH,) and expected["eval logits"].shape == (BATCH, 784)
    if variant == "supervised":  # P's labels matter: other digits give other images
        other = _sigmoid(ref.decoder(z_prior, np.roll(y_onehot, 1, axis=1)))
        assert np.abs(other - expected["images"]).max() > 1e-3


# (loss, gradient) tolerances. float32 gradients: AAE_GRAD_RTOL, for a ReLU input within rounding
# of 0 that switches in one framework only (tests/tolerances.py); float64, where none is that close: both tight.
PRECISIONS = {"float32": (LOSS_RTOL, AAE_GRAD_RTOL), "float64": (FLOAT64_GRAD_RTOL, FLOAT64_GRAD_RTOL)}


def test_each_phase_loss_and_every_gradient_agree(models, variant, batches):
    """Each phase from the same weights, in float32: its loss(es) against the source's formulas in numpy, and every gradient."""
    check_phases(*models, variant, unpack(variant, batches[2]), "float32")


def test_each_phase_loss_and_every_gradient_agree_in_float64(variant, batches):
    """The same in float64 (torch weights converted): every gradient to rounding, no ReLU switch left."""
    check_phases(*paired_models(taae, jaae, "torch->jax", variant=variant, dropout=0.0), variant, unpack(variant, batches[2]), "float64")


def check_phases(torch_model, jax_model, variant: str, b: dict, dtype: str) -> None:
    expected = NumpyAae(torch_weights.state_dict_from_model(torch_model), variant).losses(**b)
    assert sorted(expected) == sorted(phases_of(variant))
    loss_rtol, grad_rtol = PRECISIONS[dtype]
    with in_precision(dtype, torch_model, jax_model):
        b = as_dtype(b, dtype)
        results = {phase: (torch_phase(torch_model, phase, b), jax_phase(jax_model, phase, b)) for phase in expected}
    for phase, ((t_losses, t_grads), (j_losses, j_grads)) in results.items():
        assert len(t_losses) == len(j_losses) == len(expected[phase]) == (2 if phase == "discriminator" and variant == "semisupervised" else 1)
        for t, j, e in zip(t_losses, j_losses, expected[phase]):
            assert_both_equal_reference(t, j, e, loss_rtol, f"{phase} loss")
        keys = network_keys(dict(torch_model.named_parameters()), PHASES[phase])
        assert sorted(t_grads) == sorted(j_grads) == sorted(keys), phase
        for key in keys:
            assert t_grads[key].dtype == j_grads[key].dtype == np.dtype(dtype), key
            assert_close(j_grads[key], t_grads[key], grad_rtol, f"{phase} gradient of '{key}'")


def test_each_phase_step_updates_its_networks_and_no_other(variant, data):
    """reconstruction_step, discriminator_step, generator_step (and classification_step), each from the same
    weights with fresh optimizers, eager in both frameworks: the same loss(es); the phase's networks moved by
    Adam's first step (about lr per entry) and agree as in a trajectory; every other network untouched."""
    torch_model, jax_model = paired_models(taae, jaae, "torch->jax", variant=variant, dropout=0.0)
    b = unpack(variant, make_batches(data, variant, 4)[3])
    hp = hparams("aae", variant)
    y = None if b["y"] is None else np.eye(C, dtype=np.float32)[b["y"]]
    steps = {  # phase -> (arguments after model and optimizer, learning rate)
        "reconstruction": ((b["x"], y), hp.lr),
        "discriminator": ((b["x"], b["z_prior"], b["y_prior"]), hp.regularization_lr),
        "generator": ((b["x"],), hp.regularization_lr),
        "classification": ((b["x_labelled"], b["y_labelled"]), hp.classification_lr),
    }
    before = torch_weights.state_dict_from_model(torch_model)
    for phase in phases_of(variant):
        torch_weights.load_state_dict(torch_model, before)
        jax_weights.load_state_dict(jax_model, before)
        torch_model.zero_grad(set_to_none=True)
        args, lr = steps[phase]
        t_phase_step, j_phase_step = PHASE_STEPS[phase]
        t_loss = t_phase_step(torch_model, taae.make_optimizer(torch_model), *(None if a is None else torch.as_tensor(a) for a in args))
        j_loss = j_phase_step(jax_model, jaae.make_optimizer(jax_model), *(None if a is None else jnp.asarray(a) for a in args))
        assert_close(_floats(j_loss), _floats(t_loss), LOSS_RTOL, f"{phase} step loss")
        t_sd, j_sd = state_dicts(torch_model, jax_model)
        updated = [k for k in network_keys(t_sd, PHASES[phase]) if phase != "classification" or ".lin3gauss." not in k]  # z plays no part
        for key in updated:
            diff = np.abs(j_sd[key].astype(np.float64) - t_sd[key])
            assert diff.max() <= 2.01 * lr, f"{phase} step '{key}': max |diff| {diff.max():.3g} > 2 lr"  # Adam's first step is +-lr
            assert np.abs(t_sd[key] - before[key]).max() > 0.5 * lr, f"{phase} step: '{key}' did not move"
        n_outside = sum(int((np.abs(j_sd[k].astype(np.float64) - t_sd[k]) > TRAJECTORY_PARAM_ATOL).sum()) for k in updated)
        assert n_outside <= TRAJECTORY_OUTLIER_MAX_FRACTION * sum(t_sd[k].size for k in updated), f"{phase} step: {n_outside} entries apart"
        for key in set(t_sd) - set(updated):
            np.testing.assert_array_equal(t_sd[key], before[key], err_msg=f"torch's {phase} step changed '{key}'")
            np.testing.assert_array_equal(j_sd[key], before[key], err_msg=f"JAX's {phase} step changed '{key}'")
        if phase == "generator":  # backward(inputs=Q's parameters): no wasted gradient for the discriminators
            assert all(p.grad is None for p in torch_model.discriminator.parameters())


def test_ten_steps_follow_the_same_trajectory(models, variant, batches):
    """The float32 steps users run (JAX compiled); the bounds and why: tests/tolerances.py, AAE_*.

    Every loss of step 1 (the reconstruction loss before any update, the others after the first
    phases' Adam steps) to TRAJECTORY_LOSS_RTOL. Unsupervised and supervised: every loss at every
    step to AAE_TRAJECTORY_LOSS_RTOL, every parameter to TRAJECTORY_PARAM_ATOL but the outlier
    fraction. Semi-supervised, whose float32 steps drift apart (as torch's own float32 and float64
    runs do): every loss to AAE_SEMI_TRAJECTORY_LOSS_RTOL, each network's parameters within
    AAE_SEMI_DISPLACEMENT_RTOL of its displacement. Every entry within the learning rates of its steps.
    """
    torch_model, jax_model = models
    start = torch_weights.state_dict_from_model(torch_model)
    t_losses, j_losses = aae_trajectories(variant, torch_model, jax_model, batches)
    semi = variant == "semisupervised"
    names = ("recon", "d", "d_cat", "g", "classification") if semi else ("recon", "d", "g")
    assert t_losses.shape == j_losses.shape == (10, len(names))
    rtol = AAE_SEMI_TRAJECTORY_LOSS_RTOL if semi else AAE_TRAJECTORY_LOSS_RTOL
    for i, (t_loss, j_loss) in enumerate(zip(t_losses, j_losses)):
        for name, t, j in zip(names, t_loss, j_loss):
            assert_close(j, t, TRAJECTORY_LOSS_RTOL if i == 0 else rtol, f"{name} loss at step {i + 1}")
    t_sd, j_sd = state_dicts(torch_model, jax_model)
    n_outside, n_total = 0, 0
    for network, lr in step_lrs(variant).items():
        keys = network_keys(t_sd, (network,))
        if not keys:
            continue
        diffs = {k: np.abs(j_sd[k].astype(np.float64) - t_sd[k]) for k in keys}
        for key, diff in diffs.items():
            assert diff.max() <= lr * len(batches), f"after 10 steps '{key}': max |diff| {diff.max():.3g} > lr x steps"
        moved = np.sqrt(sum(np.sum((t_sd[k].astype(np.float64) - start[k]) ** 2) for k in keys))
        assert max(float(np.abs(t_sd[k] - start[k]).max()) for k in keys) > 0.5 * lr * len(batches), f"the {network} barely moved"
        if semi:
            apart = np.sqrt(sum(np.sum(d**2) for d in diffs.values()))
            assert apart <= AAE_SEMI_DISPLACEMENT_RTOL * moved, f"after 10 steps the {network} is {apart:.3g} apart, moved {moved:.3g}"
        n_outside += sum(int((d > TRAJECTORY_PARAM_ATOL).sum()) for d in diffs.values())
        n_total += sum(d.size for d in diffs.values())
    if not semi:
        assert n_outside <= TRAJECTORY_OUTLIER_MAX_FRACTION * n_total, (
            f"after 10 steps {n_outside} of {n_total} parameter entries differ by more than {TRAJECTORY_PARAM_ATOL:g}"
        )


@pytest.mark.slow  # 5-6 s a variant; the float32 trajectories stay in the default suite
def test_ten_steps_agree_to_float64_rounding(data, variant):
    """The same 10 compiled steps in float64 (FLOAT64_BATCH): the float32 drift above is rounding, not a different
    computation (measured: 8.9e-13 on the parameters, 4.6e-16 on the losses, semi-supervised the worst)."""
    torch_model, jax_model = paired_models(taae, jaae, "torch->jax", variant=variant, dropout=0.0)
    start = torch_weights.state_dict_from_model(torch_model)
    with in_precision("float64", torch_model, jax_model):
        batches64 = [as_dtype(batch, "float64", FLOAT64_BATCH) for batch in make_batches(data, variant)]
        t_losses, j_losses = aae_trajectories(variant, torch_model, jax_model, batches64)
        t_sd, j_sd = state_dicts(torch_model, jax_model)
    assert_close(j_losses, t_losses, TRAJECTORY_FLOAT64_RTOL, "float64 losses at steps 1-10")
    assert j_sd["encoder.lin1.weight"].dtype == t_sd["encoder.lin1.weight"].dtype == np.float64
    for key in t_sd:
        assert_close(j_sd[key], t_sd[key], TRAJECTORY_FLOAT64_RTOL, f"after 10 float64 steps '{key}'")
    assert max(float(np.abs(t_sd[k] - start[k]).max()) for k in t_sd) > 10 * TRAJECTORY_PARAM_ATOL, "parameters barely moved"


def test_dropout_is_on_in_train_mode_and_off_in_eval_mode(data):
    """Each network's own dropout (the semi-supervised AAE's: Q and P 0.25, D and D_cat 0.2), in both frameworks.

    Train mode: the variant's keep rate and 1/(1-p) scaling, a fresh mask every call, so Q's codes vary
    from call to call. Eval mode: the identity, so every network's output is the one of the same
    weights built with dropout 0, and the two frameworks' agree.
    """
    variant = "semisupervised"
    x = np.random.default_rng(0).uniform(0.5, 1.5, (400, 1000)).astype(np.float32)  # never 0: kept entries stay non-zero
    images = data[0][:BATCH]
    torch_model, jax_model = paired_models(taae, jaae, "torch->jax", variant=variant)
    reference = paired_models(taae, jaae, "torch->jax", variant=variant, dropout=0.0)  # the same weights (seed 0)
    rates = {"encoder": 0.25, "decoder": 0.25, "discriminator": 0.2, "discriminator_cat": 0.2}
    assert rates["encoder"] == hparams("aae", variant).dropout and rates["discriminator"] == hparams("aae", variant).discriminator_dropout
    bound = 5 * np.sqrt(0.25 * 0.75 / x.size)  # 5 binomial standard deviations of a kept fraction
    for name, p in rates.items():
        with torch.no_grad():
            t_out = getattr(torch_model, name).dropout(torch.as_tensor(x)).cpu().numpy()
        j_out = np.asarray(getattr(jax_model, name).dropout(jnp.asarray(x)))
        for framework, out in (("torch", t_out), ("jax", j_out)):
            kept = out != 0
            assert abs(kept.mean() - (1 - p)) <= bound, f"{framework} {name}: kept {kept.mean():.4f}, expected {1 - p}"
            np.testing.assert_allclose(out[kept], x[kept].astype(np.float64) / (1 - p), rtol=2**-23, err_msg=f"{framework} {name}")
    with torch.no_grad():
        t_codes = [torch_model.encoder(torch.as_tensor(images))[0].cpu().numpy() for _ in range(2)]
    in_jit = nnx.jit(lambda model, a: model.encoder(a)[0])  # the RNG state is carried out of a compiled function
    j_codes = [np.asarray(in_jit(jax_model, jnp.asarray(images))) for _ in range(2)]
    for framework, (first, second) in (("torch", t_codes), ("jax", j_codes)):
        assert np.abs(first - second).max() > 1e-3, f"{framework}: Q's train-mode codes did not change between calls"
    torch_model.eval()
    jax_model.eval()
    z = hparams("aae", variant).prior_std * np.random.default_rng(1).standard_normal((BATCH, Z_DIM[variant])).astype(np.float32)
    y = np.eye(C, dtype=np.float32)[np.arange(BATCH) % C]
    for name, args in (("encoder", (images,)), ("decoder", (z, y)), ("discriminator", (z,)), ("discriminator_cat", (y,))):
        with torch.no_grad():
            t_eval = getattr(torch_model, name)(*map(torch.as_tensor, args))
            t_ref = getattr(reference[0], name)(*map(torch.as_tensor, args))
        j_eval = getattr(jax_model, name)(*map(jnp.asarray, args))
        j_ref = getattr(reference[1], name)(*map(jnp.asarray, args))
        for t, tr, j, jr in zip(*(o if isinstance(o, tuple) else (o,) for o in (t_eval, t_ref, j_eval, j_ref))):
            np.testing.assert_array_equal(t.cpu().numpy(), tr.cpu().numpy(), err_msg=f"torch eval-mode {name}")
            np.testing.assert_array_equal(np.asarray(j), np.asarray(jr), err_msg=f"JAX eval-mode {name}")
            assert_close(np.asarray(j), t.cpu().numpy(), FORWARD_RTOL, f"eval-mode {name}")


def test_q_runs_in_eval_mode_in_the_compiled_discriminator_phase_and_in_train_mode_in_the_generator_phase(data):
    """Q with dropout 0.5 (the other networks 0): the discriminator phase, compiled in JAX, must see Q's
    eval-mode codes, so both frameworks give the same D loss and the same updated D, whatever their masks;
    and the generator phase Q's train-mode codes, so its loss differs from the eval-mode one."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # torch's dropout masks come from its global generator: the same every run
        _check_q_modes_in_the_regularisation_phases(data)


def _check_q_modes_in_the_regularisation_phases(data) -> None:
    variant = "unsupervised"
    torch_model, jax_model = paired_models(taae, jaae, "torch->jax", variant=variant, dropout=0.0)
    torch_model.encoder.dropout.p = 0.5
    jax_model.encoder.dropout.rate = 0.5
    x, z_prior = make_batches(data, variant, 1)[0]
    t_opt, j_opt = taae.make_optimizer(torch_model), jaae.make_optimizer(jax_model)
    torch_model.encoder.eval()
    with torch.no_grad():
        z_eval = torch_model.encoder(torch.as_tensor(x))[0]
    torch_model.encoder.train()
    with torch.no_grad():
        z_train = torch_model.encoder(torch.as_tensor(x))[0]
        train_d = taae.discriminator_loss(torch_model.discriminator, torch.as_tensor(z_prior), z_train).item()
    (t_d,) = taae.discriminator_step(torch_model, t_opt, torch.as_tensor(x), torch.as_tensor(z_prior))
    j_step = CompiledStep(jaae.discriminator_step, jax_model, j_opt)
    (j_d,) = j_step(jnp.asarray(x), jnp.asarray(z_prior))
    j_step.write_back()
    assert torch_model.encoder.training and not jax_model.encoder.dropout.deterministic  # both back in train mode
    assert_close(float(j_d), t_d.item(), LOSS_RTOL, "D loss with Q in eval mode")
    assert abs(train_d - t_d.item()) > 10 * LOSS_RTOL * abs(t_d.item()), "Q's dropout would not show: the test proves nothing"
    t_sd, j_sd = state_dicts(torch_model, jax_model)
    keys, lr = network_keys(t_sd, ("discriminator",)), hparams("aae", variant).regularization_lr  # Adam's first step: +-lr where the gradient is not tiny
    n_apart = sum(int((np.abs(j_sd[k].astype(np.float64) - t_sd[k]) > 0.1 * lr).sum()) for k in keys)
    assert n_apart <= TRAJECTORY_OUTLIER_MAX_FRACTION * sum(t_sd[k].size for k in keys), f"{n_apart} entries of D moved differently"
    assert (z_eval - z_train).abs().max() > 1e-3
    with torch.no_grad():  # the G loss with Q in eval mode, from the updated D
        torch_model.encoder.eval()
        eval_g = taae.generator_loss(torch_model.encoder, torch_model.discriminator, torch.as_tensor(x)).item()
        torch_model.encoder.train()
    t_g = taae.generator_step(torch_model, t_opt, torch.as_tensor(x)).item()
    j_step = CompiledStep(jaae.generator_step, jax_model, j_opt)
    j_g = float(j_step(jnp.asarray(x)))
    j_step.write_back()
    for framework, g in (("torch", t_g), ("jax", j_g)):
        assert abs(g - eval_g) > 10 * LOSS_RTOL * abs(eval_g), f"{framework}: the generator phase ran Q without dropout"
