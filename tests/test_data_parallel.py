"""Data parallelism: two devices compute what one device computes, in each framework and across them (docs/distributed.md).

For every architecture whose step takes a batch, from one weights file and
the same real batches (tests/data_parallel.py): the gradients of every phase
of a step and the losses of 10 steps and the parameters after them, on one
device and data-parallel on two (torch: DistributedDataParallel in two
processes started by torchrun; JAX: one process with two CPU devices, the
step jit-compiled over the sharded batch), with dropout off. Then torch DDP
against JAX sharded. BatchNorm: global statistics (both frameworks' default
here) are the single-device computation; per-replica statistics are each
slice's, against numpy, and torch's DDP default against JAX's per-replica
mode. Then bad input, and (slow) the training commands end to end.
"""
from __future__ import annotations

import functools
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from shared.errors import run_cli
from tests import data_parallel as dp
from tests.conftest import REPO_ROOT
from tests.parity import assert_close
from tests.test_cli_errors import one_line_error
from tests.tolerances import (
    CROSS_FRAMEWORK_GRAD_RTOL,
    DATA_PARALLEL_FLOAT32_EXCEPTIONS,
    DATA_PARALLEL_RTOL,
    FLOAT64_GRAD_RTOL,
    GRAD_RTOL,
    TRAJECTORY_BOUNDS,
    TRAJECTORY_FLOAT64_RTOL,
    TrajectoryBounds,
)

DEFAULT_CASES, SLOW_CASES = dp.DEFAULT_CASES, dp.SLOW_CASES  # the rest take minutes in JAX's compiler (and torch's two processes)
FREE_BIAS_SCALE = {"vae": {"conv1.bias": "conv1.weight", "conv2.bias": "conv2.weight", "deconv1.bias": "deconv1.weight",
                           "input_bn.weight": "input_bn.bias"}}  # gradients 0 up to rounding, held relative to their layer's (test_parity_vae)
CASES = [*DEFAULT_CASES, *(pytest.param(c, marks=pytest.mark.slow) for c in SLOW_CASES)]


def key(case: str) -> str:
    arch, variant, _ = dp.parse(case)
    return arch if len(dp.HPARAMS[arch]) == 1 else f"{arch}/{variant}"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """The cases' weights files, written here before torchrun's processes read them."""
    path = tmp_path_factory.mktemp("data-parallel")
    for case in [*DEFAULT_CASES, *SLOW_CASES]:
        dp.case_weights(case, path)
    return path


def group_of(case: str) -> tuple[str, ...]:
    """The cases computed together: the default ones; the slow ones with the float64 and per-replica runs."""
    if case in (*DEFAULT_CASES, *dp.BATCHNORM_CASES):
        return tuple(DEFAULT_CASES)
    return (*SLOW_CASES, *(f"{c}:float64" for c in DATA_PARALLEL_FLOAT32_EXCEPTIONS), "cnn@per-replica")


@functools.cache
def _ddp(folder, cases: tuple[str, ...]) -> dict:
    return dp.run_ddp(list(cases), folder)


@functools.cache
def _jax(folder, cases: tuple[str, ...]) -> dict:
    batchnorm = dp.BATCHNORM_CASES if cases == tuple(DEFAULT_CASES) else ()  # the layer's checks ride with the default cases
    return dp.run_jax([*cases, *batchnorm], folder)


def name(case: str, dtype: str) -> str:
    return case if dtype == "float32" else f"{case}:{dtype}"


def ddp_results(folder, case: str, dtype: str = "float32") -> dict:
    """torch DDP's results, two processes under torchrun."""
    return _ddp(folder, group_of(case))[name(case, dtype)]


def jax_results(folder, case: str, sharded: bool, dtype: str = "float32") -> dict:
    """JAX's results, on one device or sharded over two, from a process with two CPU devices."""
    return _jax(folder, group_of(case))[name(case, dtype)][sharded]


@functools.cache
def single_results(folder, framework: str, case: str, dtype: str = "float32") -> dict:
    if framework == "torch":
        return dp.torch_case(case, dp.case_weights(case, folder), dp.case_batches(case), None, dtype)
    return jax_results(folder, case, False, dtype)


def parallel_results(folder, framework: str, case: str, dtype: str = "float32") -> dict:
    return ddp_results(folder, case, dtype) if framework == "torch" else jax_results(folder, case, True, dtype)


def start_weights(folder, case: str) -> dict[str, np.ndarray]:
    from shared.weights import load_weights

    return load_weights(dp.case_weights(case, folder))


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_two_devices_compute_what_one_computes(folder, framework, case):
    """Loss and every gradient of every phase to DATA_PARALLEL_RTOL (the CNN's convolutions in float64, to
    FLOAT64_GRAD_RTOL), and 10 steps to the architecture's single-device trajectory bounds."""
    parallel, single = parallel_results(folder, framework, case), single_results(folder, framework, case)
    what = f"{framework} {case}, 2 devices vs 1"
    if key(case) in DATA_PARALLEL_FLOAT32_EXCEPTIONS:
        assert_gradients(parallel, single, CROSS_FRAMEWORK_GRAD_RTOL[key(case)], case, what)
        parallel64, single64 = parallel_results(folder, framework, case, "float64"), single_results(folder, framework, case, "float64")
        assert_gradients(parallel64, single64, FLOAT64_GRAD_RTOL, case, what + " in float64")
        for k in ("losses", *(k for k in single64 if k.startswith("param."))):  # and the 10 steps, as the single-device test's float64 run
            assert_close(parallel64[k], single64[k], TRAJECTORY_FLOAT64_RTOL, f"{what} in float64: {k} after {dp.STEPS} steps")
    else:
        assert_gradients(parallel, single, DATA_PARALLEL_RTOL, case, what)
    dp.assert_trajectories_match(parallel, single, start_weights(folder, case), TRAJECTORY_BOUNDS.get(key(case), TrajectoryBounds()),
                                 dp.trajectory_lr(case), what)


@pytest.mark.parametrize("case", [*CASES, pytest.param("cnn@per-replica", marks=pytest.mark.slow)])
def test_torch_ddp_computes_what_jax_sharded_computes(folder, case):
    """The two frameworks' data-parallel steps, the same weights file in: the single-device parity tests' bounds."""
    torch_ddp, jax_sharded = ddp_results(folder, case), jax_results(folder, case, True)
    what = f"{case}: JAX sharded vs torch DDP"
    assert_gradients(jax_sharded, torch_ddp, CROSS_FRAMEWORK_GRAD_RTOL.get(key(case), GRAD_RTOL), case, what)
    dp.assert_trajectories_match(jax_sharded, torch_ddp, start_weights(folder, case), TRAJECTORY_BOUNDS.get(key(case), TrajectoryBounds()),
                                 dp.trajectory_lr(case), what)


def assert_gradients(actual: dict, expected: dict, rtol: float, case: str, what: str) -> None:
    dp.assert_gradients_match(actual, expected, rtol, what, FREE_BIAS_SCALE.get(key(case)))


# ---------------------------------------------------------------- BatchNorm statistics
def numpy_batchnorm(x: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(normalised x, batch mean, unbiased batch variance) over all axes but the last, in float64."""
    x = x.astype(np.float64)
    axes = tuple(range(x.ndim - 1))
    mean, var = x.mean(axes), x.var(axes)
    n = x.size // x.shape[-1]
    return (x - mean) / np.sqrt(var + eps), mean, var * n / (n - 1)


@pytest.mark.parametrize("statistics", ["global", "per-replica"])
def test_jax_batchnorm_statistics_under_sharding(folder, statistics):
    """On a batch sharded over 2 devices: global statistics are the whole batch's; per-replica statistics each slice's,
    and the running statistics follow the first slice's (as torch DDP keeps process 0's)."""
    out = jax_results(folder, f"batchnorm@{statistics}", True)
    x = out["x"]
    slices = [x] if statistics == "global" else [x[:4], x[4:]]
    expected = [numpy_batchnorm(s, 1e-5) for s in slices]
    assert_close(out["y"], np.concatenate([e[0] for e in expected]), 1e-5, f"{statistics} BatchNorm output")
    _, mean, var = expected[0]
    assert_close(out["mean"], 0.1 * mean, 1e-5, "running mean")
    assert_close(out["var"], 0.9 + 0.1 * var, 1e-5, "running variance")


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("framework", ["torch", "jax"])
@pytest.mark.parametrize("argv, message", [
    (["mlp", "--devices", "500"], "--devices 500: this machine has"),  # 500 divides the batch of 1000
    (["mlp", "--devices", "2", "--batch-size", "999"], "--batch-size 999 is not divisible by --devices 2"),
    (["rnn", "--variant", "per-name", "--devices", "2"], "--devices 2: rnn --variant per-name trains on one example per step"),
])
def test_a_data_parallel_run_the_model_or_machine_cannot_do_is_a_one_line_error(framework, argv, message, tmp_path, capsys):
    from importlib import import_module

    main = import_module(f"{framework}_impl.train").main
    with pytest.raises(SystemExit) as info:
        run_cli(main, [*argv, "--out", str(tmp_path)])
    assert info.value.code == 2
    assert one_line_error(capsys.readouterr().err).startswith(f"error: {message}")


@pytest.mark.slow  # two framework starts in subprocesses and two 3 s waits: 11 s the default suite cannot spare
@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_a_process_that_cannot_reach_its_peers_stops_with_a_one_line_error_naming_the_address(framework, tmp_path):
    """Process 1 of 2 with nobody at the address: a bounded wait (--dist-timeout), then one line naming it; never a hang."""
    env = {**os.environ}
    args = ["mlp", "--dist-timeout", "3", "--out", str(tmp_path)]
    if framework == "torch":  # the variables torchrun sets, by hand
        env.update(RANK="1", WORLD_SIZE="2", LOCAL_WORLD_SIZE="2", LOCAL_RANK="1", MASTER_ADDR="127.0.0.1", MASTER_PORT="29531")
        address = "127.0.0.1:29531"
    else:
        args += ["--coordinator", "127.0.0.1:29532", "--num-processes", "2", "--process-id", "1"]
        address = "127.0.0.1:29532"
    proc = subprocess.run([sys.executable, "-m", f"{framework}_impl.train", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=90)
    assert proc.returncode == 2, proc.stderr
    line = one_line_error(proc.stderr)
    assert address in line and "within 3 s" in line, line


# ---------------------------------------------------------------- the training commands end to end
def train(framework: str, out, *args: str, env: dict | None = None) -> dict:
    proc = subprocess.run([sys.executable, "-m", f"{framework}_impl.train", *args, "--out", str(out)], cwd=REPO_ROOT,
                          env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "metrics.json").read_text())


def metrics_close(a: dict, b: dict, rtol: float) -> None:
    for record_a, record_b in zip(a["epochs"], b["epochs"], strict=True):
        for name, value in record_b.items():
            if name not in ("seconds", "elapsed_s"):
                assert_close(record_a[name], value, rtol, f"epoch {record_b['epoch']} {name}")


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_the_training_command_on_two_devices_reports_what_one_device_does(framework, tmp_path):
    """The MLP, 2 epochs, the same seed: every metric of every epoch, 2 devices against 1 (float32 sums in another order)."""
    one = train(framework, tmp_path / "one", "mlp", "--epochs", "2")
    two = train(framework, tmp_path / "two", "mlp", "--epochs", "2", "--devices", "2")
    assert two["config"]["replicas"] == 2 and one["config"]["replicas"] == 1
    metrics_close(two, one, 1e-4)


@pytest.mark.slow
def test_jax_on_two_processes_equals_jax_on_two_devices_of_one(tmp_path):
    """jax.distributed: process 0 and process 1 (one CPU device each) train as one process with two devices; process 0 writes."""
    args = ["mlp", "--epochs", "1", "--coordinator", "127.0.0.1:29533", "--num-processes", "2"]
    second = subprocess.Popen([sys.executable, "-m", "jax_impl.train", *args, "--process-id", "1", "--out", str(tmp_path / "p1")],
                              cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    two_processes = train("jax", tmp_path / "p0", *args, "--process-id", "0")
    assert second.wait(timeout=120) == 0, second.stderr.read()
    assert not (tmp_path / "p1").exists(), "only process 0 writes"
    one_process = train("jax", tmp_path / "one", "mlp", "--epochs", "1", "--devices", "2")
    metrics_close(two_processes, one_process, 1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_a_data_parallel_run_resumed_equals_it_uninterrupted(framework, tmp_path):
    """The CNN (dropout on, BatchNorm) on 2 devices: 1 epoch then --resume to 2 equals 2 epochs, bit for bit (torch: each
    process's dropout generator is in the checkpoint)."""
    from shared.weights import load_weights

    args = ["cnn", "--devices", "2", "--batch-size", "200"]
    whole = train(framework, tmp_path / "whole", *args, "--epochs", "2")
    train(framework, tmp_path / "cut", *args, "--epochs", "1")
    resumed = train(framework, tmp_path / "cut", "cnn", "--resume", str(tmp_path / "cut"), "--epochs", "2")
    metrics_close(resumed, whole, 0.0)
    a, b = (load_weights(tmp_path / name / "weights.safetensors") for name in ("whole", "cut"))
    for name in b:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
