"""Autoencoder in JAX, Flax NNX + Optax (docs/architectures.md#autoencoder-autoencoder), two variants.

`mlp`: encoder 784 -> 128 -> 64 -> 12 with a ReLU after every layer (the
12-d code too), decoder 12 -> 64 -> 128 -> 784 with ReLUs between. `conv`:
Conv(1,16,3,p1) ReLU MaxPool2, Conv(16,8,3,p1) ReLU MaxPool2, then
ConvTranspose(8,16,3,s2,p0) ReLU, ConvTranspose(16,1,3,s2,p1) and a centre
crop: 28 -> 14 -> 7 -> 15 -> 29 -> 28. Both take (B, 784) images in [0, 1]
and return logits (B, 784): the source's final Sigmoid moves into the loss,
binary cross-entropy from logits (the same value as BCELoss on the sigmoid,
without its log(0) clamping: stable). Fix: the source uses CenterCrop without
defining it; it is a centre slice (layers.center_crop). Adam. Twin of
torch_impl/autoencoder.py: diff the two.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jax_impl.initializers import torch_bias_init, torch_kernel_init, torch_transpose_kernel_init
from jax_impl.layers import ConvTransposeByPhases, center_crop, max_pool2
from shared.hparams import AUTOENCODER as HP


class Autoencoder(nnx.Module):
    def __init__(self, hp=HP, *, rngs: nnx.Rngs):
        d_in, h1, h2, code = hp.sizes
        self.encoder1 = nnx.Linear(d_in, h1, kernel_init=torch_kernel_init, bias_init=torch_bias_init(d_in), rngs=rngs)
        self.encoder2 = nnx.Linear(h1, h2, kernel_init=torch_kernel_init, bias_init=torch_bias_init(h1), rngs=rngs)
        self.encoder3 = nnx.Linear(h2, code, kernel_init=torch_kernel_init, bias_init=torch_bias_init(h2), rngs=rngs)
        self.decoder1 = nnx.Linear(code, h2, kernel_init=torch_kernel_init, bias_init=torch_bias_init(code), rngs=rngs)
        self.decoder2 = nnx.Linear(h2, h1, kernel_init=torch_kernel_init, bias_init=torch_bias_init(h2), rngs=rngs)
        self.decoder3 = nnx.Linear(h1, d_in, kernel_init=torch_kernel_init, bias_init=torch_bias_init(h1), rngs=rngs)

    def __call__(self, x):
        x = jax.nn.relu(self.encoder1(x))
        x = jax.nn.relu(self.encoder2(x))
        code = jax.nn.relu(self.encoder3(x))  # the source's ReLU after the code too
        x = jax.nn.relu(self.decoder1(code))
        x = jax.nn.relu(self.decoder2(x))
        return self.decoder3(x)  # logits


class ConvAutoencoder(nnx.Module):
    def __init__(self, hp=HP, *, rngs: nnx.Rngs):
        c_in, c1, c2 = hp.channels
        self.conv1 = nnx.Conv(c_in, c1, (3, 3), padding=((1, 1), (1, 1)), kernel_init=torch_kernel_init, bias_init=torch_bias_init(c_in * 3 * 3), rngs=rngs)
        self.conv2 = nnx.Conv(c1, c2, (3, 3), padding=((1, 1), (1, 1)), kernel_init=torch_kernel_init, bias_init=torch_bias_init(c1 * 3 * 3), rngs=rngs)
        self.deconv1 = ConvTransposeByPhases(c2, c1, (3, 3), strides=(2, 2), padding=((2, 2), (2, 2)),  # torch's padding=0 is k - 1 - 0 zeros a side
                                             kernel_init=torch_transpose_kernel_init, bias_init=torch_bias_init(c1 * 3 * 3), rngs=rngs)
        self.deconv2 = ConvTransposeByPhases(c1, c_in, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)),  # torch's padding=1 is k - 1 - 1 zeros a side
                                             kernel_init=torch_transpose_kernel_init, bias_init=torch_bias_init(c_in * 3 * 3), rngs=rngs)

    def __call__(self, x):
        x = x.reshape(-1, 28, 28, 1)  # NHWC, flax's layout
        x = max_pool2(jax.nn.relu(self.conv1(x)))  # 14x14
        x = max_pool2(jax.nn.relu(self.conv2(x)))  # 7x7
        x = jax.nn.relu(self.deconv1(x))  # 15x15
        x = center_crop(self.deconv2(x), 28, 28)  # 29x29 -> 28x28
        return x.reshape(x.shape[0], -1)  # logits (B, 784); one channel, so the same order in either layout


VARIANTS = {"mlp": Autoencoder, "conv": ConvAutoencoder}


def init_model(seed: int, variant: str = "mlp") -> Autoencoder | ConvAutoencoder:
    """An autoencoder of the `variant` ("mlp" or "conv") with torch's default initialisation scheme, drawn from `seed`."""
    if variant not in VARIANTS:
        raise ValueError(f"autoencoder variant '{variant}': expected one of {', '.join(VARIANTS)}")
    return VARIANTS[variant](rngs=nnx.Rngs(seed))


def loss_fn(model: Autoencoder | ConvAutoencoder, x: jax.Array) -> jax.Array:
    """Binary cross-entropy of the reconstruction, from logits, averaged over the batch and the pixels (nn.BCELoss())."""
    logits = model(x)
    return jnp.mean(jax.nn.softplus(logits) - x * logits)  # one softplus per pixel (see jax_impl/vae_mlp.py)


def make_optimizer(model: Autoencoder | ConvAutoencoder, lr: float = HP.lr) -> nnx.Optimizer:
    return nnx.Optimizer(model, optax.adam(lr), wrt=nnx.Param)


def train_step(model: Autoencoder | ConvAutoencoder, optimizer: nnx.Optimizer, x: jax.Array) -> jax.Array:
    loss, grads = nnx.value_and_grad(loss_fn)(model, x)
    optimizer.update(model, grads)
    return loss


def eval_outputs(model: Autoencoder | ConvAutoencoder, x: jax.Array) -> dict[str, jax.Array]:
    """What the test metrics need: the reconstruction's logits."""
    return {"logits": model(x)}


def reconstruct(model: Autoencoder | ConvAutoencoder, x: jax.Array) -> dict[str, jax.Array]:
    """The reconstructed images (B, 784) in [0, 1]: the source's Sigmoid output."""
    return {"images": jax.nn.sigmoid(model(x))}
