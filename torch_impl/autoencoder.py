"""Autoencoder in PyTorch (docs/architectures.md#autoencoder-autoencoder), two variants.

`mlp`: encoder 784 -> 128 -> 64 -> 12 with a ReLU after every layer (the
12-d code too), decoder 12 -> 64 -> 128 -> 784 with ReLUs between. `conv`:
Conv(1,16,3,p1) ReLU MaxPool2, Conv(16,8,3,p1) ReLU MaxPool2, then
ConvTranspose(8,16,3,s2,p0) ReLU, ConvTranspose(16,1,3,s2,p1) and a centre
crop: 28 -> 14 -> 7 -> 15 -> 29 -> 28. Both take (B, 784) images in [0, 1]
and return logits (B, 784): the source's final Sigmoid moves into the loss,
binary cross-entropy from logits (the same value as BCELoss on the sigmoid,
without its log(0) clamping: stable). Fix: the source uses CenterCrop without
defining it; it is a centre slice (layers.center_crop). Adam. Twin of
jax_impl/autoencoder.py: diff the two.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from shared.hparams import AUTOENCODER as HP
from torch_impl.layers import center_crop


class Autoencoder(nn.Module):
    def __init__(self, hp=HP):
        super().__init__()
        d_in, h1, h2, code = hp.sizes
        self.encoder1 = nn.Linear(d_in, h1)
        self.encoder2 = nn.Linear(h1, h2)
        self.encoder3 = nn.Linear(h2, code)
        self.decoder1 = nn.Linear(code, h2)
        self.decoder2 = nn.Linear(h2, h1)
        self.decoder3 = nn.Linear(h1, d_in)

    def forward(self, x):
        x = F.relu(self.encoder1(x))
        x = F.relu(self.encoder2(x))
        code = F.relu(self.encoder3(x))  # the source's ReLU after the code too
        x = F.relu(self.decoder1(code))
        x = F.relu(self.decoder2(x))
        return self.decoder3(x)  # logits


class ConvAutoencoder(nn.Module):
    def __init__(self, hp=HP):
        super().__init__()
        c_in, c1, c2 = hp.channels
        self.conv1 = nn.Conv2d(c_in, c1, 3, padding=1)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)
        self.deconv1 = nn.ConvTranspose2d(c2, c1, 3, stride=2)
        self.deconv2 = nn.ConvTranspose2d(c1, c_in, 3, stride=2, padding=1)

    def forward(self, x):
        x = x.view(-1, 1, 28, 28)  # NCHW, torch's layout
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)  # 14x14
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)  # 7x7
        x = F.relu(self.deconv1(x))  # 15x15
        x = center_crop(self.deconv2(x), 28, 28)  # 29x29 -> 28x28
        return torch.flatten(x, 1)  # logits (B, 784); one channel, so the same order in either layout


VARIANTS = {"mlp": Autoencoder, "conv": ConvAutoencoder}


def init_model(seed: int, variant: str = "mlp") -> Autoencoder | ConvAutoencoder:
    """An autoencoder of the `variant` ("mlp" or "conv") with torch's default initialisation, drawn from `seed`."""
    if variant not in VARIANTS:
        raise ValueError(f"autoencoder variant '{variant}': expected one of {', '.join(VARIANTS)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return VARIANTS[variant]()


def loss_fn(model: Autoencoder | ConvAutoencoder, x: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of the reconstruction, from logits, averaged over the batch and the pixels (nn.BCELoss())."""
    return F.binary_cross_entropy_with_logits(model(x), x)


def make_optimizer(model: Autoencoder | ConvAutoencoder, lr: float = HP.lr) -> torch.optim.Optimizer:
    return torch.optim.Adam(model.parameters(), lr=lr, fused=True)  # one kernel for all parameters


def train_step(model: Autoencoder | ConvAutoencoder, optimizer: torch.optim.Optimizer, x: torch.Tensor) -> torch.Tensor:
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(model, x)
    loss.backward()
    optimizer.step()
    return loss.detach()


def eval_outputs(model: Autoencoder | ConvAutoencoder, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """What the test metrics need: the reconstruction's logits."""
    return {"logits": model(x)}


def reconstruct(model: Autoencoder | ConvAutoencoder, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The reconstructed images (B, 784) in [0, 1]: the source's Sigmoid output."""
    return {"images": torch.sigmoid(model(x))}
