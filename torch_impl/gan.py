"""DCGAN for 28x28 MNIST in PyTorch (docs/architectures.md#dcgan-gan).

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
Twin of jax_impl/gan.py: diff the two.
"""
from __future__ import annotations

from functools import partial
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from shared.hparams import GAN as HP


class Generator(nn.Module):
    def __init__(self, hp=HP):
        super().__init__()
        c1, c2, c3 = hp.generator_channels
        self.deconv1 = nn.ConvTranspose2d(hp.latent_dim, c1, 7, bias=False)  # 1x1 -> 7x7
        self.bn1 = nn.BatchNorm2d(c1, eps=hp.batchnorm_eps, momentum=hp.batchnorm_momentum)
        self.deconv2 = nn.ConvTranspose2d(c1, c2, 4, stride=2, padding=1, bias=False)  # 7x7 -> 14x14
        self.bn2 = nn.BatchNorm2d(c2, eps=hp.batchnorm_eps, momentum=hp.batchnorm_momentum)
        self.deconv3 = nn.ConvTranspose2d(c2, c3, 4, stride=2, padding=1, bias=False)  # 14x14 -> 28x28

    def forward(self, z):
        x = z.view(len(z), -1, 1, 1)  # a 1x1 image with latent_dim channels, NCHW
        x = F.relu(self.bn1(self.deconv1(x)))
        x = F.relu(self.bn2(self.deconv2(x)))
        return torch.tanh(self.deconv3(x)).view(len(z), -1)  # (B, 784) in [-1, 1]


class Discriminator(nn.Module):
    def __init__(self, hp=HP):
        super().__init__()
        c_in, c1, c2 = hp.discriminator_channels
        self.conv1 = nn.Conv2d(c_in, c1, 4, stride=2, padding=1, bias=False)  # 28x28 -> 14x14
        self.conv2 = nn.Conv2d(c1, c2, 4, stride=2, padding=1, bias=False)  # 14x14 -> 7x7
        self.bn2 = nn.BatchNorm2d(c2, eps=hp.batchnorm_eps, momentum=hp.batchnorm_momentum)
        self.conv3 = nn.Conv2d(c2, 1, 7, bias=False)  # 7x7 -> 1x1
        self.slope = hp.leaky_relu_slope

    def forward(self, x):
        x = x.view(-1, 1, 28, 28)  # NCHW, torch's layout
        x = F.leaky_relu(self.conv1(x), self.slope)
        x = F.leaky_relu(self.bn2(self.conv2(x)), self.slope)
        return self.conv3(x).view(-1)  # one logit per image, (B,): the source kept (B, 1, 1, 1)


class GAN(nn.Module):
    def __init__(self, hp=HP):
        super().__init__()
        self.hp = hp
        self.generator = Generator(hp)
        self.discriminator = Discriminator(hp)
        self.apply(partial(_dcgan_init, std=hp.init_std))


class Optimizers(NamedTuple):
    discriminator: torch.optim.Optimizer
    generator: torch.optim.Optimizer


def _dcgan_init(module: nn.Module, std: float) -> None:
    """DCGAN's initialisation, applied to every layer: weights ~ N(0, std), BatchNorm scale ~ N(1, std), bias 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, std)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, std)
        nn.init.zeros_(module.bias)


def init_model(seed: int) -> GAN:
    """A GAN with DCGAN's initialisation, drawn from `seed`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return GAN()


def discriminator_loss(discriminator: Discriminator, generator: Generator, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """BCE(D(x), 1) + BCE(D(G(z)), 0), each a batch mean; no gradient into the generator."""
    real = discriminator(x)
    fake = discriminator(generator(z).detach())
    return (
        F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
        + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
    )


def generator_loss(generator: Generator, discriminator: Discriminator, z: torch.Tensor) -> torch.Tensor:
    """BCE(D(G(z)), 1), a batch mean: the non-saturating -log D(G(z))."""
    fake = discriminator(generator(z))
    return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))


def make_optimizer(model: GAN, lr: float = HP.lr) -> Optimizers:
    betas = (model.hp.beta1, 0.999)
    return Optimizers(  # fused: one kernel for all of a network's parameters
        discriminator=torch.optim.Adam(model.discriminator.parameters(), lr=lr, betas=betas, fused=True),
        generator=torch.optim.Adam(model.generator.parameters(), lr=lr, betas=betas, fused=True),
    )


def discriminator_step(model: GAN, optimizer: Optimizers, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    optimizer.discriminator.zero_grad(set_to_none=True)
    loss = discriminator_loss(model.discriminator, model.generator, x, z)
    loss.backward()
    optimizer.discriminator.step()
    return loss.detach()


def generator_step(model: GAN, optimizer: Optimizers, z: torch.Tensor) -> torch.Tensor:
    optimizer.generator.zero_grad(set_to_none=True)
    loss = generator_loss(model.generator, model.discriminator, z)
    loss.backward(inputs=list(model.generator.parameters()))  # the generator's gradients only, not the discriminator's
    optimizer.generator.step()
    return loss.detach()


def train_step(model: GAN, optimizer: Optimizers, x: torch.Tensor, z_d: torch.Tensor, z_g: torch.Tensor) -> torch.Tensor:
    """One discriminator step (latents z_d), then one generator step (latents z_g): [d_loss, g_loss]."""
    d_loss = discriminator_step(model, optimizer, x, z_d)
    g_loss = generator_step(model, optimizer, z_g)
    return torch.stack([d_loss, g_loss])


def sample(model: GAN, z: torch.Tensor) -> dict[str, torch.Tensor]:
    """Images G(z), (B, 784) in [-1, 1]."""
    return {"images": model.generator(z)}
