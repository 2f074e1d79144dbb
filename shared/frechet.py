"""Sample quality of generated digits: a Frechet distance and a class histogram.

The GAN's training command judges its samples the way FID does: it embeds
the real test images and as many generated images in the feature space of a
fixed classifier, fits a Gaussian to each set of features, and reports the
Frechet (2-Wasserstein) distance between the two Gaussians,

    ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)).

It is FID's formula with a different feature extractor: instead of
Inception-v3's 2048-d pool features, the 100-d penultimate layer (hidden3,
after its ReLU) of the project's own MNIST MLP classifier (torch_impl/mlp.py,
784 -> 500 -> 200 -> 100 -> 10), trained once by the project's command and
shipped as shared/assets/mnist_mlp.safetensors:

    python -m torch_impl.train mlp --seed 0 --out /tmp/classifier

(20 epochs on the embedded 4,000-image split). Its numbers are comparable
with each other (same classifier, same number of images), not with published
FIDs. The classifier's argmax also gives the class histogram of the
generated digits: a GAN that collapses onto a few modes draws few classes.

numpy only: the forward pass is four float32 matmuls, the matrix square root
goes through symmetric eigendecompositions (np.linalg.eigh).
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from shared.data import IMAGE_DIM, NUM_CLASSES
from shared.hparams import MLP as MLP_HP
from shared.weights import StateDict, check_state_dict, load_weights

CLASSIFIER_PATH = Path(__file__).resolve().parent / "assets" / "mnist_mlp.safetensors"
LAYERS = ("hidden1", "hidden2", "hidden3", "out")  # torch_impl/mlp.py's names, in order
FEATURE_DIM = MLP_HP.sizes[-2]  # 100: hidden3's width
RANGE_SLACK = 1e-4  # how far outside [0, 1] an image may stray (float rounding) before it is refused


def classifier_shapes() -> dict[str, tuple[int, ...]]:
    """The state_dict keys and shapes of the MLP: weight (out, in) and bias (out,) per layer."""
    sizes = MLP_HP.sizes
    shapes = {}
    for name, d_in, d_out in zip(LAYERS, sizes[:-1], sizes[1:]):
        shapes[f"{name}.weight"] = (d_out, d_in)
        shapes[f"{name}.bias"] = (d_out,)
    return shapes


class Classifier:
    """The MLP classifier as a numpy forward pass, for images (N, 784) in [0, 1]."""

    def __init__(self, state_dict: StateDict, source: str = "classifier weights"):
        check_state_dict({k: (shape, "float32") for k, shape in classifier_shapes().items()}, state_dict, source)
        # Kernels transposed once: x @ w.T + b is torch's Linear.
        self.layers = [
            (np.ascontiguousarray(state_dict[f"{n}.weight"].T, np.float32), np.asarray(state_dict[f"{n}.bias"], np.float32))
            for n in LAYERS
        ]
        self.source = source

    @classmethod
    def load(cls, path: str | Path = CLASSIFIER_PATH) -> Classifier:
        """Read a safetensors file of the MLP (WeightsError naming the file and key if it does not fit)."""
        return cls(load_weights(path), str(path))

    def forward(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(features, logits), float64: hidden3's ReLU output (N, 100) and the logits (N, 10)."""
        h = check_images(images).astype(np.float32)
        for w, b in self.layers[:-1]:
            h = np.maximum(h @ w + b, 0.0)
        w, b = self.layers[-1]
        return h.astype(np.float64), (h @ w + b).astype(np.float64)

    def features(self, images: np.ndarray) -> np.ndarray:
        return self.forward(images)[0]

    def logits(self, images: np.ndarray) -> np.ndarray:
        return self.forward(images)[1]


@lru_cache(maxsize=1)
def default_classifier() -> Classifier:
    """The shipped classifier (shared/assets/mnist_mlp.safetensors), read once per process."""
    return Classifier.load(CLASSIFIER_PATH)


def check_images(images: np.ndarray) -> np.ndarray:
    """images as (N, 784); ValueError for another size or values outside [0, 1] (e.g. a tanh's [-1, 1])."""
    images = np.asarray(images)
    if images.ndim < 2 or int(np.prod(images.shape[1:])) != IMAGE_DIM:
        raise ValueError(f"expected MNIST images of shape (N, {IMAGE_DIM}) or (N, 28, 28), got {images.shape}")
    images = images.reshape(len(images), IMAGE_DIM)
    if images.size and (images.min() < -RANGE_SLACK or images.max() > 1 + RANGE_SLACK):
        raise ValueError(
            f"expected pixel values in [0, 1], got [{images.min():.3g}, {images.max():.3g}]"
            " (images in [-1, 1] need (x + 1) / 2 first)"
        )
    return images


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (rows are samples).

    ||mu_a - mu_b||^2 + Tr(S_a) + Tr(S_b) - 2 Tr((S_a S_b)^(1/2)), with sample
    means and covariances (ddof=1) in float64. S_a S_b is not symmetric, but
    it is similar to M = S_a^(1/2) S_b S_a^(1/2), which is symmetric and
    positive semi-definite; so Tr((S_a S_b)^(1/2)) = sum of sqrt(eigenvalues
    of M), both square roots taken with eigh, tiny negative eigenvalues
    (rounding) clipped at 0. Symmetric in a and b, 0 for identical sets.
    """
    a = np.asarray(features_a, np.float64)
    b = np.asarray(features_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"expected two (N, d) feature arrays of the same d, got {a.shape} and {b.shape}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"need at least 2 samples per set for a covariance, got {len(a)} and {len(b)}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("features contain NaN or infinity")
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a = np.atleast_2d(np.cov(a, rowvar=False, ddof=1))
    cov_b = np.atleast_2d(np.cov(b, rowvar=False, ddof=1))
    sqrt_a = _sqrtm_psd(cov_a)
    middle = sqrt_a @ cov_b @ sqrt_a
    eigenvalues = np.linalg.eigvalsh((middle + middle.T) / 2)
    trace_sqrt = np.sqrt(np.clip(eigenvalues, 0.0, None)).sum()
    distance = np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_sqrt
    return float(max(distance, 0.0))  # rounding can leave -1e-13 for identical sets


def _sqrtm_psd(matrix: np.ndarray) -> np.ndarray:
    """The symmetric square root of a symmetric positive semi-definite matrix (eigenvalues clipped at 0)."""
    eigenvalues, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ vectors.T


def class_histogram(x: np.ndarray, classifier: Classifier | None = None) -> np.ndarray:
    """How many examples the classifier puts in each class: int64 counts, length 10.

    `x` is either logits (N, 10), counted as they are, or images (N, 784) in
    [0, 1], which the classifier (the shipped one by default) labels first.
    """
    x = np.asarray(x)
    if x.ndim == 2 and x.shape[1] == NUM_CLASSES:
        logits = x
    else:
        logits = (classifier or default_classifier()).logits(x)
    return np.bincount(np.argmax(logits, axis=1), minlength=NUM_CLASSES).astype(np.int64)


def sample_quality(real_images: np.ndarray, generated_images: np.ndarray, classifier: Classifier | None = None) -> dict:
    """What the GAN reports after each epoch: scalars only, so the training log prints them.

    frechet_distance: between the classifier features of the two sets (use
        as many generated images as real ones: the number depends on N);
    classes_covered: how many of the 10 classes hold at least 1% of the
        generated digits (10 for a GAN without mode collapse);
    largest_class_fraction: the share of the most frequent class (0.1 if uniform).
    Generated images holding NaN or infinity (a diverged generator) give
    frechet_distance = nan instead of an error.
    """
    classifier = classifier or default_classifier()
    generated_images = np.asarray(generated_images)
    if not np.isfinite(generated_images).all():
        return {"frechet_distance": float("nan"), "classes_covered": 0, "largest_class_fraction": float("nan")}
    real_features = classifier.features(real_images)
    features, logits = classifier.forward(generated_images)
    counts = class_histogram(logits)
    return {
        "frechet_distance": frechet_distance(real_features, features),
        "classes_covered": int(np.sum(counts >= 0.01 * len(logits))),
        "largest_class_fraction": float(counts.max() / len(logits)),
    }
