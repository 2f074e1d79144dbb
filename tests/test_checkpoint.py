"""Checkpoints and exact resume, signals, non-finite losses: the training command of both frameworks.

A run stopped after epoch k and resumed must end where the same run
uninterrupted ends, bit for bit: every metric but the timings, every weight,
and the checkpoint's optimizer and random state. The runs are short (a
240-image slice of the embedded MNIST, 2 epochs of 6 steps), so that each
architecture kind is covered in both frameworks: a classifier with dropout
and BatchNorm (the CNN), a VAE, the GAN, the semi-supervised AAE.
"""
from __future__ import annotations

import importlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from jax_impl.train import main as jax_train
from shared.checkpoint import STATE
from shared.data import load_embedded_mnist
from shared.errors import EXIT_DIVERGED, RunStopped, UserError
from shared.tasks import TASKS
from shared.trainer import TIMING_KEYS, write_json
from shared.weights import load_weights
from tests.test_data import write_idx
from torch_impl.train import main as torch_train

TRAIN = {"torch": torch_train, "jax": jax_train}
KINDS = {  # one architecture per kind, with what makes it stateful
    "cnn": [],  # dropout and BatchNorm
    "vae_mlp": [],  # reparameterisation noise
    "gan": [],  # two optimizers
    "aae": ["--variant", "semisupervised", "--labels", "10"],  # five phases, six optimizers
}
SHORT = ["--batch-size", "40", "--epochs", "2"]


@pytest.fixture(scope="module")
def small_mnist(tmp_path_factory) -> Path:
    """240 training and 60 test images of the embedded subset (drawn at random: the subset is sorted by digit) as IDX files."""
    data, folder = load_embedded_mnist(), tmp_path_factory.mktemp("mnist-240")
    write_split(folder, "train", data.train_x, data.train_y, 240)
    write_split(folder, "t10k", data.test_x, data.test_y, 60)
    return folder


def write_split(folder: Path, prefix: str, x: np.ndarray, y: np.ndarray, count: int) -> None:
    pick = np.random.default_rng(0).permutation(len(x))[:count]
    write_idx(folder / f"{prefix}-images-idx3-ubyte", np.rint(x[pick] * 255).reshape(count, 28, 28))
    write_idx(folder / f"{prefix}-labels-idx1-ubyte", y[pick])


def without_timings(metrics: dict) -> list[dict]:
    return [{k: v for k, v in record.items() if k not in TIMING_KEYS} for record in metrics["epochs"]]


def assert_same_run(a: Path, b: Path) -> None:
    """Two run folders hold the same metrics, weights and checkpoint state, bit for bit."""
    metrics_a, metrics_b = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
    assert without_timings(metrics_a) == without_timings(metrics_b)
    assert metrics_a["final"] == metrics_b["final"]
    for name in ("weights.safetensors", f"checkpoint/{STATE}"):
        wa, wb = load_weights(a / name), load_weights(b / name)
        assert wa.keys() == wb.keys()
        for key in wa:
            np.testing.assert_array_equal(wa[key], wb[key], err_msg=f"{name}: {key}")


def signal_during_evaluation(monkeypatch, arch: str, signum: int, at_call: int) -> None:
    """Send this process `signum` while the task evaluates for the `at_call`-th time (after that epoch's steps)."""
    task_cls, calls = TASKS[arch], []
    original = task_cls.evaluate

    def evaluate(self, model):
        calls.append(1)
        if len(calls) == at_call:
            os.kill(os.getpid(), signum)
        return original(self, model)

    monkeypatch.setattr(task_cls, "evaluate", evaluate)


@pytest.mark.parametrize(("framework", "arch"), [  # one per framework in the default suite, all in the slow one
    ("torch", "gan"), ("jax", "vae_mlp"), *[pytest.param(f, a, marks=pytest.mark.slow)
                                           for f in ("torch", "jax") for a in KINDS if (f, a) not in {("torch", "gan"), ("jax", "vae_mlp")}]])
def test_interrupted_run_resumed_equals_uninterrupted(framework, arch, small_mnist, tmp_path, monkeypatch, capsys):
    train, argv = TRAIN[framework], [arch, *KINDS[arch], "--data-dir", str(small_mnist), *SHORT]
    train([*argv, "--out", str(tmp_path / "whole")])

    signal_during_evaluation(monkeypatch, arch, signal.SIGINT, at_call=1)
    with pytest.raises(RunStopped) as stopped:
        train([*argv, "--out", str(tmp_path / "cut")])
    assert stopped.value.status == 130
    assert f"checkpoint of epoch 1 is in {tmp_path / 'cut' / 'checkpoint'}" in str(stopped.value)
    assert f"--resume {tmp_path / 'cut'}" in str(stopped.value)
    assert [r["epoch"] for r in json.loads((tmp_path / "cut" / "metrics.json").read_text())["epochs"]] == [1]  # written per epoch
    monkeypatch.undo()

    train([arch, "--resume", str(tmp_path / "cut")])  # every other flag from the checkpoint
    assert_same_run(tmp_path / "whole", tmp_path / "cut")


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_resume_can_go_further_and_refuses_other_settings(framework, small_mnist, tmp_path):
    train, out = TRAIN[framework], tmp_path / "run"
    argv = ["mlp", "--data-dir", str(small_mnist), "--batch-size", "40"]
    train([*argv, "--epochs", "1", "--out", str(out)])
    train(["mlp", "--resume", str(out), "--epochs", "2"])  # further than the run first meant to go
    train([*argv, "--epochs", "2", "--out", str(tmp_path / "whole")])
    assert_same_run(tmp_path / "whole", out)

    refused = {
        ("--batch-size", "20"): "trained with --batch-size 40, not --batch-size 20",
        ("--lr", "0.5"): "--lr",
        ("--seed", "3"): "trained with --seed 0, not --seed 3",
        ("--epochs", "1"): "has reached epoch 2; --epochs 1 is behind it",
        ("--data-dir", str(tmp_path)): "trained with --data-dir ",
        ("--test-dir", str(tmp_path)): "trained with no --test-dir, not --test-dir ",
        ("--variant", "conv"): "trained with --variant default, not --variant conv",
        ("--labels", "10"): "trained with no --labels, not --labels 10",
        ("--out", str(tmp_path / "elsewhere")): "writes to its own folder",
    }
    for flag, message in refused.items():
        with pytest.raises(UserError, match=message.replace("-", r"\-").replace("(", r"\(")):
            train(["mlp", "--resume", str(out), *flag])
    with pytest.raises(UserError, match="a run of mlp, not cnn"):
        train(["cnn", "--resume", str(out)])
    other = "jax" if framework == "torch" else "torch"
    with pytest.raises(UserError, match=f"a {framework} run; resume it with python -m {framework}_impl.train"):
        TRAIN[other](["mlp", "--resume", str(out)])


def test_resume_refuses_missing_half_written_and_changed_data(small_mnist, tmp_path):
    with pytest.raises(UserError, match="no such folder"):
        torch_train(["mlp", "--resume", str(tmp_path / "nothing")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no checkpoint there"):
        torch_train(["mlp", "--resume", str(tmp_path / "empty")])
    out = tmp_path / "run"
    torch_train(["mlp", "--data-dir", str(small_mnist), "--batch-size", "40", "--epochs", "1", "--out", str(out)])
    (out / "checkpoint" / "progress.json").rename(out / "progress.json.away")
    with pytest.raises(UserError, match=r"half-written \(no progress.json\)"):
        torch_train(["mlp", "--resume", str(out)])
    (out / "progress.json.away").rename(out / "checkpoint" / "progress.json")
    (out / "checkpoint" / STATE).unlink()
    with pytest.raises(UserError, match=rf"half-written \(no {STATE}\)"):
        torch_train(["mlp", "--resume", str(out)])
    # the same folder, other images in it: the data source string records the counts
    torch_train(["mlp", "--data-dir", str(small_mnist), "--batch-size", "40", "--epochs", "1", "--out", str(out)])
    data = load_embedded_mnist()
    write_split(small_mnist, "train", data.train_x, data.train_y, 200)
    try:
        with pytest.raises(UserError, match="the run's"):
            torch_train(["mlp", "--resume", str(out)])
    finally:
        write_split(small_mnist, "train", data.train_x, data.train_y, 240)


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_non_finite_loss_stops_with_status_3_and_keeps_the_last_good_epoch(framework, small_mnist, tmp_path, monkeypatch):
    task_cls, calls = TASKS["mlp"], []
    original = task_cls.train_batch

    def train_batch(self, idx, rng):  # a NaN pixel in epoch 2's third batch
        calls.append(1)
        x, y = original(self, idx, rng)
        return (x * np.float32("nan"), y) if len(calls) == 6 + 3 else (x, y)

    monkeypatch.setattr(task_cls, "train_batch", train_batch)
    out = tmp_path / "run"
    with pytest.raises(RunStopped) as stopped:
        TRAIN[framework](["mlp", "--data-dir", str(small_mnist), *SHORT, "--out", str(out)])
    assert stopped.value.status == EXIT_DIVERGED
    assert "not finite at epoch 2, step 3 of 6 (loss nan)" in str(stopped.value)
    assert f"checkpoint of epoch 1 is in {out / 'checkpoint'}" in str(stopped.value)
    metrics = json.loads((out / "metrics.json").read_text())
    assert [r["epoch"] for r in metrics["epochs"]] == [1] and metrics["finished"] is False
    assert json.loads((out / "checkpoint" / "progress.json").read_text())["epoch"] == 1


def test_metrics_json_is_strict(tmp_path):
    """No bare NaN or Infinity: a strict parser reads every file the command writes."""

    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    write_json(tmp_path / "m.json", {"loss": float("nan"), "history": [1.5, float("inf")], "n": 3})
    assert json.loads((tmp_path / "m.json").read_text(), parse_constant=refuse) == {"loss": None, "history": [1.5, None], "n": 3}


def run_command(framework: str, args: list[str], **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", f"{framework}_impl.train", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


@pytest.mark.parametrize(("framework", "signum"), [("torch", signal.SIGTERM), pytest.param("jax", signal.SIGINT, marks=pytest.mark.slow)])
def test_signal_mid_run_stops_cleanly_and_resumes(framework, signum, tmp_path):
    """A real signal to the command mid-run: status 128 + signal, a one-line hint, and the resumed run equals a whole one."""
    argv = ["mlp", "--batch-size", "16", "--epochs", "3"]  # 250 steps an epoch of the embedded subset
    process = run_command(framework, [*argv, "--out", str(tmp_path / "cut")])
    first_epoch = tmp_path / "cut" / "metrics.json"  # written after the checkpoint: epoch 2 is under way
    deadline = time.monotonic() + 240
    while not first_epoch.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    if process.returncode == 0:
        pytest.fail(f"the run finished before the signal arrived: {stderr[-300:]}")
    assert process.returncode == 128 + signum, stderr[-500:]
    last = stderr.strip().splitlines()[-1]
    assert re.match(rf"stopped by {signal.Signals(signum).name} at (epoch [23], step \d+ of 250|the end of epoch [12]); "
                    r"the checkpoint of epoch [12] is in ", last) and "Traceback" not in stderr
    assert last.endswith(f"resume with: python -m {framework}_impl.train mlp --resume {tmp_path / 'cut'}")
    TRAIN[framework](["mlp", "--resume", str(tmp_path / "cut")])
    TRAIN[framework]([*argv, "--out", str(tmp_path / "whole")])
    assert_same_run(tmp_path / "whole", tmp_path / "cut")


DROPOUT = {"cnn": [], "aae": ["--variant", "unsupervised"]}  # the architectures with dropout


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_one_seed_gives_one_run_in_separate_processes(framework, small_mnist, tmp_path):
    """Same seed, same machine, same framework: the same metrics and weights, bit for bit (dropout included)."""
    script = f"import json, sys; from {framework}_impl.train import main; [main(argv) for argv in json.loads(sys.argv[1])]"
    for name in ("first", "second"):
        argvs = [[arch, *flags, "--data-dir", str(small_mnist), *SHORT, "--out", str(tmp_path / name / arch)] for arch, flags in DROPOUT.items()]
        done = subprocess.run([sys.executable, "-c", script, json.dumps(argvs)], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
    for arch in DROPOUT:
        assert_same_run(tmp_path / "first" / arch, tmp_path / "second" / arch)


def train_mode_logits(framework: str, seed: int, weights: Path, x: np.ndarray) -> np.ndarray:
    """The CNN's logits in training mode (dropout on), from the same weights file, with the dropout streams of `seed`."""
    from shared.weights import WeightsSpec

    backend = importlib.import_module(f"{framework}_impl.training").Backend("cnn", "cpu")
    model = backend.init_model(seed, weights, WeightsSpec("cnn", "default"))  # the dropout streams too
    model.train()
    logits = backend.arch.eval_outputs(model, backend.to_device(x))["logits"]
    return backend.to_numpy(logits.detach() if framework == "torch" else logits)


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_the_seed_draws_the_dropout_masks(framework, tmp_path):
    from shared.weights import WeightsSpec
    from torch_impl import cnn
    from torch_impl.weights import save_model

    save_model(cnn.init_model(0), tmp_path / "w.safetensors", WeightsSpec("cnn", "default"))
    x = load_embedded_mnist().test_x[:32]
    first, again, other = (train_mode_logits(framework, seed, tmp_path / "w.safetensors", x) for seed in (5, 5, 6))
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).max() > 0.1  # half of the 128 hidden units dropped differently


def test_a_write_cut_between_its_renames_resumes_from_the_previous_checkpoint(small_mnist, tmp_path):
    """Killed between renaming the old checkpoint away and the new one in: the old one is used, the leftovers cleared."""
    argv = ["mlp", "--data-dir", str(small_mnist), "--batch-size", "40"]
    torch_train([*argv, "--epochs", "1", "--out", str(tmp_path / "cut")])
    (tmp_path / "cut" / "checkpoint").rename(tmp_path / "cut" / ".checkpoint-old")
    (tmp_path / "cut" / ".checkpoint-k3j2").mkdir()  # a temporary folder a killed write left
    (tmp_path / "cut" / ".checkpoint-k3j2" / "weights.safetensors").write_bytes(b"half")
    torch_train(["mlp", "--resume", str(tmp_path / "cut"), "--epochs", "2"])
    torch_train([*argv, "--epochs", "2", "--out", str(tmp_path / "whole")])
    assert_same_run(tmp_path / "whole", tmp_path / "cut")
    assert sorted(p.name for p in (tmp_path / "cut").iterdir() if "checkpoint" in p.name) == ["checkpoint"]


def test_pictures_take_at_most_a_tenth_of_the_run(monkeypatch):
    """0.5 s epochs, 1 s pictures: drawn after epoch 1, again once 10% of the time allows (epoch 18, at 10 s), and after the last."""
    from shared import trainer

    clock = [0.0]
    monkeypatch.setattr(trainer.time, "perf_counter", lambda: clock[0])
    schedule, drawn = trainer.PictureSchedule(began=0.0), []
    for epoch in range(1, 21):
        clock[0] += 0.5

        def draw(epoch=epoch):
            drawn.append(epoch)
            clock[0] += 1.0

        schedule.draw(draw, last=epoch == 20)
    assert drawn == [1, 18, 20]


def test_files_get_the_users_umask_not_mkstemps_private_mode(small_mnist, tmp_path):
    """Written through temporary files (mkstemp: 0o600, mkdtemp: 0o700), yet readable as any file the user writes."""
    old = os.umask(0o022)
    try:
        torch_train(["mlp", "--data-dir", str(small_mnist), "--batch-size", "40", "--epochs", "1", "--out", str(tmp_path)])
    finally:
        os.umask(old)
    for name in ("metrics.json", "weights.safetensors", "checkpoint/state.safetensors", "checkpoint/progress.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name
    assert (tmp_path / "checkpoint").stat().st_mode & 0o777 == 0o755
