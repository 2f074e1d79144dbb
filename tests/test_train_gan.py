"""Training the GAN end to end, in both frameworks, and scoring a saved generator.

The sample-quality metrics a run reports are recomputed from the weights file
it wrote, by code that shares nothing with shared/frechet.py: the generator
and the classifier in torch, scipy's matrix square root.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from jax_impl.train import main as jax_train
from shared.data import load_embedded_mnist
from shared.frechet import CLASSIFIER_PATH
from shared.tasks import TASKS
from shared.weights import load_weights
from tests.conftest import slow_for
from torch_impl import gan as tgan
from torch_impl import mlp as tmlp
from torch_impl.train import main as torch_train
from torch_impl.weights import load_model

TRAIN = {"torch": torch_train, "jax": jax_train}
PNG = b"\x89PNG\r\n\x1a\n"
LOG_2 = float(np.log(2.0))  # the BCE per pixel of a model that predicts 0.5 everywhere


def torch_sample_quality(weights, real_images: np.ndarray) -> dict[str, float]:
    """The GAN's sample-quality metrics recomputed in torch and scipy from a weights file.

    The generator in eval mode draws as many digits as there are real images,
    from the task's fixed latents; the shipped classifier, as a torch MLP,
    gives the features and the classes; scipy's sqrtm the Frechet distance.
    """
    from scipy.linalg import LinAlgWarning, sqrtm

    gan, classifier = tgan.init_model(0), tmlp.init_model(0)
    load_model(gan, weights)
    load_model(classifier, CLASSIFIER_PATH)
    gan.eval()
    z = TASKS["gan"].load().eval_latents(len(real_images))
    with torch.no_grad():
        generated = (gan.generator(torch.from_numpy(z)) + 1) / 2

        def features(x):
            return F.relu(classifier.hidden3(F.relu(classifier.hidden2(F.relu(classifier.hidden1(x)))))).double().numpy()

        f_real, f_gen = features(torch.from_numpy(real_images)), features(generated)
        counts = np.bincount(classifier(generated).argmax(-1).numpy(), minlength=10)
    s_real, s_gen = np.cov(f_real, rowvar=False), np.cov(f_gen, rowvar=False)
    with warnings.catch_warnings():  # a barely trained generator leaves feature units dead: a singular covariance
        warnings.simplefilter("ignore", LinAlgWarning)
        root = sqrtm(s_real @ s_gen).real
    distance = np.sum((f_real.mean(0) - f_gen.mean(0)) ** 2) + np.trace(s_real + s_gen - 2 * root)
    return {
        "frechet_distance": float(distance),
        "classes_covered": int((counts >= 0.01 * len(z)).sum()),
        "largest_class_fraction": float(counts.max() / len(z)),
    }


@pytest.fixture(scope="module")
def gan_init(tmp_path_factory):
    """The GAN's initial weights (torch's DCGAN init, seed 0), the start of both frameworks' runs, and their torch score."""
    out = tmp_path_factory.mktemp("gan-init")
    final = torch_train(["gan", "--epochs", "0", "--out", str(out)])["final"]
    return out / "weights.safetensors", final


@pytest.mark.parametrize("framework", slow_for(TRAIN, {"jax"}))
def test_gan_trains_and_reports_its_sample_quality(framework, gan_init, tmp_path):
    init, initial = gan_init
    (record,) = TRAIN[framework](["gan", "--epochs", "1", "--init", str(init), "--out", str(tmp_path)])["epochs"]
    assert set(record) >= {"train_d_loss", "train_g_loss", "frechet_distance", "classes_covered", "largest_class_fraction"}
    assert record["train_d_loss"] < 2 * LOG_2  # D tells real from fake better than chance (2 log 2: it outputs 1/2)
    # One epoch (62 steps) does not make digits yet (30 do), but the samples move away from the initial
    # generator's (FD 4,374; noise ~4,000, shared/frechet.py): measured ~3,200 after one epoch, ~2,850 after two.
    assert record["frechet_distance"] < min(0.85 * initial["frechet_distance"], 3800)
    expected = torch_sample_quality(tmp_path / "weights.safetensors", load_embedded_mnist().test_x)
    assert record["frechet_distance"] == pytest.approx(expected["frechet_distance"], rel=1e-3)
    assert record["classes_covered"] == expected["classes_covered"]
    assert record["largest_class_fraction"] == pytest.approx(expected["largest_class_fraction"], abs=2e-3)  # a digit or two on the fence
    weights = load_weights(tmp_path / "weights.safetensors")
    assert weights["generator.deconv1.weight"].shape == (100, 128, 7, 7)
    assert weights["discriminator.bn2.num_batches_tracked"] == 62 * 3  # real and fake in the D step, fake in the G step
    for name in ("samples.png", "class_histogram.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG


@pytest.mark.slow  # kept out of the default suite's 6 minutes (docs/testing.md)
def test_gan_evaluates_a_weights_file_without_training(gan_init, tmp_path):
    """--epochs 0 with --init: the sample-quality numbers of a saved generator, the same in both frameworks."""
    init, torch_final = gan_init
    jax_final = jax_train(["gan", "--epochs", "0", "--init", str(init), "--out", str(tmp_path)])["final"]
    assert jax_final["frechet_distance"] == pytest.approx(torch_final["frechet_distance"], rel=1e-3)
    assert jax_final["classes_covered"] == torch_final["classes_covered"]
    expected = torch_sample_quality(init, load_embedded_mnist().test_x)
    assert torch_final["frechet_distance"] == pytest.approx(expected["frechet_distance"], rel=1e-3)
    assert torch_final["classes_covered"] == expected["classes_covered"]
