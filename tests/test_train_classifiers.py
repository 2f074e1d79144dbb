"""Training the classifiers end to end: MLP, CNN and both forms of the RNN, in both frameworks."""
from __future__ import annotations

import json

import numpy as np
import pytest

from jax_impl.train import main as jax_train
from shared.names import load_names
from shared.weights import load_weights
from tests.conftest import SHARED_DATA
from tests.tolerances import CROSS_FRAMEWORK_METRIC_RTOL
from torch_impl import mlp as tmlp
from torch_impl.train import main as torch_train
from torch_impl.weights import save_model

TRAIN = {"torch": torch_train, "jax": jax_train}
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def names_dir():
    path = SHARED_DATA / "names"
    if not (path / "Russian.txt").is_file():
        pytest.fail(f"{path}: the classic names files are missing (they come with ../shared/data)")
    return path


@pytest.fixture(scope="module")
def small_names_dir(names_dir, tmp_path_factory):
    """Three classes of 40 real names each: enough for a quick run of the command."""
    path = tmp_path_factory.mktemp("names")
    for language in ("English", "Italian", "Japanese"):
        lines = (names_dir / f"{language}.txt").read_text(encoding="utf-8").splitlines()[:40]
        (path / f"{language}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("variant", ["batched", "per-name"])
@pytest.mark.parametrize("framework", TRAIN)
def test_rnn_trains_in_both_forms_and_writes_its_outputs(framework, variant, small_names_dir, tmp_path):
    metrics = TRAIN[framework](["rnn", "--variant", variant, "--epochs", "2", "--data-dir", str(small_names_dir), "--out", str(tmp_path)])
    assert metrics["config"]["variant"] == variant and metrics["config"]["batch_size"] == (1 if variant == "per-name" else 64)
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2]
    for record in metrics["epochs"]:
        assert set(record) >= {"train_loss", "train_accuracy", "test_loss", "test_accuracy"}
        assert 0 <= record["test_accuracy"] <= 1 and record["test_loss"] > 0
    assert sorted(load_weights(tmp_path / "weights.safetensors")) == ["hid_fc.bias", "hid_fc.weight", "out_fc.bias", "out_fc.weight"]
    assert load_weights(tmp_path / "weights.safetensors")["out_fc.weight"].shape == (3, 57 + 128)
    assert (tmp_path / "confusion.png").read_bytes()[:8] == PNG


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


@pytest.mark.parametrize("framework", TRAIN)
def test_mlp_default_training_reaches_93_percent(framework, tmp_path):
    metrics = TRAIN[framework](["mlp", "--out", str(tmp_path)])
    assert metrics["final"]["test_accuracy"] >= 0.93
    assert metrics["epochs"][-1]["train_loss"] < metrics["epochs"][0]["train_loss"] / 10
    assert (tmp_path / "confusion.png").read_bytes()[:8] == PNG


def test_mlp_trained_the_same_way_in_both_frameworks_ends_alike(tmp_path):
    """Same initial weights, same batch order: one epoch in each framework (the README reports the gap)."""
    init = tmp_path / "init.safetensors"
    save_model(tmlp.init_model(0), init, "mlp")
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
