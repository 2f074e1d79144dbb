"""Training the adversarial autoencoders end to end, all three variants, in both frameworks."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from jax_impl.train import main as jax_train
from shared.data import load_embedded_mnist
from shared.tasks import TASKS
from shared.weights import load_weights
from tests.conftest import REPO_ROOT, slow_for
from torch_impl import aae as taae
from torch_impl.train import main as torch_train
from torch_impl.weights import load_model

TRAIN = {"torch": torch_train, "jax": jax_train}
PNG = b"\x89PNG\r\n\x1a\n"
LOSSES = {
    "unsupervised": {"train_recon_loss", "train_d_loss", "train_g_loss"},
    "supervised": {"train_recon_loss", "train_d_loss", "train_g_loss"},
    "semisupervised": {"train_recon_loss", "train_d_loss", "train_d_cat_loss", "train_g_loss", "train_class_loss"},
}
PICTURES = {
    "unsupervised": ["latent.png"],
    "supervised": ["latent.png", "style_grid.png"],
    "semisupervised": ["latent.png", "style_grid.png", "confusion.png"],
}


# The semi-supervised variant runs every phase and draws every picture (~12 s for both
# frameworks); the other two, ~18 s more, only with -m slow (the default suite's budget).
VARIANTS = [pytest.param(v, marks=[] if v == "semisupervised" else pytest.mark.slow) for v in LOSSES]


def torch_test_metrics(weights, variant: str) -> dict[str, float]:
    """The test BCE (the source's BCELoss on P's sigmoid) and the semi-supervised test error, in torch, from a weights file."""
    test = load_embedded_mnist()
    model = taae.init_model(0, variant)
    load_model(model, weights)
    model.eval()
    x, y = torch.from_numpy(test.test_x), torch.from_numpy(test.test_y)
    with torch.no_grad():
        z, class_logits = model.encoder(x)
        if variant == "unsupervised":
            code = None
        elif variant == "supervised":
            code = F.one_hot(y, 10).float()
        else:
            code = F.softmax(class_logits, dim=-1)
        out = {"test_bce": float(torch.nn.BCELoss()(torch.sigmoid(model.decoder(z, code)), x))}
        if class_logits is not None:
            out["test_error"] = float((class_logits.argmax(-1) != y).float().mean())
    return out


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("framework", slow_for(TRAIN, {"jax"}))  # JAX's semi-supervised steps: tests/test_parity_aae.py
def test_each_variant_trains_and_draws_its_pictures(framework, variant, tmp_path):
    metrics = TRAIN[framework](["aae", "--variant", variant, "--epochs", "1", "--out", str(tmp_path)])
    (last,) = metrics["epochs"]
    assert set(last) >= LOSSES[variant] | {"test_bce"}
    assert last["test_bce"] < 0.3 < np.log(2)  # ~0.25-0.28 after one epoch; 0.69 for a model that predicts 0.5 everywhere
    if variant == "semisupervised":
        assert metrics["config"]["labels"] == 100 and metrics["config"]["unlabelled"] == 3900
        assert last["test_error"] < 0.5  # ~0.3 after one epoch on 100 labels; chance is 0.9
    expected = torch_test_metrics(tmp_path / "weights.safetensors", variant)  # what the written weights do
    assert last["test_bce"] == pytest.approx(expected["test_bce"], rel=1e-5)
    if variant == "semisupervised":
        assert last["test_error"] == pytest.approx(expected["test_error"], abs=1.5e-3)  # a digit on the fence at most
    keys = load_weights(tmp_path / "weights.safetensors")
    assert ("discriminator_cat.lin1.weight" in keys) == (variant == "semisupervised")
    # P's input: z (2-d), [one-hot label, z], [softmax(class logits), z (10-d)]
    assert keys["decoder.lin1.weight"].shape[1] == {"unsupervised": 2, "supervised": 12, "semisupervised": 20}[variant]
    for name in PICTURES[variant]:
        assert (tmp_path / name).read_bytes()[:8] == PNG


def test_labelled_subset_is_balanced_fixed_and_apart_from_the_unlabelled():
    task = TASKS["aae"].load("semisupervised")
    task.set_labels(1000)
    y = task.data.train_y
    assert np.bincount(y[task.labelled]).tolist() == [100] * 10
    assert not set(task.labelled) & set(task.unlabelled) and len(task.labelled) + len(task.unlabelled) == len(y)
    again = TASKS["aae"].load("semisupervised")
    again.set_labels(1000)
    np.testing.assert_array_equal(again.labelled, task.labelled)
    x, z, y_prior, x_l, y_l = task.train_batch(np.arange(100), np.random.default_rng(0))
    assert set(map(tuple, x_l)) <= set(map(tuple, task.data.train_x[task.labelled]))
    assert (y_prior.sum(1) == 1).all() and z.std() == pytest.approx(1.0, rel=0.2)  # prior N(0, 1) in this variant


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--variant", "unsupervised", "--labels", "100"], "--labels: only aae --variant semisupervised takes labels"),
        (["--variant", "semisupervised", "--labels", "15"], "--labels 15: expected a multiple of 10"),
        (["--variant", "semisupervised", "--labels", "4000"], "--labels 4000: expected a multiple of 10 between 10 and 3990"),
    ],
)
def test_bad_labels_are_one_line_errors(args, expected, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "torch_impl.train", "aae", *args, "--epochs", "0", "--out", str(tmp_path)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert expected in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
