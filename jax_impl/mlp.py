"""MLP classifier in JAX, Flax NNX + Optax (docs/architectures.md#mlp-classifier-mlp).

784 -> 500 -> 200 -> 100 -> 10 with ReLU between layers, returning logits;
cross-entropy, Adam. Twin of torch_impl/mlp.py: diff the two.
"""
from __future__ import annotations

import jax
import optax
from flax import nnx

from jax_impl.initializers import torch_bias_init, torch_kernel_init
from shared.hparams import MLP as HP


class MLP(nnx.Module):
    def __init__(self, hp=HP, *, rngs: nnx.Rngs):
        d_in, d1, d2, d3, n_classes = hp.sizes
        self.hidden1 = nnx.Linear(d_in, d1, kernel_init=torch_kernel_init, bias_init=torch_bias_init(d_in), rngs=rngs)
        self.hidden2 = nnx.Linear(d1, d2, kernel_init=torch_kernel_init, bias_init=torch_bias_init(d1), rngs=rngs)
        self.hidden3 = nnx.Linear(d2, d3, kernel_init=torch_kernel_init, bias_init=torch_bias_init(d2), rngs=rngs)
        self.out = nnx.Linear(d3, n_classes, kernel_init=torch_kernel_init, bias_init=torch_bias_init(d3), rngs=rngs)

    def __call__(self, x):
        x = jax.nn.relu(self.hidden1(x))
        x = jax.nn.relu(self.hidden2(x))
        x = jax.nn.relu(self.hidden3(x))
        return self.out(x)  # logits


def init_model(seed: int) -> MLP:
    """An MLP with torch's default initialisation scheme, drawn from `seed`."""
    return MLP(rngs=nnx.Rngs(seed))


def loss_fn(model: MLP, x: jax.Array, y: jax.Array) -> jax.Array:
    """Mean cross-entropy of the logits against the integer labels."""
    return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()


def make_optimizer(model: MLP, lr: float = HP.lr) -> nnx.Optimizer:
    return nnx.Optimizer(model, optax.adam(lr), wrt=nnx.Param)


def train_step(model: MLP, optimizer: nnx.Optimizer, x: jax.Array, y: jax.Array) -> jax.Array:
    loss, grads = nnx.value_and_grad(loss_fn)(model, x, y)
    optimizer.update(model, grads)
    return loss


def eval_outputs(model: MLP, x: jax.Array) -> dict[str, jax.Array]:
    """What the test metrics need: the logits."""
    return {"logits": model(x)}
