"""CNN classifier in PyTorch (docs/architectures.md#cnn-classifier-cnn).

Three conv-bn-relu blocks, conv 1->16 (k1), conv 16->32 (k3, pad 1), max-pool 2,
conv 32->64 (k3, pad 1), max-pool 2; then Linear(64*7*7 -> 128, no bias),
BatchNorm1d, ReLU, Dropout, Linear(128 -> 10), returning logits; cross-entropy,
Adam. The source ends in Softmax and feeds that to a cross-entropy loss, which
applies softmax again (softmax twice); we return logits. Twin of
jax_impl/cnn.py: diff the two.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from shared.hparams import CNN as HP


class CNN(nn.Module):
    def __init__(self, hp=HP, dropout: float | None = None):
        """`dropout` replaces hp.dropout (the benchmark and the parity tests pass 0)."""
        super().__init__()
        c_in, c1, c2, c3 = hp.channels
        self.conv1 = nn.Conv2d(c_in, c1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c1, eps=hp.batchnorm_eps, momentum=hp.batchnorm_momentum)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c2, eps=hp.batchnorm_eps, momentum=hp.batchnorm_momentum)
        self.conv3 = nn.Conv2d(c2, c3, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(c3, eps=hp.batchnorm_eps, momentum=hp.batchnorm_momentum)
        self.fc1 = nn.Linear(c3 * 7 * 7, hp.hidden_dim, bias=False)  # 28x28 -> 14x14 -> 7x7 after two pools
        self.bn4 = nn.BatchNorm1d(hp.hidden_dim, eps=hp.batchnorm_eps, momentum=hp.batchnorm_momentum)
        self.dropout = nn.Dropout(hp.dropout if dropout is None else dropout)
        self.out = nn.Linear(hp.hidden_dim, hp.num_classes)

    def forward(self, x):
        x = x.view(-1, 1, 28, 28)  # NCHW, torch's layout
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = F.max_pool2d(x, 2)
        x = F.relu(self.bn3(self.conv3(x)))
        x = F.max_pool2d(x, 2)
        x = torch.flatten(x, 1)  # (C, H, W) order
        x = self.dropout(F.relu(self.bn4(self.fc1(x))))
        return self.out(x)  # logits


def init_model(seed: int, dropout: float | None = None) -> CNN:
    """A CNN with torch's default initialisation, drawn from `seed`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CNN(dropout=dropout)


def loss_fn(model: CNN, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the logits against the integer labels."""
    return F.cross_entropy(model(x), y)


def make_optimizer(model: CNN, lr: float = HP.lr) -> torch.optim.Optimizer:
    return torch.optim.Adam(model.parameters(), lr=lr, fused=True)  # one kernel for all parameters


def train_step(model: CNN, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(model, x, y)
    loss.backward()
    optimizer.step()
    return loss.detach()


def eval_outputs(model: CNN, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """What the test metrics need: the logits."""
    return {"logits": model(x)}
