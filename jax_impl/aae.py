"""Adversarial autoencoder in JAX, Flax NNX + Optax (docs/architectures.md#adversarial-autoencoder-aae), three variants.

Q (encoder) 784 -> 1000 -> 1000 -> z (linear; 2-d, 10-d semi-supervised),
P (decoder) -> 1000 -> 1000 -> 784, D (discriminator) z -> 1000 -> 1000 -> 1;
Linear, dropout, ReLU per hidden layer. D learns to tell prior samples
z ~ N(0, prior_std^2 I) from codes Q(x), and Q, as its generator, learns to
fool it: the adversarial game replaces a VAE's KL term. Every minibatch
runs three phases, each with its own Adam optimizer(s): (1) reconstruction,
Q and P on the BCE of P(Q(x)); (2) regularisation, D on its loss, Q in eval
mode (no dropout) making the codes; (3) regularisation, Q back in train
mode, on the generator loss.
`unsupervised`: P sees z. `supervised`: P sees [one-hot label, z], so z
keeps the style and the label the digit. `semisupervised`: Q also gives
class logits; P sees [softmax(logits), z]; a second discriminator D_cat
tells one-hot samples of a uniform categorical from softmax(logits); and a
fourth phase trains Q's classifier by cross-entropy on a labelled batch.

Fixes to the blog post and its scripts: the typos (`F.droppout`,
`Q, P = Q_net() = ...`, `D_loss` for `D_loss_gauss`, `P_net(0)`); P had no
ReLU after its second layer (added); D and P return logits, and every loss
takes logits (log-sigmoid / softplus) where the source took logs of
sigmoids plus TINY = 1e-15 (the same values, without log(0) or TINY's bias);
the classifier's cross-entropy is applied to the class logits, where the
source applied it to softmax outputs (softmax twice). The prior's std and
z's size are the variant's (5 and 2; 1 and 10 for semi-supervised, as its
script), and every random draw (prior samples, categorical samples) is the
caller's. D_cat is D's network on the 10-d code (the script's D_cat drops
out once, after its first ReLU). Twin of torch_impl/aae.py: diff the two.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jax_impl.initializers import torch_bias_init, torch_kernel_init
from shared.hparams import hparams, variants


class Encoder(nnx.Module):
    """Q: x (B, 784) -> (z (B, z_dim), class logits (B, 10)); no class logits (None) unless `categorical`."""

    def __init__(self, hp, dropout: float, categorical: bool = False, *, rngs: nnx.Rngs):
        self.lin1 = nnx.Linear(hp.input_dim, hp.hidden_dim, kernel_init=torch_kernel_init, bias_init=torch_bias_init(hp.input_dim), rngs=rngs)
        self.lin2 = nnx.Linear(hp.hidden_dim, hp.hidden_dim, kernel_init=torch_kernel_init, bias_init=torch_bias_init(hp.hidden_dim), rngs=rngs)
        self.lin3gauss = nnx.Linear(hp.hidden_dim, hp.z_dim, kernel_init=torch_kernel_init, bias_init=torch_bias_init(hp.hidden_dim), rngs=rngs)
        self.lin3cat = (nnx.Linear(hp.hidden_dim, hp.n_classes, kernel_init=torch_kernel_init, bias_init=torch_bias_init(hp.hidden_dim), rngs=rngs)
                        if categorical else None)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)

    def __call__(self, x):
        x = jax.nn.relu(self.dropout(self.lin1(x)))
        x = jax.nn.relu(self.dropout(self.lin2(x)))
        z = self.lin3gauss(x)  # linear: the code is to match a Gaussian prior
        return z, None if self.lin3cat is None else self.lin3cat(x)


class Decoder(nnx.Module):
    """P: z (B, z_dim), and if `conditioned` a categorical code y (B, 10) put first, -> pixel logits (B, 784)."""

    def __init__(self, hp, dropout: float, conditioned: bool = False, *, rngs: nnx.Rngs):
        d_in = hp.z_dim + (hp.n_classes if conditioned else 0)
        self.lin1 = nnx.Linear(d_in, hp.hidden_dim, kernel_init=torch_kernel_init, bias_init=torch_bias_init(d_in), rngs=rngs)
        self.lin2 = nnx.Linear(hp.hidden_dim, hp.hidden_dim, kernel_init=torch_kernel_init, bias_init=torch_bias_init(hp.hidden_dim), rngs=rngs)
        self.lin3 = nnx.Linear(hp.hidden_dim, hp.input_dim, kernel_init=torch_kernel_init, bias_init=torch_bias_init(hp.hidden_dim), rngs=rngs)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)

    def __call__(self, z, y=None):
        x = z if y is None else jnp.concatenate([y, z], axis=-1)
        x = jax.nn.relu(self.dropout(self.lin1(x)))
        x = jax.nn.relu(self.dropout(self.lin2(x)))  # the source has no ReLU here
        return self.lin3(x)  # logits: the source's sigmoid moves into the loss


class Discriminator(nnx.Module):
    """D: a code (B, in_dim) -> one logit per example (B,), high for prior samples."""

    def __init__(self, in_dim: int, hp, dropout: float, *, rngs: nnx.Rngs):
        self.lin1 = nnx.Linear(in_dim, hp.hidden_dim, kernel_init=torch_kernel_init, bias_init=torch_bias_init(in_dim), rngs=rngs)
        self.lin2 = nnx.Linear(hp.hidden_dim, hp.hidden_dim, kernel_init=torch_kernel_init, bias_init=torch_bias_init(hp.hidden_dim), rngs=rngs)
        self.lin3 = nnx.Linear(hp.hidden_dim, 1, kernel_init=torch_kernel_init, bias_init=torch_bias_init(hp.hidden_dim), rngs=rngs)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)

    def __call__(self, x):
        x = jax.nn.relu(self.dropout(self.lin1(x)))
        x = jax.nn.relu(self.dropout(self.lin2(x)))
        return self.lin3(x).reshape(-1)  # logits: the source's sigmoid moves into the loss


class AAE(nnx.Module):
    """Q, P and D of the `variant`, and D_cat (semi-supervised; else None).

    `dropout` replaces every network's dropout rate (the parity tests pass 0);
    None keeps the variant's: hp.dropout for Q and P, hp.discriminator_dropout for D and D_cat.
    """

    def __init__(self, variant: str = "unsupervised", dropout: float | None = None, *, rngs: nnx.Rngs):
        if variant not in variants("aae"):
            raise ValueError(f"aae variant '{variant}': expected one of {', '.join(variants('aae'))}")
        hp = hparams("aae", variant)
        semi = variant == "semisupervised"
        self.variant, self.hp = variant, hp
        self.encoder = Encoder(hp, hp.dropout if dropout is None else dropout, categorical=semi, rngs=rngs)
        self.decoder = Decoder(hp, hp.dropout if dropout is None else dropout, conditioned=variant != "unsupervised", rngs=rngs)
        d_dropout = hp.discriminator_dropout if dropout is None else dropout
        self.discriminator = Discriminator(hp.z_dim, hp, d_dropout, rngs=rngs)
        self.discriminator_cat = Discriminator(hp.n_classes, hp, d_dropout, rngs=rngs) if semi else None


class Optimizers(NamedTuple):
    encoder: nnx.Optimizer  # Q on the reconstruction loss, lr
    decoder: nnx.Optimizer  # P on the reconstruction loss, lr
    generator: nnx.Optimizer  # Q fooling the discriminator(s), regularization_lr
    discriminator: nnx.Optimizer  # D, regularization_lr
    discriminator_cat: nnx.Optimizer | None  # D_cat, regularization_lr (semi-supervised; else None)
    classifier: nnx.Optimizer | None  # Q on the labelled cross-entropy, classification_lr (semi-supervised; else None)


def init_model(seed: int, variant: str = "unsupervised", dropout: float | None = None) -> AAE:
    """An AAE of the `variant` with torch's default initialisation scheme, drawn from `seed` (its dropout masks too)."""
    return AAE(variant, dropout, rngs=nnx.Rngs(seed))


def _decoder_code(y, class_logits):
    """What P sees besides z: the labels y (supervised; None: unsupervised), or softmax(class logits) (semi-supervised)."""
    return y if class_logits is None else jax.nn.softmax(class_logits, axis=-1)


def reconstruction_loss(encoder: Encoder, decoder: Decoder, x: jax.Array, y: jax.Array | None = None) -> jax.Array:
    """BCE(P(Q(x)), x) from logits, a mean over the batch and the pixels; y: the supervised variant's one-hot labels."""
    z, class_logits = encoder(x)
    logits = decoder(z, _decoder_code(y, class_logits))
    return jnp.mean(jax.nn.softplus(logits) - x * logits)  # one softplus per pixel (see jax_impl/vae_mlp.py)


def discriminator_loss(discriminator: Discriminator, real: jax.Array, fake: jax.Array) -> jax.Array:
    """-mean(log D(real) + log(1 - D(fake))): real = prior samples, fake = Q's codes, -log sigmoid(a) = softplus(-a)."""
    return (jax.nn.softplus(-discriminator(real)) + jax.nn.softplus(discriminator(fake))).mean()


def generator_loss(encoder: Encoder, discriminator: Discriminator, x: jax.Array, discriminator_cat: Discriminator | None = None) -> jax.Array:
    """-mean(log D(z)), z = Q(x); semi-supervised: plus -mean(log D_cat(softmax(class logits)))."""
    z, class_logits = encoder(x)
    loss = jax.nn.softplus(-discriminator(z)).mean()
    if discriminator_cat is not None:
        loss = loss + jax.nn.softplus(-discriminator_cat(jax.nn.softmax(class_logits, axis=-1))).mean()
    return loss


def classification_loss(encoder: Encoder, x: jax.Array, y: jax.Array) -> jax.Array:
    """Mean cross-entropy of Q's class logits against the integer labels (the source: of softmax outputs)."""
    _, class_logits = encoder(x)
    return optax.softmax_cross_entropy_with_integer_labels(class_logits, y).mean()


def _adam(module: nnx.Module, lr: float) -> nnx.Optimizer:
    return nnx.Optimizer(module, optax.adam(lr), wrt=nnx.Param)


def make_optimizer(model: AAE, lr: float | None = None) -> Optimizers:
    """The source's separate Adam optimizers, at the variant's rate for each phase; `lr` replaces the reconstruction phase's."""
    hp, semi = model.hp, model.variant == "semisupervised"
    lr = hp.lr if lr is None else lr
    return Optimizers(
        encoder=_adam(model.encoder, lr),
        decoder=_adam(model.decoder, lr),
        generator=_adam(model.encoder, hp.regularization_lr),
        discriminator=_adam(model.discriminator, hp.regularization_lr),
        discriminator_cat=_adam(model.discriminator_cat, hp.regularization_lr) if semi else None,
        classifier=_adam(model.encoder, hp.classification_lr) if semi else None,
    )


def reconstruction_step(model: AAE, optimizer: Optimizers, x: jax.Array, y: jax.Array | None = None) -> jax.Array:
    """Phase 1: Q (encoder optimizer) and P (decoder optimizer) on the reconstruction loss."""
    grad_fn = nnx.value_and_grad(reconstruction_loss, argnums=(0, 1))
    loss, (encoder_grads, decoder_grads) = grad_fn(model.encoder, model.decoder, x, y)
    optimizer.encoder.update(model.encoder, encoder_grads)
    optimizer.decoder.update(model.decoder, decoder_grads)
    return loss


def _discriminator_update(discriminator: Discriminator, optimizer: nnx.Optimizer, real: jax.Array, fake: jax.Array) -> jax.Array:
    loss, grads = nnx.value_and_grad(discriminator_loss)(discriminator, real, fake)
    optimizer.update(discriminator, grads)
    return loss


def discriminator_step(
    model: AAE, optimizer: Optimizers, x: jax.Array, z_prior: jax.Array, y_prior: jax.Array | None = None,
) -> tuple[jax.Array, ...]:
    """Phase 2: D on prior samples z_prior vs Q(x), Q in eval mode; semi-supervised also D_cat on y_prior (one-hot) vs softmax.

    Returns (d_loss,) or (d_loss, d_cat_loss).
    """
    model.encoder.eval()  # no dropout in Q for this phase, as the source (a static flag: set while the step is traced)
    z_fake, class_logits = model.encoder(x)  # plain arrays: no gradient into Q
    model.encoder.train()
    losses = (_discriminator_update(model.discriminator, optimizer.discriminator, z_prior, z_fake),)
    if y_prior is not None:
        y_fake = jax.nn.softmax(class_logits, axis=-1)
        losses += (_discriminator_update(model.discriminator_cat, optimizer.discriminator_cat, y_prior, y_fake),)
    return losses


def generator_step(model: AAE, optimizer: Optimizers, x: jax.Array) -> jax.Array:
    """Phase 3: Q, in train mode, with the generator optimizer, to fool D (semi-supervised: and D_cat)."""
    # Q's gradients only, not the discriminators' (plain arguments, whose dropout keys are carried out).
    loss, grads = nnx.value_and_grad(generator_loss)(model.encoder, model.discriminator, x, model.discriminator_cat)
    optimizer.generator.update(model.encoder, grads)
    return loss


def classification_step(model: AAE, optimizer: Optimizers, x: jax.Array, y: jax.Array) -> jax.Array:
    """Phase 4 (semi-supervised): Q's classifier (classifier optimizer) on labelled images x with integer labels y."""
    loss, grads = nnx.value_and_grad(classification_loss)(model.encoder, x, y)
    optimizer.classifier.update(model.encoder, grads)
    return loss


def train_step_unsupervised(model: AAE, optimizer: Optimizers, x: jax.Array, z_prior: jax.Array) -> jax.Array:
    """Reconstruction, discriminator and generator phases: [recon, d, g]."""
    recon = reconstruction_step(model, optimizer, x)
    (d,) = discriminator_step(model, optimizer, x, z_prior)
    g = generator_step(model, optimizer, x)
    return jnp.stack([recon, d, g])


def train_step_supervised(model: AAE, optimizer: Optimizers, x: jax.Array, y: jax.Array, z_prior: jax.Array) -> jax.Array:
    """As unsupervised, P seeing the one-hot integer labels y: [recon, d, g]."""
    recon = reconstruction_step(model, optimizer, x, jax.nn.one_hot(y, model.hp.n_classes, dtype=x.dtype))
    (d,) = discriminator_step(model, optimizer, x, z_prior)
    g = generator_step(model, optimizer, x)
    return jnp.stack([recon, d, g])


def train_step_semisupervised(
    model: AAE, optimizer: Optimizers, x: jax.Array, z_prior: jax.Array, y_prior: jax.Array,
    x_labelled: jax.Array, y_labelled: jax.Array,
) -> jax.Array:
    """The three phases on unlabelled x (y_prior: one-hot categorical samples), then classification on
    (x_labelled, integer y_labelled): [recon, d, d_cat, g, classification]."""
    recon = reconstruction_step(model, optimizer, x)
    d, d_cat = discriminator_step(model, optimizer, x, z_prior, y_prior)
    g = generator_step(model, optimizer, x)
    classification = classification_step(model, optimizer, x_labelled, y_labelled)
    return jnp.stack([recon, d, d_cat, g, classification])


def encode(model: AAE, x: jax.Array) -> dict[str, jax.Array]:
    """The codes: {"z"}, and semi-supervised {"class_logits"} too."""
    z, class_logits = model.encoder(x)
    return {"z": z} if class_logits is None else {"z": z, "class_logits": class_logits}


def decode(model: AAE, z: jax.Array, y: jax.Array) -> dict[str, jax.Array]:
    """Images P(z, y) (B, 784) in [0, 1], the sigmoid's means; y one-hot (B, 10), ignored by the unsupervised variant."""
    logits = model.decoder(z, None if model.variant == "unsupervised" else y)
    return {"images": jax.nn.sigmoid(logits)}


def eval_outputs(model: AAE, x: jax.Array, y: jax.Array) -> dict[str, jax.Array]:
    """What the test metrics need: reconstruction logits with P conditioned as in training (y one-hot (B, 10):
    the supervised variant's labels, ignored by the others), z, and semi-supervised the class logits."""
    z, class_logits = model.encoder(x)
    logits = model.decoder(z, _decoder_code(y if model.variant == "supervised" else None, class_logits))
    out = {"logits": logits, "z": z}
    return out if class_logits is None else {**out, "class_logits": class_logits}
