"""DCGAN for 28x28 MNIST in JAX, Flax NNX + Optax (docs/architectures.md#dcgan-gan).

Generator: latent z (100) -> ConvTranspose to 128 x 7x7 -> 64 x 14x14 ->
1 x 28x28, BatchNorm + ReLU after the first two, Tanh at the end: images in
[-1, 1]. Discriminator, its mirror: Conv 1 -> 64 x 14x14 (LeakyReLU 0.2, no
BatchNorm) -> 128 x 7x7 (BatchNorm, LeakyReLU 0.2) -> Conv 7x7 to one logit
per image. No convolution biases (each is followed by a BatchNorm that would
cancel them; the last ones too, as in the pytorch DCGAN example). DCGAN's
initialisation: weights ~ N(0, 0.02), BatchNorm scales ~ N(1, 0.02). Binary
cross-entropy with real = 1 and fake = 0, a discriminator step then a
generator step, each with its own Adam(2e-4, beta1 0.5); the generator's
loss is the non-saturating -log D(G(z)).

The source crashes as written: its modules never call super().__init__(),
and its discriminator's output keeps the shape (B, 1, 1, 1), which the loss
against (B,) labels refuses; we flatten it to one value per image. It also
ends the discriminator in a Sigmoid; we return logits and let the loss apply
it (binary cross-entropy from logits: the same value, without log(0)).
Twin of torch_impl/gan.py: diff the two.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jax_impl.layers import BatchNorm, ConvTransposeByPhases
from shared.hparams import GAN as HP


class Generator(nnx.Module):
    def __init__(self, hp=HP, *, rngs: nnx.Rngs):
        c1, c2, c3 = hp.generator_channels
        self.deconv1 = ConvTransposeByPhases(hp.latent_dim, c1, (7, 7), padding=((6, 6), (6, 6)),  # torch's padding=0 is k - 1 - 0 zeros a side
                                             use_bias=False, rngs=rngs)  # 1x1 -> 7x7
        self.bn1 = BatchNorm(c1, eps=hp.batchnorm_eps, momentum=hp.batchnorm_momentum)
        self.deconv2 = ConvTransposeByPhases(c1, c2, (4, 4), strides=(2, 2), padding=((2, 2), (2, 2)),  # torch's padding=1 is k - 1 - 1 zeros a side
                                             use_bias=False, rngs=rngs)  # 7x7 -> 14x14
        self.bn2 = BatchNorm(c2, eps=hp.batchnorm_eps, momentum=hp.batchnorm_momentum)
        self.deconv3 = ConvTransposeByPhases(c2, c3, (4, 4), strides=(2, 2), padding=((2, 2), (2, 2)),  # torch's padding=1 is k - 1 - 1 zeros a side
                                             use_bias=False, rngs=rngs)  # 14x14 -> 28x28

    def __call__(self, z):
        x = z.reshape(len(z), 1, 1, -1)  # a 1x1 image with latent_dim channels, NHWC
        x = jax.nn.relu(self.bn1(self.deconv1(x)))
        x = jax.nn.relu(self.bn2(self.deconv2(x)))
        return jnp.tanh(self.deconv3(x)).reshape(len(z), -1)  # (B, 784) in [-1, 1]; one channel: NHWC flattens as NCHW


class Discriminator(nnx.Module):
    def __init__(self, hp=HP, *, rngs: nnx.Rngs):
        c_in, c1, c2 = hp.discriminator_channels
        self.conv1 = nnx.Conv(c_in, c1, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)), use_bias=False, rngs=rngs)  # 28x28 -> 14x14
        self.conv2 = nnx.Conv(c1, c2, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)), use_bias=False, rngs=rngs)  # 14x14 -> 7x7
        self.bn2 = BatchNorm(c2, eps=hp.batchnorm_eps, momentum=hp.batchnorm_momentum)
        self.conv3 = nnx.Conv(c2, 1, (7, 7), padding=((0, 0), (0, 0)), use_bias=False, rngs=rngs)  # 7x7 -> 1x1
        self.slope = hp.leaky_relu_slope

    def __call__(self, x):
        x = x.reshape(-1, 28, 28, 1)  # NHWC, flax's layout
        x = jax.nn.leaky_relu(self.conv1(x), self.slope)
        x = jax.nn.leaky_relu(self.bn2(self.conv2(x)), self.slope)
        return self.conv3(x).reshape(-1)  # one logit per image, (B,): the source kept (B, 1, 1, 1)


class GAN(nnx.Module):
    def __init__(self, hp=HP, *, rngs: nnx.Rngs):
        self.hp = hp
        self.generator = Generator(hp, rngs=rngs)
        self.discriminator = Discriminator(hp, rngs=rngs)
        for _, module in nnx.iter_modules(self):  # every layer, as torch's self.apply
            _dcgan_init(module, hp.init_std, rngs)


class Optimizers(NamedTuple):
    discriminator: nnx.Optimizer
    generator: nnx.Optimizer


def _dcgan_init(module: nnx.Module, std: float, rngs: nnx.Rngs) -> None:
    """DCGAN's initialisation, applied to every layer: weights ~ N(0, std), BatchNorm scale ~ N(1, std), bias 0."""
    if isinstance(module, (nnx.Conv, nnx.ConvTranspose)):
        module.kernel[...] = std * jax.random.normal(rngs.params(), module.kernel.shape)
    elif isinstance(module, BatchNorm):
        module.scale[...] = 1.0 + std * jax.random.normal(rngs.params(), module.scale.shape)
        module.bias[...] = jnp.zeros_like(module.bias[...])


def init_model(seed: int) -> GAN:
    """A GAN with DCGAN's initialisation, drawn from `seed`."""
    return _init_compiled(jax.random.key(seed))


@nnx.jit  # one compiled program for every seed: eagerly, each draw compiles on its own (docs/architectures.md#framework-side-differences)
def _init_compiled(key: jax.Array) -> GAN:
    return GAN(rngs=nnx.Rngs(key))


def discriminator_loss(discriminator: Discriminator, generator: Generator, x: jax.Array, z: jax.Array) -> jax.Array:
    """BCE(D(x), 1) + BCE(D(G(z)), 0), each a batch mean; no gradient into the generator."""
    real = discriminator(x)
    fake = discriminator(jax.lax.stop_gradient(generator(z)))
    return (
        optax.sigmoid_binary_cross_entropy(real, jnp.ones_like(real)).mean()
        + optax.sigmoid_binary_cross_entropy(fake, jnp.zeros_like(fake)).mean()
    )


def generator_loss(generator: Generator, discriminator: Discriminator, z: jax.Array) -> jax.Array:
    """BCE(D(G(z)), 1), a batch mean: the non-saturating -log D(G(z))."""
    fake = discriminator(generator(z))
    return optax.sigmoid_binary_cross_entropy(fake, jnp.ones_like(fake)).mean()


def make_optimizer(model: GAN, lr: float = HP.lr) -> Optimizers:
    b1 = model.hp.beta1
    return Optimizers(
        discriminator=nnx.Optimizer(model.discriminator, optax.adam(lr, b1=b1), wrt=nnx.Param),
        generator=nnx.Optimizer(model.generator, optax.adam(lr, b1=b1), wrt=nnx.Param),
    )


def discriminator_step(model: GAN, optimizer: Optimizers, x: jax.Array, z: jax.Array) -> jax.Array:
    # The generator is a plain argument: no gradient, but its BatchNorm statistics are carried out.
    loss, grads = nnx.value_and_grad(discriminator_loss)(model.discriminator, model.generator, x, z)
    optimizer.discriminator.update(model.discriminator, grads)
    return loss


def generator_step(model: GAN, optimizer: Optimizers, z: jax.Array) -> jax.Array:
    # The generator's gradients only, not the discriminator's (whose statistics are carried out too).
    loss, grads = nnx.value_and_grad(generator_loss)(model.generator, model.discriminator, z)
    optimizer.generator.update(model.generator, grads)
    return loss


def train_step(model: GAN, optimizer: Optimizers, x: jax.Array, z_d: jax.Array, z_g: jax.Array) -> jax.Array:
    """One discriminator step (latents z_d), then one generator step (latents z_g): [d_loss, g_loss]."""
    d_loss = discriminator_step(model, optimizer, x, z_d)
    g_loss = generator_step(model, optimizer, z_g)
    return jnp.stack([d_loss, g_loss])


def sample(model: GAN, z: jax.Array) -> dict[str, jax.Array]:
    """Images G(z), (B, 784) in [-1, 1]."""
    return {"images": model.generator(z)}
