"""Character-level RNN name classifier in JAX, Flax NNX + Optax (docs/architectures.md#character-level-rnn-name-classifier-rnn).

The source's cell: combined = concat(char (57), hidden (128)); the next
hidden state is hid_fc(combined), with no nonlinearity, and the prediction is
log_softmax(out_fc(combined)). Two execution forms of the same model: the
source's loop, one name at a time (`*_per_name`), and a batched form over
zero-padded, length-masked names; their losses and gradients agree.
Twin of torch_impl/rnn.py: diff the two.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jax_impl.initializers import torch_bias_init, torch_kernel_init
from shared.hparams import RNN_PER_NAME as HP


class RNN(nnx.Module):
    """The source's RNN, with its three bugs fixed.

    - `criterion` is never defined in the source: the loss is the NLL of the
      log-probabilities the model returns (what nn.NLLLoss computes).
    - `p.data.add_(-.001, p.grad.data)` uses the add_(scalar, tensor)
      overload, deprecated (torch 2.13 still runs it, with a warning): the
      update is plain SGD from make_optimizer, p -= lr * grad, the same step
      as p.data.add_(p.grad, alpha=-lr) (a test checks this).
    - `nn.LogSoftmax()` without `dim` is deprecated (an implicit dim): axis=-1.
    `__call__` takes a batch of characters (B, 57) rather than the source's
    one character reshaped with view(1, -1); B = 1 is the source.
    """

    def __init__(self, n_classes, hp=HP, *, rngs: nnx.Rngs):
        self.hidden_dim = hp.hidden_dim
        d_in = hp.n_letters + hp.hidden_dim  # a character and the hidden state, concatenated
        self.hid_fc = nnx.Linear(d_in, hp.hidden_dim, kernel_init=torch_kernel_init, bias_init=torch_bias_init(d_in), rngs=rngs)
        self.out_fc = nnx.Linear(d_in, n_classes, kernel_init=torch_kernel_init, bias_init=torch_bias_init(d_in), rngs=rngs)

    def __call__(self, inputs, hidden):
        combined = jnp.concatenate([inputs, hidden], axis=1)
        return jax.nn.log_softmax(self.out_fc(combined), axis=-1), self.hid_fc(combined)


def init_model(seed: int, n_classes: int = 18) -> RNN:
    """An RNN with torch's default initialisation scheme, drawn from `seed`."""
    return RNN(n_classes, rngs=nnx.Rngs(seed))


def loss_fn_per_name(model: RNN, chars: jax.Array, y: jax.Array) -> jax.Array:
    """The source's loop on one name, chars (L, 57), y (1,): NLL of the prediction at the last character."""
    hidden = jnp.zeros((1, model.hidden_dim), chars.dtype)
    for char in chars:  # a Python loop, as in the source: unrolled under jit, one compilation per name length
        pred, hidden = model(char[None], hidden)
    return -jnp.take_along_axis(pred, y[:, None], axis=1).mean()


def train_step_per_name(model: RNN, optimizer: nnx.Optimizer, chars: jax.Array, y: jax.Array) -> jax.Array:
    """The source's step: one name, then p -= lr * grad."""
    loss, grads = nnx.value_and_grad(loss_fn_per_name)(model, chars, y)
    optimizer.update(model, grads)
    return loss


def last_logits(model: RNN, chars: jax.Array, lengths: jax.Array) -> jax.Array:
    """Log-probabilities (B, n_classes) at each name's last character; chars (B, T, 57) zero-padded, 1 <= lengths <= T.

    The source's prediction at the last character L-1 is computed from
    concat(x_{L-1}, h_{L-1}), where h_{L-1} is the hidden state *before*
    that character's update (the update it also computes is never used).
    So the loop only has to advance h through characters 0..L-2: a row's
    hidden state is updated at time t only while t < L-1 and then held,
    and after the loop every row holds its own h_{L-1}. The padding is never
    read: masked steps keep the old state, and x_{L-1} is gathered per row.
    """
    last = lengths - 1

    def step(hidden, char_and_t):
        char, t = char_and_t
        updated = model.hid_fc(jnp.concatenate([char, hidden], axis=1))
        return jnp.where((t < last)[:, None], updated, hidden), None

    hidden = jnp.zeros((len(chars), model.hidden_dim), chars.dtype)
    time_major = jnp.swapaxes(chars, 0, 1)[:-1]  # the last time step never updates a state that is read
    hidden, _ = jax.lax.scan(step, hidden, (time_major, jnp.arange(len(time_major))))
    last_char = chars[jnp.arange(len(chars)), last]
    return jax.nn.log_softmax(model.out_fc(jnp.concatenate([last_char, hidden], axis=1)), axis=-1)


def loss_fn(model: RNN, chars: jax.Array, lengths: jax.Array, y: jax.Array) -> jax.Array:
    """Mean NLL over the batch: the mean of the per-name losses."""
    return -jnp.take_along_axis(last_logits(model, chars, lengths), y[:, None], axis=1).mean()


def make_optimizer(model: RNN, lr: float = HP.lr) -> nnx.Optimizer:
    """Plain SGD, no momentum: p -= lr * grad."""
    return nnx.Optimizer(model, optax.sgd(lr), wrt=nnx.Param)


def train_step(model: RNN, optimizer: nnx.Optimizer, chars: jax.Array, lengths: jax.Array, y: jax.Array) -> jax.Array:
    loss, grads = nnx.value_and_grad(loss_fn)(model, chars, lengths, y)
    optimizer.update(model, grads)
    return loss


def eval_outputs(model: RNN, chars: jax.Array, lengths: jax.Array) -> dict[str, jax.Array]:
    """What the test metrics need: the log-probabilities at each name's last character."""
    return {"logits": last_logits(model, chars, lengths)}
