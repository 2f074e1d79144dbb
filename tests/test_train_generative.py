"""Training the autoencoders, the convolutional VAE and the GAN end to end, in both frameworks."""
from __future__ import annotations

import numpy as np
import pytest

from jax_impl.train import main as jax_train
from shared.weights import load_weights
from torch_impl.train import main as torch_train

TRAIN = {"torch": torch_train, "jax": jax_train}
PNG = b"\x89PNG\r\n\x1a\n"
LOG_2 = float(np.log(2.0))  # the BCE per pixel of a model that predicts 0.5 everywhere


@pytest.mark.parametrize("variant", ["mlp", "conv"])
@pytest.mark.parametrize("framework", TRAIN)
def test_autoencoder_learns_and_draws_reconstructions(framework, variant, tmp_path):
    metrics = TRAIN[framework](["autoencoder", "--variant", variant, "--epochs", "2", "--out", str(tmp_path)])
    first, last = metrics["epochs"]
    assert set(last) >= {"train_loss", "test_bce", "test_bce_per_image"}
    assert last["test_bce"] < first["test_bce"] < LOG_2
    assert last["test_bce_per_image"] == pytest.approx(784 * last["test_bce"])
    keys = sorted(load_weights(tmp_path / "weights.safetensors"))
    assert keys[0] == ("conv1.bias" if variant == "conv" else "decoder1.bias")
    assert (tmp_path / "reconstructions.png").read_bytes()[:8] == PNG


@pytest.fixture(scope="module")
def vae_init(tmp_path_factory):
    """The conv VAE's initial weights (torch's init, seed 0), the start of both frameworks' runs."""
    out = tmp_path_factory.mktemp("vae-init")
    torch_train(["vae", "--epochs", "0", "--out", str(out)])
    return out / "weights.safetensors"


def test_vae_trains_to_the_same_test_elbo_in_both_frameworks(vae_init, tmp_path):
    """Same initial weights, batches and noise: after 2 epochs the test negative ELBOs agree within 1 nat (the issue's target)."""
    runs = {fw: TRAIN[fw](["vae", "--epochs", "2", "--init", str(vae_init), "--out", str(tmp_path / fw)]) for fw in TRAIN}
    initial = torch_train(["vae", "--epochs", "0", "--init", str(vae_init), "--out", str(tmp_path / "init")])["final"]
    for metrics in runs.values():
        final = metrics["final"]
        assert final["test_neg_elbo"] == pytest.approx(final["test_neg_log_likelihood"] + final["test_kl"])
        assert final["test_neg_elbo"] < 0.5 * initial["test_neg_elbo"]  # ~545 nats at init, ~220 after 2 epochs
        assert final["test_kl"] > 1.0  # the latent is used
    gap = abs(runs["torch"]["final"]["test_neg_elbo"] - runs["jax"]["final"]["test_neg_elbo"])
    assert gap < 1.0, f"torch and jax test negative ELBO differ by {gap:.3f} nats"
    for name in ("samples.png", "reconstructions.png"):
        assert (tmp_path / "jax" / name).read_bytes()[:8] == PNG


@pytest.mark.parametrize("framework", TRAIN)
def test_gan_trains_and_reports_its_sample_quality(framework, tmp_path):
    metrics = TRAIN[framework](["gan", "--epochs", "2", "--out", str(tmp_path)])
    first, last = metrics["epochs"]
    assert set(last) >= {"train_d_loss", "train_g_loss", "frechet_distance", "classes_covered", "largest_class_fraction"}
    assert 0 < last["train_d_loss"] < 4 * LOG_2 and last["train_g_loss"] > 0
    # Two epochs (124 steps) do not make digits yet (30 do), but the samples move away
    # from noise (FD ~4,000, shared/frechet.py): measured ~3,200 after one epoch, ~2,850 after two.
    assert last["frechet_distance"] < first["frechet_distance"] < 3800
    assert 1 <= last["classes_covered"] <= 10 and 0.1 <= last["largest_class_fraction"] <= 1
    weights = load_weights(tmp_path / "weights.safetensors")
    assert weights["generator.deconv1.weight"].shape == (100, 128, 7, 7)
    assert weights["discriminator.bn2.num_batches_tracked"] == 2 * 62 * 3  # real and fake in the D step, fake in the G step
    for name in ("samples.png", "class_histogram.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG


def test_gan_evaluates_a_weights_file_without_training(tmp_path):
    """--epochs 0 with --init: the sample-quality numbers of a saved generator, the same in both frameworks."""
    torch_train(["gan", "--epochs", "0", "--out", str(tmp_path / "init")])
    init = tmp_path / "init" / "weights.safetensors"
    finals = [TRAIN[fw](["gan", "--epochs", "0", "--init", str(init), "--out", str(tmp_path / fw)])["final"] for fw in TRAIN]
    assert finals[0]["frechet_distance"] == pytest.approx(finals[1]["frechet_distance"], rel=1e-3)
    assert finals[0]["classes_covered"] == finals[1]["classes_covered"]
