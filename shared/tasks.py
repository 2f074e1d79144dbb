"""What each architecture trains on and how it is judged, framework-free.

A task turns the dataset into the numpy arguments of the architecture's
`train_step` (after model and optimizer), computes test metrics from what
the model returns, and draws the pictures. The framework side supplies
`predict(fn_name, *arrays)`: call the architecture module's function
`fn_name(model, *arrays)` and return numpy arrays. Both frameworks therefore
train on the same batches and noise and are judged by the same numpy code.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from shared.data import Mnist, binarize
from shared.hparams import EVAL_NOISE_SEED, VAE_MLP
from shared.metrics import neg_elbo

Predict = Callable[..., dict[str, np.ndarray]]
EVAL_BATCH = 500


def _concat(outputs: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([o[k] for o in outputs]) for k in outputs[0]}


def predict_in_batches(predict: Predict, fn_name: str, *arrays: np.ndarray) -> dict[str, np.ndarray]:
    """predict() over the first axis in slices of EVAL_BATCH, concatenated."""
    n = len(arrays[0])
    return _concat([predict(fn_name, *(a[s : s + EVAL_BATCH] for a in arrays)) for s in range(0, n, EVAL_BATCH)])


class VaeMlpTask:
    """Flux-style MLP VAE on binarised MNIST; judged by the test negative ELBO in nats."""

    arch = "vae_mlp"
    hp = VAE_MLP

    def __init__(self, data: Mnist):
        self.train_x = binarize(data.train_x)
        self.test_x = binarize(data.test_x)
        self.n_train = len(self.train_x)

    def train_batch(self, idx: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        """(x, eps) for train_step: binary images and the reparameterisation noise."""
        eps = rng.standard_normal((len(idx), self.hp.latent_dim), dtype=np.float32)
        return self.train_x[idx], eps

    def eval_noise(self) -> np.ndarray:
        """The same eps for every evaluation, whatever the framework."""
        rng = np.random.default_rng(EVAL_NOISE_SEED)
        return rng.standard_normal((len(self.test_x), self.hp.latent_dim), dtype=np.float32)

    def evaluate(self, predict: Predict) -> dict[str, float]:
        out = predict_in_batches(predict, "eval_outputs", self.test_x, self.eval_noise())
        metrics = neg_elbo(self.test_x, out["logits"], out["mu"], out["logsigma"])
        return {f"test_{k}": v for k, v in metrics.items()}

    def save_pictures(self, out_dir: Path, predict: Predict, title: str) -> list[Path]:
        from shared.images import save_panels  # matplotlib only when pictures are drawn

        rng = np.random.default_rng(EVAL_NOISE_SEED + 1)
        z = rng.standard_normal((100, self.hp.latent_dim), dtype=np.float32)
        u = rng.random((100, self.hp.input_dim), dtype=np.float32)
        samples = predict("sample", z, u)
        save_panels(
            out_dir / "samples.png",
            [("Bernoulli means p = f(z), z ~ N(0, I)", samples["means"]), ("samples x ~ Bernoulli(p)", samples["pixels"])],
            suptitle=title,
        )
        x = self.test_x[np.linspace(0, len(self.test_x) - 1, 50).astype(int)]  # all digits, not only the first
        recon = predict("reconstruct", x)
        save_panels(
            out_dir / "reconstructions.png",
            [("binarised test digits", x), ("reconstructions sigmoid(f(mu(x)))", recon)],
            suptitle=title,
        )
        return [out_dir / "samples.png", out_dir / "reconstructions.png"]


TASKS = {"vae_mlp": VaeMlpTask}
