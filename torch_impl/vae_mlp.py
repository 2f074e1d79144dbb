"""Flux-style MLP VAE in PyTorch (docs/architectures.md#mlp-vae-flux-style-vae_mlp).

tanh encoder 784-500 with mu and log-sigma heads of 5, decoder 5-500-784
returning Bernoulli logits; loss = -ELBO per image + 0.01 * (sum of squares
of the decoder's parameters). Twin of jax_impl/vae_mlp.py: diff the two.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from shared.hparams import VAE_MLP as HP


class Encoder(nn.Module):
    def __init__(self, hp=HP):
        super().__init__()
        self.hidden = nn.Linear(hp.input_dim, hp.hidden_dim)
        self.mu = nn.Linear(hp.hidden_dim, hp.latent_dim)
        self.logsigma = nn.Linear(hp.hidden_dim, hp.latent_dim)

    def forward(self, x):
        h = torch.tanh(self.hidden(x))
        return self.mu(h), self.logsigma(h)


class Decoder(nn.Module):
    def __init__(self, hp=HP):
        super().__init__()
        self.hidden = nn.Linear(hp.latent_dim, hp.hidden_dim)
        self.out = nn.Linear(hp.hidden_dim, hp.input_dim)

    def forward(self, z):
        return self.out(torch.tanh(self.hidden(z)))  # Bernoulli logits


class VAE(nn.Module):
    def __init__(self, hp=HP):
        super().__init__()
        self.hp = hp
        self.encoder = Encoder(hp)
        self.decoder = Decoder(hp)

    def forward(self, x, eps):
        mu, logsigma = self.encoder(x)
        z = reparameterize(mu, logsigma, eps)
        return self.decoder(z), mu, logsigma


def init_model(seed: int) -> VAE:
    """A VAE with torch's default initialisation, drawn from `seed`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return VAE()


def reparameterize(mu: torch.Tensor, logsigma: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    return mu + torch.exp(logsigma) * eps


def bernoulli_log_likelihood(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """log p(x|z) per image, from logits (stable; no eps inside logs)."""
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(dim=-1)


def kl_divergence(mu: torch.Tensor, logsigma: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || N(0, I)) per image; the fix: '- 2 logsigma' (model-zoo PR #147)."""
    return 0.5 * torch.sum(torch.exp(2 * logsigma) + mu**2 - 1 - 2 * logsigma, dim=-1)


def decoder_l2(model: VAE) -> torch.Tensor:
    return sum(torch.sum(p**2) for p in model.decoder.parameters())


def loss_fn(model: VAE, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """-(sum over the batch of [log p(x|z) - KL]) / M + 0.01 * sum of squares of the decoder."""
    logits, mu, logsigma = model(x, eps)
    elbo = bernoulli_log_likelihood(x, logits) - kl_divergence(mu, logsigma)
    return -elbo.mean() + model.hp.decoder_l2 * decoder_l2(model)


def make_optimizer(model: VAE, lr: float = HP.lr) -> torch.optim.Optimizer:
    return torch.optim.Adam(model.parameters(), lr=lr, fused=True)  # one kernel for all parameters


def train_step(model: VAE, optimizer: torch.optim.Optimizer, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(model, x, eps)
    loss.backward()
    optimizer.step()
    return loss.detach()


def eval_outputs(model: VAE, x: torch.Tensor, eps: torch.Tensor) -> dict[str, torch.Tensor]:
    """What the test metrics need: decoder logits at z = mu + sigma*eps, mu, logsigma."""
    logits, mu, logsigma = model(x, eps)
    return {"logits": logits, "mu": mu, "logsigma": logsigma}


def reconstruct(model: VAE, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Bernoulli means of the decoder at the posterior mean."""
    mu, _ = model.encoder(x)
    return {"images": torch.sigmoid(model.decoder(mu))}


def sample(model: VAE, z: torch.Tensor, u: torch.Tensor) -> dict[str, torch.Tensor]:
    """Generative sampling: p = f(z), pixels = (u < p) with u ~ U(0, 1) given."""
    p = torch.sigmoid(model.decoder(z))
    return {"means": p, "pixels": (u < p).to(p.dtype)}
