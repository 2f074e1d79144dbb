"""MLP classifier in PyTorch (docs/architectures.md#mlp-classifier-mlp).

784 -> 500 -> 200 -> 100 -> 10 with ReLU between layers, returning logits;
cross-entropy, Adam. Twin of jax_impl/mlp.py: diff the two.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from shared.hparams import MLP as HP


class MLP(nn.Module):
    def __init__(self, hp=HP):
        super().__init__()
        d_in, d1, d2, d3, n_classes = hp.sizes
        self.hidden1 = nn.Linear(d_in, d1)
        self.hidden2 = nn.Linear(d1, d2)
        self.hidden3 = nn.Linear(d2, d3)
        self.out = nn.Linear(d3, n_classes)

    def forward(self, x):
        x = F.relu(self.hidden1(x))
        x = F.relu(self.hidden2(x))
        x = F.relu(self.hidden3(x))
        return self.out(x)  # logits


def init_model(seed: int) -> MLP:
    """An MLP with torch's default initialisation, drawn from `seed`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MLP()


def loss_fn(model: MLP, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the logits against the integer labels."""
    return F.cross_entropy(model(x), y)


def make_optimizer(model: MLP, lr: float = HP.lr) -> torch.optim.Optimizer:
    return torch.optim.Adam(model.parameters(), lr=lr, fused=True)  # one kernel for all parameters


def train_step(model: MLP, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(model, x, y)
    loss.backward()
    optimizer.step()
    return loss.detach()


def eval_outputs(model: MLP, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """What the test metrics need: the logits."""
    return {"logits": model(x)}
