"""Convolutional VAE in PyTorch (docs/architectures.md#convolutional-vae-vae).

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
jax_impl/vae.py: diff the two.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from shared.hparams import VAE as HP
from torch_impl.layers import center_crop
from torch_impl.vae_mlp import bernoulli_log_likelihood  # log p(x|z) per image from logits, the MLP VAE's


class VAE(nn.Module):
    def __init__(self, hp=HP):
        super().__init__()
        c_in, c1, c2 = hp.channels
        self.slope = hp.leaky_relu_slope
        self.input_bn = nn.BatchNorm2d(c_in, eps=hp.batchnorm_eps, momentum=hp.batchnorm_momentum)
        self.conv1 = nn.Conv2d(c_in, c1, 4, stride=2, padding=1)  # 28x28 -> 14x14
        self.bn1 = nn.BatchNorm2d(c1, eps=hp.batchnorm_eps, momentum=hp.batchnorm_momentum)
        self.conv2 = nn.Conv2d(c1, c2, 4, stride=2, padding=1)  # -> 7x7
        self.bn2 = nn.BatchNorm2d(c2, eps=hp.batchnorm_eps, momentum=hp.batchnorm_momentum)
        self.mean = nn.Linear(c2 * 7 * 7, hp.latent_dim)
        self.logvar = nn.Linear(c2 * 7 * 7, hp.latent_dim)
        self.develop = nn.Linear(hp.latent_dim, c2 * 7 * 7)
        self.unflattened = (c2, 7, 7)  # develop's output as (C, H, W)
        self.deconv1 = nn.ConvTranspose2d(c2, c1, 3, stride=2)  # 7x7 -> 15x15
        self.bn3 = nn.BatchNorm2d(c1, eps=hp.batchnorm_eps, momentum=hp.batchnorm_momentum)
        self.deconv2 = nn.ConvTranspose2d(c1, c_in, 3, stride=2, padding=1)  # -> 29x29

    def encode(self, x):
        x = self.input_bn(x.view(-1, 1, 28, 28))  # NCHW, torch's layout
        x = F.leaky_relu(self.bn1(self.conv1(x)), self.slope)
        x = F.leaky_relu(self.bn2(self.conv2(x)), self.slope)
        x = torch.flatten(x, 1)  # (C, H, W) order
        return self.mean(x), self.logvar(x)

    def decode(self, z):
        x = self.develop(z).view(-1, *self.unflattened)  # from (C, H, W) order
        x = F.relu(self.bn3(self.deconv1(x)))
        x = center_crop(self.deconv2(x), 28, 28)
        return torch.flatten(x, 1)  # Bernoulli logits (B, 784)

    def forward(self, x, eps):
        mean, logvar = self.encode(x)
        z = reparameterize(mean, logvar, eps)
        return self.decode(z), mean, logvar


def init_model(seed: int) -> VAE:
    """A VAE with torch's default initialisation, drawn from `seed`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return VAE()


def reparameterize(mean: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    return mean + torch.exp(0.5 * logvar) * eps


def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || N(0, I)) per image."""
    return 0.5 * torch.sum(torch.exp(logvar) + mean**2 - 1 - logvar, dim=-1)


def loss_fn(model: VAE, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """The negative ELBO in nats: mean over the batch of KL - log p(x|z) (the fix of the source's mean-reduced BCE)."""
    logits, mean, logvar = model(x, eps)
    elbo = bernoulli_log_likelihood(x, logits) - kl_divergence(mean, logvar)
    return -elbo.mean()


def make_optimizer(model: VAE, lr: float = HP.lr) -> torch.optim.Optimizer:
    return torch.optim.Adam(model.parameters(), lr=lr, fused=True)  # one kernel for all parameters


def train_step(model: VAE, optimizer: torch.optim.Optimizer, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(model, x, eps)
    loss.backward()
    optimizer.step()
    return loss.detach()


def eval_outputs(model: VAE, x: torch.Tensor, eps: torch.Tensor) -> dict[str, torch.Tensor]:
    """What the test metrics need: decoder logits at z = mean + exp(logvar / 2) * eps, mean, logvar."""
    logits, mean, logvar = model(x, eps)
    return {"logits": logits, "mean": mean, "logvar": logvar}


def reconstruct(model: VAE, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Bernoulli means of the decoder at the posterior mean."""
    mean, _ = model.encode(x)
    return {"images": torch.sigmoid(model.decode(mean))}


def sample(model: VAE, z: torch.Tensor, u: torch.Tensor) -> dict[str, torch.Tensor]:
    """Generative sampling: p = sigmoid(decode(z)), pixels = (u < p) with u ~ U(0, 1) given."""
    p = torch.sigmoid(model.decode(z))
    return {"means": p, "pixels": (u < p).to(p.dtype)}
