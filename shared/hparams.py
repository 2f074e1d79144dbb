"""Hyperparameters of every architecture, in one place, read by both frameworks."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VaeMlpHparams:
    """Flux-style MLP VAE (ARCHITECTURES.md, "MLP VAE")."""

    input_dim: int = 784
    hidden_dim: int = 500
    latent_dim: int = 5
    decoder_l2: float = 0.01  # weight of the sum of squares of the decoder's parameters
    lr: float = 1e-3
    batch_size: int = 100
    epochs: int = 20  # the original Flux model zoo script; the blog post used 10


VAE_MLP = VaeMlpHparams()

# Fixed seed of the numpy noise used for test metrics that need noise (the
# test negative ELBO): a model evaluated in either framework sees the same eps.
EVAL_NOISE_SEED = 20_240_601

HPARAMS = {"vae_mlp": VAE_MLP}
