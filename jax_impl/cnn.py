"""CNN classifier in JAX, Flax NNX + Optax (docs/architectures.md#cnn-classifier-cnn).

Three conv-bn-relu blocks, conv 1->16 (k1), conv 16->32 (k3, pad 1), max-pool 2,
conv 32->64 (k3, pad 1), max-pool 2; then Linear(64*7*7 -> 128, no bias),
BatchNorm1d, ReLU, Dropout, Linear(128 -> 10), returning logits; cross-entropy,
Adam. The source ends in Softmax and feeds that to a cross-entropy loss, which
applies softmax again (softmax twice); we return logits. Twin of
torch_impl/cnn.py: diff the two.
"""
from __future__ import annotations

import jax
import optax
from flax import nnx

from jax_impl.initializers import torch_bias_init, torch_kernel_init
from jax_impl.layers import BatchNorm, max_pool2
from shared.hparams import CNN as HP


class CNN(nnx.Module):
    def __init__(self, hp=HP, dropout: float | None = None, *, rngs: nnx.Rngs):
        """`dropout` replaces hp.dropout (the benchmark and the parity tests pass 0)."""
        c_in, c1, c2, c3 = hp.channels
        self.conv1 = nnx.Conv(c_in, c1, (1, 1), padding=((0, 0), (0, 0)), use_bias=False, kernel_init=torch_kernel_init, rngs=rngs)
        self.bn1 = BatchNorm(c1, eps=hp.batchnorm_eps, momentum=hp.batchnorm_momentum)
        self.conv2 = nnx.Conv(c1, c2, (3, 3), padding=((1, 1), (1, 1)), use_bias=False, kernel_init=torch_kernel_init, rngs=rngs)
        self.bn2 = BatchNorm(c2, eps=hp.batchnorm_eps, momentum=hp.batchnorm_momentum)
        self.conv3 = nnx.Conv(c2, c3, (3, 3), padding=((1, 1), (1, 1)), use_bias=False, kernel_init=torch_kernel_init, rngs=rngs)
        self.bn3 = BatchNorm(c3, eps=hp.batchnorm_eps, momentum=hp.batchnorm_momentum)
        self.fc1 = nnx.Linear(c3 * 7 * 7, hp.hidden_dim, use_bias=False, kernel_init=torch_kernel_init, rngs=rngs)  # 28x28 -> 14x14 -> 7x7 after two pools
        self.bn4 = BatchNorm(hp.hidden_dim, eps=hp.batchnorm_eps, momentum=hp.batchnorm_momentum)
        self.dropout = nnx.Dropout(hp.dropout if dropout is None else dropout, rngs=rngs)
        self.out = nnx.Linear(hp.hidden_dim, hp.num_classes, kernel_init=torch_kernel_init, bias_init=torch_bias_init(hp.hidden_dim), rngs=rngs)

    def __call__(self, x):
        x = x.reshape(-1, 28, 28, 1)  # NHWC, flax's layout
        x = jax.nn.relu(self.bn1(self.conv1(x)))
        x = jax.nn.relu(self.bn2(self.conv2(x)))
        x = max_pool2(x)
        x = jax.nn.relu(self.bn3(self.conv3(x)))
        x = max_pool2(x)
        # NHWC -> NCHW before flattening, so that fc1 sees its inputs in torch's
        # (C, H, W) order: then fc1's weight converts as a plain transpose and
        # one weight file serves both frameworks.
        x = x.transpose(0, 3, 1, 2).reshape(x.shape[0], -1)
        x = self.dropout(jax.nn.relu(self.bn4(self.fc1(x))))
        return self.out(x)  # logits


def init_model(seed: int, dropout: float | None = None) -> CNN:
    """A CNN with torch's default initialisation scheme, drawn from `seed`."""
    return CNN(dropout=dropout, rngs=nnx.Rngs(seed))


def loss_fn(model: CNN, x: jax.Array, y: jax.Array) -> jax.Array:
    """Mean cross-entropy of the logits against the integer labels."""
    return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()


def make_optimizer(model: CNN, lr: float = HP.lr) -> nnx.Optimizer:
    return nnx.Optimizer(model, optax.adam(lr), wrt=nnx.Param)


def train_step(model: CNN, optimizer: nnx.Optimizer, x: jax.Array, y: jax.Array) -> jax.Array:
    loss, grads = nnx.value_and_grad(loss_fn)(model, x, y)
    optimizer.update(model, grads)
    return loss


def eval_outputs(model: CNN, x: jax.Array) -> dict[str, jax.Array]:
    """What the test metrics need: the logits."""
    return {"logits": model(x)}
