"""Hyperparameters of every architecture, in one place, read by both frameworks.

HPARAMS maps an architecture to its variants (the first is the default) and
each variant to its hyperparameters. Most architectures have one variant,
"default"; the RNN has two execution forms.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VaeMlpHparams:
    """Flux-style MLP VAE (docs/architectures.md#mlp-vae-flux-style-vae_mlp)."""

    input_dim: int = 784
    hidden_dim: int = 500
    latent_dim: int = 5
    decoder_l2: float = 0.01  # weight of the sum of squares of the decoder's parameters
    lr: float = 1e-3
    batch_size: int = 100
    epochs: int = 20  # the original Flux model zoo script; the blog post used 10


@dataclass(frozen=True)
class MlpHparams:
    """MLP classifier (docs/architectures.md#mlp-classifier-mlp): the source's Adam lr 0.01 and batch 1000."""

    sizes: tuple[int, ...] = (784, 500, 200, 100, 10)
    lr: float = 0.01
    batch_size: int = 1000
    epochs: int = 20  # the source's 15 epochs saw 60,000 images each; ours see 4,000 (95% by epoch 14)


@dataclass(frozen=True)
class CnnHparams:
    """CNN classifier (docs/architectures.md#cnn-classifier-cnn); the source gives no training settings."""

    channels: tuple[int, ...] = (1, 16, 32, 64)
    hidden_dim: int = 128
    num_classes: int = 10
    dropout: float = 0.5
    batchnorm_eps: float = 1e-5
    batchnorm_momentum: float = 0.1  # torch's convention: running = (1 - m) * running + m * batch
    lr: float = 1e-3
    batch_size: int = 100
    epochs: int = 10


@dataclass(frozen=True)
class RnnHparams:
    """Character-level RNN name classifier (docs/architectures.md#character-level-rnn-name-classifier-rnn).

    `per-name` is the source: one name per step, plain SGD p -= 0.001 * grad.
    `batched` trains the same model on the mean loss of a padded batch.
    """

    n_letters: int = 57
    hidden_dim: int = 128
    lr: float = 0.001
    batch_size: int = 1
    batch_size_fixed: bool = True  # the per-name form takes exactly one name per step
    epochs: int = 1


@dataclass(frozen=True)
class AutoencoderHparams:
    """Autoencoder (docs/architectures.md#autoencoder-autoencoder); the source gives no training settings.

    `mlp`: 784-128-64-12 encoder, 12-64-128-784 decoder. `conv`: two conv +
    max-pool blocks, two transposed convolutions, a centre crop to 28x28.
    """

    sizes: tuple[int, ...] = (784, 128, 64, 12)  # the decoder mirrors them
    channels: tuple[int, ...] = (1, 16, 8)  # the conv variant's encoder; the decoder mirrors them
    lr: float = 1e-3
    batch_size: int = 100
    epochs: int = 20


@dataclass(frozen=True)
class VaeHparams:
    """Convolutional VAE (docs/architectures.md#convolutional-vae-vae); the source gives no latent size or training settings."""

    channels: tuple[int, ...] = (1, 32, 64)
    latent_dim: int = 20  # as pytorch/examples' VAE, whose ~104-106 nats docs/architectures.md#reference-results-from-the-literature quotes
    batchnorm_eps: float = 1e-5
    batchnorm_momentum: float = 0.1
    leaky_relu_slope: float = 0.01  # nn.LeakyReLU()'s default, as the source
    lr: float = 1e-3
    batch_size: int = 100
    epochs: int = 20


@dataclass(frozen=True)
class GanHparams:
    """DCGAN for 28x28 MNIST (docs/architectures.md#dcgan-gan): Adam(2e-4, beta1 0.5), images in [-1, 1]."""

    latent_dim: int = 100
    generator_channels: tuple[int, ...] = (128, 64, 1)  # 7x7, 14x14, 28x28
    discriminator_channels: tuple[int, ...] = (1, 64, 128)  # 28x28, 14x14, 7x7, then one logit
    init_std: float = 0.02  # DCGAN's N(0, 0.02) weights (BatchNorm scales N(1, 0.02))
    leaky_relu_slope: float = 0.2
    batchnorm_eps: float = 1e-5
    batchnorm_momentum: float = 0.1
    lr: float = 2e-4
    beta1: float = 0.5
    batch_size: int = 64
    epochs: int = 30


@dataclass(frozen=True)
class AaeHparams:
    """Adversarial autoencoder (docs/architectures.md#adversarial-autoencoder-aae; the blog post's settings).

    Q (encoder) 784-1000-1000-z_dim, P (decoder) z-1000-1000-784, D z-1000-1000-1,
    dropout in every hidden layer, separate Adam optimizers, one learning rate
    per phase: reconstruction (Q as encoder and P, `lr`), regularisation (Q as
    generator, D, and D_cat in the semi-supervised variant, `regularization_lr`)
    and, semi-supervised only, classification (Q as classifier,
    `classification_lr`).
    """

    input_dim: int = 784
    hidden_dim: int = 1000
    z_dim: int = 2  # the blog post's 2-d codes; the semi-supervised script's 10
    n_classes: int = 10
    dropout: float = 0.2  # Q's and P's
    discriminator_dropout: float = 0.2  # D's and D_cat's, in every variant
    prior_std: float = 5.0  # z_real ~ N(0, prior_std^2 I)
    lr: float = 1e-4  # the reconstruction phase's; the training command's --lr sets it
    regularization_lr: float = 5e-5
    classification_lr: float | None = None  # only the semi-supervised variant has a classification phase
    batch_size: int = 100
    epochs: int = 50
    labels: int = 0  # labelled examples (semi-supervised only; --labels)


VAE_MLP = VaeMlpHparams()
MLP = MlpHparams()
CNN = CnnHparams()
RNN_PER_NAME = RnnHparams()
AUTOENCODER = AutoencoderHparams()
VAE = VaeHparams()
GAN = GanHparams()
AAE_UNSUPERVISED = AaeHparams()
AAE_SUPERVISED = AaeHparams()
AAE_SEMISUPERVISED = AaeHparams(
    z_dim=10, dropout=0.25, prior_std=1.0, lr=6e-4, regularization_lr=8e-4, classification_lr=1e-3, epochs=100, labels=100,
)
# lr 0.1 learns the classic names faster but overflows on the embedded ones (up to 40
# letters: the hidden update is linear, so an eigenvalue of the recurrent matrix above 1
# grows like its 40th power).
RNN_BATCHED = RnnHparams(lr=0.05, batch_size=64, batch_size_fixed=False, epochs=20)

# Fixed seed of the numpy noise used for test metrics that need noise (the
# test negative ELBO): a model evaluated in either framework sees the same eps.
EVAL_NOISE_SEED = 20_240_601

DEFAULT_VARIANT = "default"
HPARAMS = {
    "vae_mlp": {DEFAULT_VARIANT: VAE_MLP},
    "mlp": {DEFAULT_VARIANT: MLP},
    "cnn": {DEFAULT_VARIANT: CNN},
    "rnn": {"batched": RNN_BATCHED, "per-name": RNN_PER_NAME},
    "autoencoder": {"mlp": AUTOENCODER, "conv": AUTOENCODER},
    "vae": {DEFAULT_VARIANT: VAE},
    "gan": {DEFAULT_VARIANT: GAN},
    "aae": {"unsupervised": AAE_UNSUPERVISED, "supervised": AAE_SUPERVISED, "semisupervised": AAE_SEMISUPERVISED},
}


def variants(arch: str) -> list[str]:
    """The architecture's variants, the default first."""
    return list(HPARAMS[arch])


def hparams(arch: str, variant: str | None = None):
    """Hyperparameters of `arch` in `variant` (default: its first)."""
    return HPARAMS[arch][variant or variants(arch)[0]]


def label(arch: str, variant: str) -> str:
    """'rnn/batched' for architectures with variants, 'mlp' for the others."""
    return arch if variant == DEFAULT_VARIANT else f"{arch}/{variant}"
