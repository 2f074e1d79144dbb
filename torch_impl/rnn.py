"""Character-level RNN name classifier in PyTorch (docs/architectures.md#character-level-rnn-name-classifier-rnn).

The source's cell: combined = concat(char (57), hidden (128)); the next
hidden state is hid_fc(combined), with no nonlinearity, and the prediction is
log_softmax(out_fc(combined)). Two execution forms of the same model: the
source's loop, one name at a time (`*_per_name`), and a batched form over
zero-padded, length-masked names; their losses and gradients agree.
Twin of jax_impl/rnn.py: diff the two.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from shared.hparams import RNN_PER_NAME as HP


class RNN(nn.Module):
    """The source's RNN, with its three bugs fixed.

    - `criterion` is never defined in the source: the loss is the NLL of the
      log-probabilities the model returns (what nn.NLLLoss computes).
    - `p.data.add_(-.001, p.grad.data)` uses the add_(scalar, tensor)
      overload, deprecated (torch 2.13 still runs it, with a warning): the
      update is plain SGD from make_optimizer, p -= lr * grad, the same step
      as p.data.add_(p.grad, alpha=-lr) (a test checks this).
    - `nn.LogSoftmax()` without `dim` is deprecated (an implicit dim): dim=-1.
    `forward` takes a batch of characters (B, 57) rather than the source's
    one character reshaped with view(1, -1); B = 1 is the source.
    """

    def __init__(self, n_classes, hp=HP):
        super().__init__()
        self.hidden_dim = hp.hidden_dim
        d_in = hp.n_letters + hp.hidden_dim  # a character and the hidden state, concatenated
        self.hid_fc = nn.Linear(d_in, hp.hidden_dim)
        self.out_fc = nn.Linear(d_in, n_classes)

    def forward(self, inputs, hidden):
        combined = torch.cat([inputs, hidden], dim=1)
        return F.log_softmax(self.out_fc(combined), dim=-1), self.hid_fc(combined)


def init_model(seed: int, n_classes: int = 18) -> RNN:
    """An RNN with torch's default initialisation, drawn from `seed`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return RNN(n_classes)


def loss_fn_per_name(model: RNN, chars: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The source's loop on one name, chars (L, 57), y (1,): NLL of the prediction at the last character."""
    hidden = chars.new_zeros(1, model.hidden_dim)
    for char in chars:  # a Python loop, as in the source
        pred, hidden = model(char[None], hidden)
    return F.nll_loss(pred, y)


def train_step_per_name(model: RNN, optimizer: torch.optim.Optimizer, chars: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The source's step: one name, then p -= lr * grad."""
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn_per_name(model, chars, y)
    loss.backward()
    optimizer.step()
    return loss.detach()


def last_logits(model: RNN, chars: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
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
    hidden = chars.new_zeros(len(chars), model.hidden_dim)
    for t in range(chars.shape[1] - 1):  # the last time step never updates a state that is read
        updated = model.hid_fc(torch.cat([chars[:, t], hidden], dim=1))
        hidden = torch.where((t < last)[:, None], updated, hidden)
    last_char = chars[torch.arange(len(chars), device=chars.device), last]
    return F.log_softmax(model.out_fc(torch.cat([last_char, hidden], dim=1)), dim=-1)


def loss_fn(model: RNN, chars: torch.Tensor, lengths: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean NLL over the batch: the mean of the per-name losses."""
    return F.nll_loss(last_logits(model, chars, lengths), y)


def make_optimizer(model: RNN, lr: float = HP.lr) -> torch.optim.Optimizer:
    """Plain SGD, no momentum: p -= lr * grad."""
    return torch.optim.SGD(model.parameters(), lr=lr)


def train_step(model: RNN, optimizer: torch.optim.Optimizer, chars: torch.Tensor, lengths: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(model, chars, lengths, y)
    loss.backward()
    optimizer.step()
    return loss.detach()


def eval_outputs(model: RNN, chars: torch.Tensor, lengths: torch.Tensor) -> dict[str, torch.Tensor]:
    """What the test metrics need: the log-probabilities at each name's last character."""
    return {"logits": last_logits(model, chars, lengths)}
