"""Training the classifiers end to end: MLP, CNN and both forms of the RNN, in both frameworks."""
from __future__ import annotations

import numpy as np
import pytest

from jax_impl.train import main as jax_train
from shared.data import load_embedded_mnist
from shared.frechet import CLASSIFIER_PATH, Classifier
from shared.hparams import RNN_PER_NAME
from shared.names import load_names, one_hot_name
from shared.weights import WeightsSpec, load_weights
from tests.conftest import slow_for
from tests.numpy_reference import numpy_rnn_log_probs
from tests.tolerances import CROSS_FRAMEWORK_METRIC_RTOL
from torch_impl import mlp as tmlp
from torch_impl.train import main as torch_train
from torch_impl.weights import save_model

TRAIN = {"torch": torch_train, "jax": jax_train}
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def small_names_dir(names_dir, tmp_path_factory):
    """Three classes of 40 real names each: enough for a quick run of the command."""
    path = tmp_path_factory.mktemp("names")
    for language in ("English", "Italian", "Japanese"):
        lines = (names_dir / f"{language}.txt").read_text(encoding="utf-8").splitlines()[:40]
        (path / f"{language}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(("framework", "variant"), [("torch", "batched"), ("jax", "batched"), ("torch", "per-name"),
                                                    pytest.param("jax", "per-name", marks=pytest.mark.slow)])
def test_rnn_trains_in_both_forms_and_writes_its_outputs(framework, variant, small_names_dir, tmp_path):
    metrics = TRAIN[framework](["rnn", "--variant", variant, "--epochs", "2", "--data-dir", str(small_names_dir), "--out", str(tmp_path)])
    assert metrics["config"]["variant"] == variant and metrics["config"]["batch_size"] == (1 if variant == "per-name" else 64)
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2]
    for record in metrics["epochs"]:
        assert set(record) >= {"train_loss", "train_accuracy", "test_loss", "test_accuracy"}
    weights = load_weights(tmp_path / "weights.safetensors")
    assert sorted(weights) == ["hid_fc.bias", "hid_fc.weight", "out_fc.bias", "out_fc.weight"]
    assert weights["out_fc.weight"].shape == (3, 57 + 128)
    # The reported test metrics are what the written weights do, by the source's loop in numpy.
    names = load_names(small_names_dir)
    log_probs = np.array([numpy_rnn_log_probs(weights, one_hot_name(name), RNN_PER_NAME.hidden_dim) for name in names.test_names])
    assert metrics["final"]["test_accuracy"] == np.mean(log_probs.argmax(-1) == names.test_y)
    assert metrics["final"]["test_loss"] == pytest.approx(-np.mean(log_probs[np.arange(len(log_probs)), names.test_y]), rel=1e-5)
    assert (tmp_path / "confusion.png").read_bytes()[:8] == PNG


@pytest.mark.slow
@pytest.mark.parametrize("framework", TRAIN)
def test_rnn_batched_learns_the_classic_names(framework, names_dir, tmp_path):
    """5 epochs of the batched form; the default 20 are in the slow test below."""
    metrics = TRAIN[framework](["rnn", "--epochs", "5", "--data-dir", str(names_dir), "--out", str(tmp_path)])
    names = load_names(names_dir)
    majority = np.bincount(names.test_y).max() / len(names.test_y)
    assert majority == pytest.approx(0.501, abs=1e-3)  # Russian
    assert metrics["final"]["test_accuracy"] > majority + 0.1


@pytest.mark.slow
@pytest.mark.parametrize("framework", TRAIN)
def test_rnn_default_training_on_the_classic_names(framework, names_dir, tmp_path):
    metrics = TRAIN[framework](["rnn", "--data-dir", str(names_dir), "--out", str(tmp_path)])
    assert metrics["final"]["test_accuracy"] > 0.68


@pytest.mark.parametrize("framework", slow_for(TRAIN, {"jax"}))
def test_mlp_default_training_reaches_93_percent(framework, tmp_path):
    metrics = TRAIN[framework](["mlp", "--out", str(tmp_path)])
    assert metrics["final"]["test_accuracy"] >= 0.93
    assert metrics["epochs"][-1]["train_loss"] < metrics["epochs"][0]["train_loss"] / 10
    assert (tmp_path / "confusion.png").read_bytes()[:8] == PNG
    if framework == "torch":  # the command that made the Frechet classifier, shared/assets/mnist_mlp.safetensors
        assert_same_classifier_as_the_asset(tmp_path / "weights.safetensors")


def assert_same_classifier_as_the_asset(weights) -> None:
    """A retrained `torch_impl.train mlp --seed 0` classifies the embedded test digits as the shipped asset does.

    Bit for bit only on the CPU that made the asset (an AMD EPYC Zen 5: six
    retrainings gave its tensors exactly); lr 0.01 Adam amplifies the last-bit
    differences of another CPU's matmul kernels (on an AMD EPYC Zen 3 the
    weights ended up to 0.35 apart), but the two agree on 99.3% of the digits.
    """
    test = load_embedded_mnist()
    ours, shipped = Classifier(load_weights(weights)), Classifier(load_weights(CLASSIFIER_PATH))
    agreement = np.mean(ours.logits(test.test_x).argmax(-1) == shipped.logits(test.test_x).argmax(-1))
    assert agreement >= 0.98, f"the retrained classifier agrees with {CLASSIFIER_PATH} on {agreement:.1%} of the test digits"


def test_mlp_trained_the_same_way_in_both_frameworks_ends_alike(tmp_path):
    """Same initial weights, same batch order: one epoch in each framework (the README reports the gap)."""
    init = tmp_path / "init.safetensors"
    save_model(tmlp.init_model(0), init, WeightsSpec("mlp", "default"))
    runs = {fw: TRAIN[fw](["mlp", "--epochs", "1", "--init", str(init), "--out", str(tmp_path / fw)]) for fw in TRAIN}
    t, j = runs["torch"]["final"], runs["jax"]["final"]
    assert abs(t["test_accuracy"] - j["test_accuracy"]) <= 0.005
    assert t["train_loss"] == pytest.approx(j["train_loss"], rel=1e-4)
    assert t["test_loss"] == pytest.approx(j["test_loss"], rel=1e-3)


@pytest.mark.parametrize("framework", TRAIN)
def test_a_classifier_scores_the_same_in_the_other_framework(framework, tmp_path):
    other = "jax" if framework == "torch" else "torch"
    own = TRAIN[framework](["mlp", "--epochs", "2", "--seed", "4", "--out", str(tmp_path / "own")])["final"]
    theirs = TRAIN[other](["mlp", "--epochs", "0", "--init", str(tmp_path / "own" / "weights.safetensors"), "--out", str(tmp_path / "theirs")])["final"]
    assert theirs["test_accuracy"] == own["test_accuracy"]
    assert theirs["test_loss"] == pytest.approx(own["test_loss"], rel=CROSS_FRAMEWORK_METRIC_RTOL)


@pytest.mark.parametrize("framework", slow_for(TRAIN, {"jax"}))
def test_cnn_learns_in_one_epoch(framework, tmp_path):
    """40 Adam steps, BatchNorm and dropout on, take the test accuracy from chance (10%) past 50%.

    Measured after one epoch: 69.6% (torch), 92.0% (JAX), each from its own
    initial weights and dropout masks (96.4% in both after two); the default
    10 epochs are the slow test below.
    """
    (record,) = TRAIN[framework](["cnn", "--epochs", "1", "--out", str(tmp_path)])["epochs"]
    assert record["train_loss"] < np.log(10) and record["test_accuracy"] >= 0.5
    assert (tmp_path / "confusion.png").read_bytes()[:8] == PNG


@pytest.mark.slow
@pytest.mark.parametrize("framework", TRAIN)
def test_cnn_default_training_reaches_96_percent(framework, tmp_path):
    metrics = TRAIN[framework](["cnn", "--out", str(tmp_path)])
    assert metrics["final"]["test_accuracy"] >= 0.96
    assert (tmp_path / "confusion.png").read_bytes()[:8] == PNG


def test_rnn_learns_the_embedded_names(tmp_path):
    """The Faker-built default (17 classes, names up to 40 letters) trains without overflowing."""
    metrics = jax_train(["rnn", "--epochs", "4", "--out", str(tmp_path)])
    names = load_names()
    majority = np.bincount(names.test_y).max() / len(names.test_y)
    losses = [e["train_loss"] for e in metrics["epochs"]]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert metrics["final"]["test_accuracy"] > majority + 0.15
