"""Convolutional VAE in JAX, Flax NNX + Optax (docs/architectures.md#convolutional-vae-vae).

Encoder: BatchNorm on the input, Conv(1,32,k4,s2,p1) BN LeakyReLU,
Conv(32,64,k4,s2,p1) BN LeakyReLU, flattened 64*7*7 in (C, H, W) order,
Linear heads for the mean and the log-variance of q(z|x) (20-d).
Decoder: Linear(20 -> 64*7*7), ConvTranspose(64,32,k3,s2,p0) BN ReLU,
ConvTranspose(32,1,k3,s2,p1), centre crop 29x29 -> 28x28, returning
Bernoulli logits (the source's Sigmoid moves into the likelihood and
reconstruct/sample). Fix: the source adds the KL to a mean-reduced
reconstruction loss, which weights the KL ~784x too heavily; the loss here is
the true negative ELBO in nats, the Bernoulli log-likelihood summed over the
pixels minus the KL, per image, averaged over the batch. conv1, conv2
and deconv1 keep their biases, as in the source, although the BatchNorm
after each removes them in train mode (their gradient is 0). Twin of
torch_impl/vae.py: diff the two.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jax_impl.initializers import torch_bias_init, torch_kernel_init, torch_transpose_kernel_init
from jax_impl.layers import BatchNorm, ConvTransposeByPhases, center_crop
from jax_impl.vae_mlp import bernoulli_log_likelihood  # log p(x|z) per image from logits, the MLP VAE's
from shared.hparams import VAE as HP


class VAE(nnx.Module):
    def __init__(self, hp=HP, *, rngs: nnx.Rngs):
        c_in, c1, c2 = hp.channels
        self.slope = hp.leaky_relu_slope
        self.input_bn = BatchNorm(c_in, eps=hp.batchnorm_eps, momentum=hp.batchnorm_momentum)
        self.conv1 = nnx.Conv(c_in, c1, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)),
                              kernel_init=torch_kernel_init, bias_init=torch_bias_init(c_in * 4 * 4), rngs=rngs)  # 28x28 -> 14x14
        self.bn1 = BatchNorm(c1, eps=hp.batchnorm_eps, momentum=hp.batchnorm_momentum)
        self.conv2 = nnx.Conv(c1, c2, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)),
                              kernel_init=torch_kernel_init, bias_init=torch_bias_init(c1 * 4 * 4), rngs=rngs)  # -> 7x7
        self.bn2 = BatchNorm(c2, eps=hp.batchnorm_eps, momentum=hp.batchnorm_momentum)
        self.mean = nnx.Linear(c2 * 7 * 7, hp.latent_dim, kernel_init=torch_kernel_init, bias_init=torch_bias_init(c2 * 7 * 7), rngs=rngs)
        self.logvar = nnx.Linear(c2 * 7 * 7, hp.latent_dim, kernel_init=torch_kernel_init, bias_init=torch_bias_init(c2 * 7 * 7), rngs=rngs)
        self.develop = nnx.Linear(hp.latent_dim, c2 * 7 * 7, kernel_init=torch_kernel_init, bias_init=torch_bias_init(hp.latent_dim), rngs=rngs)
        self.unflattened = (c2, 7, 7)  # develop's output as (C, H, W)
        self.deconv1 = ConvTransposeByPhases(c2, c1, (3, 3), strides=(2, 2), padding=((2, 2), (2, 2)),  # torch's padding=0 is k - 1 - 0 zeros a side
                                             kernel_init=torch_transpose_kernel_init, bias_init=torch_bias_init(c1 * 3 * 3), rngs=rngs)  # 7x7 -> 15x15
        self.bn3 = BatchNorm(c1, eps=hp.batchnorm_eps, momentum=hp.batchnorm_momentum)
        self.deconv2 = ConvTransposeByPhases(c1, c_in, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)),  # torch's padding=1 is k - 1 - 1 zeros a side
                                             kernel_init=torch_transpose_kernel_init, bias_init=torch_bias_init(c_in * 3 * 3), rngs=rngs)  # -> 29x29

    def encode(self, x):
        x = self.input_bn(x.reshape(-1, 28, 28, 1))  # NHWC, flax's layout
        x = jax.nn.leaky_relu(self.bn1(self.conv1(x)), self.slope)
        x = jax.nn.leaky_relu(self.bn2(self.conv2(x)), self.slope)
        # NHWC -> NCHW before flattening (and after unflattening in decode), so
        # that the heads and `develop` see torch's (C, H, W) order: their
        # weights convert as a plain transpose and one weight file serves both.
        x = x.transpose(0, 3, 1, 2).reshape(x.shape[0], -1)
        return self.mean(x), self.logvar(x)

    def decode(self, z):
        x = self.develop(z).reshape(-1, *self.unflattened).transpose(0, 2, 3, 1)  # from (C, H, W) order
        x = jax.nn.relu(self.bn3(self.deconv1(x)))
        x = center_crop(self.deconv2(x), 28, 28)
        return x.reshape(x.shape[0], -1)  # Bernoulli logits (B, 784)

    def __call__(self, x, eps):
        mean, logvar = self.encode(x)
        z = reparameterize(mean, logvar, eps)
        return self.decode(z), mean, logvar


def init_model(seed: int) -> VAE:
    """A VAE with torch's default initialisation scheme, drawn from `seed`."""
    return VAE(rngs=nnx.Rngs(seed))


def reparameterize(mean: jax.Array, logvar: jax.Array, eps: jax.Array) -> jax.Array:
    return mean + jnp.exp(0.5 * logvar) * eps


def kl_divergence(mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """KL(q(z|x) || N(0, I)) per image."""
    return 0.5 * jnp.sum(jnp.exp(logvar) + mean**2 - 1 - logvar, axis=-1)


def loss_fn(model: VAE, x: jax.Array, eps: jax.Array) -> jax.Array:
    """The negative ELBO in nats: mean over the batch of KL - log p(x|z) (the fix of the source's mean-reduced BCE)."""
    logits, mean, logvar = model(x, eps)
    elbo = bernoulli_log_likelihood(x, logits) - kl_divergence(mean, logvar)
    return -elbo.mean()


def make_optimizer(model: VAE, lr: float = HP.lr) -> nnx.Optimizer:
    return nnx.Optimizer(model, optax.adam(lr), wrt=nnx.Param)


def train_step(model: VAE, optimizer: nnx.Optimizer, x: jax.Array, eps: jax.Array) -> jax.Array:
    loss, grads = nnx.value_and_grad(loss_fn)(model, x, eps)
    optimizer.update(model, grads)
    return loss


def eval_outputs(model: VAE, x: jax.Array, eps: jax.Array) -> dict[str, jax.Array]:
    """What the test metrics need: decoder logits at z = mean + exp(logvar / 2) * eps, mean, logvar."""
    logits, mean, logvar = model(x, eps)
    return {"logits": logits, "mean": mean, "logvar": logvar}


def reconstruct(model: VAE, x: jax.Array) -> dict[str, jax.Array]:
    """Bernoulli means of the decoder at the posterior mean."""
    mean, _ = model.encode(x)
    return {"images": jax.nn.sigmoid(model.decode(mean))}


def sample(model: VAE, z: jax.Array, u: jax.Array) -> dict[str, jax.Array]:
    """Generative sampling: p = sigmoid(decode(z)), pixels = (u < p) with u ~ U(0, 1) given."""
    p = jax.nn.sigmoid(model.decode(z))
    return {"means": p, "pixels": (u < p).astype(p.dtype)}
