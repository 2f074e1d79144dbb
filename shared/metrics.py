"""Metrics computed with numpy (float64) from what a model of either framework returns."""
from __future__ import annotations

import numpy as np


def bernoulli_log_likelihood(x: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """log p(x | logits) summed over pixels, one value per image, in nats.

    x*log(sigmoid(l)) + (1-x)*log(1-sigmoid(l)) = x*l - softplus(l), written
    so that it never takes the log of 0 (the source adds eps inside the logs).
    """
    x = np.asarray(x, np.float64)
    logits = np.asarray(logits, np.float64)
    softplus = np.maximum(logits, 0.0) + np.log1p(np.exp(-np.abs(logits)))
    return (x * logits - softplus).reshape(len(x), -1).sum(axis=1)


def gaussian_kl(mu: np.ndarray, logsigma: np.ndarray) -> np.ndarray:
    """KL(N(mu, exp(logsigma)^2) || N(0, I)) per example, in nats."""
    mu = np.asarray(mu, np.float64)
    logsigma = np.asarray(logsigma, np.float64)
    return 0.5 * np.sum(np.exp(2 * logsigma) + mu**2 - 1.0 - 2 * logsigma, axis=1)


def neg_elbo(x: np.ndarray, logits: np.ndarray, mu: np.ndarray, logsigma: np.ndarray) -> dict[str, float]:
    """Negative ELBO in nats per image, with its two parts (one-sample estimate)."""
    log_lik = bernoulli_log_likelihood(x, logits)
    kl = gaussian_kl(mu, logsigma)
    return {
        "neg_elbo": float(np.mean(kl - log_lik)),
        "neg_log_likelihood": float(-np.mean(log_lik)),
        "kl": float(np.mean(kl)),
    }


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of examples whose largest logit is the label."""
    return float(np.mean(np.argmax(logits, axis=-1) == labels))


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-softmax probability of the labels, in nats (log-sum-exp, float64)."""
    logits = np.asarray(logits, np.float64)
    top = logits.max(axis=-1, keepdims=True)
    log_z = top[:, 0] + np.log(np.exp(logits - top).sum(axis=-1))
    return float(np.mean(log_z - logits[np.arange(len(labels)), labels]))


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """counts[true, predicted] as int64."""
    counts = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(counts, (np.asarray(labels), np.asarray(predictions)), 1)
    return counts
