"""bfloat16 mixed precision (docs/precision.md): what each framework computes in it, against its own float32 and the other.

torch runs the project's steps under torch.autocast, JAX with Flax's dtype
and preferred_element_type set on every layer (jax_impl/training.py compute_in);
in both the weights and the optimizer state stay float32. For every architecture whose step takes a batch,
from one weights file and the same real batches (tests/data_parallel.py, on
one device): the losses and every phase's gradients of one step, and 10
training steps, each framework's bfloat16 run held against its own float32 run
and against the other framework's bfloat16 run (tests/tolerances.py says why
each bound). Then one layer against numpy, what stays float32, the autocast
pitfall of multi-phase steps, the training command's flag and (slow) the
quality a bfloat16 training run reaches.
"""
from __future__ import annotations

import functools
import json
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest

from tests import data_parallel as dp
from tests.conftest import REPO_ROOT
from tests.parity import assert_close
from tests.test_cli_errors import one_line_error
from tests.tolerances import (
    BF16_BATCHNORM_GRAD_NORM_RTOL,
    BF16_DISPLACEMENT_RTOL,
    BF16_GRAD_NORM_RTOL,
    BF16_LOSS_RTOL,
    BF16_MIN_GRAD_CHANGE,
    BF16_TRAJECTORY_LOSS_RTOL,
    BF16_TRAJECTORY_LOSS_RTOL_OF,
)

CASES = [*dp.DEFAULT_CASES, *(pytest.param(c, marks=pytest.mark.slow) for c in dp.SLOW_CASES)]
BATCHNORM_CASES = ("cnn", "gan", "vae")
# Each comparison: (run, reference run), a run being (framework, precision).
COMPARISONS = {
    "torch bfloat16 vs torch float32": (("torch", "bfloat16"), ("torch", "float32")),
    "jax bfloat16 vs jax float32": (("jax", "bfloat16"), ("jax", "float32")),
    "torch bfloat16 vs jax bfloat16": (("torch", "bfloat16"), ("jax", "bfloat16")),
}


@functools.cache
def runs(case: str, folder) -> dict[tuple[str, str], dict[str, np.ndarray]]:
    """Each framework's results of the case (tests/data_parallel.py) in each precision, from one weights file."""
    weights, batches = dp.case_weights(case, folder), dp.case_batches(case)
    return {(framework, precision): dp.torch_case(case, weights, batches, None, precision=precision) if framework == "torch"
            else dp.jax_case(case, weights, batches, False, precision=precision)
            for framework in ("torch", "jax") for precision in ("float32", "bfloat16")}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("precision")


def phase_gradients(results: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every phase's gradient as one vector (its parameters in name order), by phase."""
    phases = sorted({k.split(".")[1] for k in results if k.startswith("grad.")})
    return {p: np.concatenate([results[k].ravel().astype(np.float64) for k in sorted(results) if k.startswith(f"grad.{p}.")]) for p in phases}


def relative_l2(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.linalg.norm(actual - expected) / np.linalg.norm(expected))


@pytest.mark.parametrize("case", CASES)
def test_bfloat16_step_agrees_with_float32_and_across_frameworks(case, folder):
    results = runs(case, folder)
    bound = BF16_BATCHNORM_GRAD_NORM_RTOL if dp.parse(case)[0] in BATCHNORM_CASES else BF16_GRAD_NORM_RTOL
    for what, (run, reference) in COMPARISONS.items():
        actual, expected = results[run], results[reference]
        assert_close(actual["grad_losses"], expected["grad_losses"], BF16_LOSS_RTOL, f"{case}, {what}: the step's losses")
        for phase, gradient in phase_gradients(expected).items():
            apart = relative_l2(phase_gradients(actual)[phase], gradient)
            assert apart <= bound, f"{case}, {what}: phase {phase}'s gradient is {apart:.3g} apart (L2, relative) > {bound:g}"
            if run[1] != reference[1]:
                assert apart >= BF16_MIN_GRAD_CHANGE, f"{case}, {what}: phase {phase}'s gradient unchanged ({apart:.1e}): bfloat16 not used"


@pytest.mark.parametrize("case", CASES)
def test_ten_bfloat16_steps_follow_float32_and_the_other_framework(case, folder):
    from safetensors.numpy import load_file

    results, start = runs(case, folder), load_file(str(dp.case_weights(case, folder)))
    rtol = BF16_TRAJECTORY_LOSS_RTOL_OF.get(case, BF16_TRAJECTORY_LOSS_RTOL)
    for what, (run, reference) in COMPARISONS.items():
        actual, expected = results[run], results[reference]
        assert_close(actual["losses"], expected["losses"], rtol, f"{case}, {what}: the losses of {dp.STEPS} steps")
        names = [k[len("param."):] for k in expected if k.startswith("param.") and not k.endswith(dp.BUFFERS)]
        apart = np.sqrt(sum(np.sum((actual[f"param.{k}"].astype(np.float64) - expected[f"param.{k}"]) ** 2) for k in names))
        moved = np.sqrt(sum(np.sum((expected[f"param.{k}"].astype(np.float64) - start[k]) ** 2) for k in names))
        assert apart <= BF16_DISPLACEMENT_RTOL * moved, f"{case}, {what}: after {dp.STEPS} steps {apart:.3g} apart, moved {moved:.3g}"


def bfloat16(a: np.ndarray) -> np.ndarray:
    """a rounded to bfloat16 (to nearest even), back in float64."""
    return np.asarray(a, np.float32).astype(ml_dtypes.bfloat16).astype(np.float64)


def test_a_linear_layer_computes_what_numpy_computes_from_bfloat16_inputs():
    """Both frameworks round the inputs, weight and bias to bfloat16 and sum the products in float32 or wider. torch rounds the
    output to bfloat16: each entry within one bfloat16 spacing (2^-7 relative) of numpy's float64 sum of the rounded values,
    rounded to bfloat16. JAX returns the float32 sum (compute_in): each entry within float32 summation error of numpy's sum."""
    import jax.numpy as jnp
    import torch
    from flax import nnx

    from jax_impl.training import compute_in
    from torch_impl.training import autocast

    rng = np.random.default_rng(0)
    x, w, b = rng.normal(size=(64, 300)).astype(np.float32), rng.normal(size=(40, 300)).astype(np.float32), rng.normal(size=40).astype(np.float32)
    exact = bfloat16(x) @ bfloat16(w).T + bfloat16(b)  # in float64, far closer to the exact sum than float32 can be
    expected = bfloat16(exact)
    torch_layer = torch.nn.Linear(300, 40)
    with torch.no_grad():
        torch_layer.weight.copy_(torch.from_numpy(w))
        torch_layer.bias.copy_(torch.from_numpy(b))
    with autocast(torch.device("cpu"), "bfloat16"):
        torch_out = torch_layer(torch.from_numpy(x))
    jax_layer = compute_in(nnx.Linear(300, 40, rngs=nnx.Rngs(0)), jnp.bfloat16)
    jax_layer.kernel[...], jax_layer.bias[...] = jnp.asarray(w.T), jnp.asarray(b)
    jax_out = jax_layer(jnp.asarray(x))
    assert torch_out.dtype == torch.bfloat16 and jax_out.dtype == jnp.float32 and jax_layer.kernel[...].dtype == jnp.float32
    out = torch_out.detach().float().numpy().astype(np.float64)
    err = np.abs(out - expected)
    assert np.all(err <= 2**-7 * np.abs(expected) + 1e-30), f"torch: {np.max(err / np.abs(expected)):.3g} relative"
    assert np.mean(err == 0) > 0.95, f"torch: only {np.mean(err == 0):.1%} of the entries are numpy's"
    # JAX: 301 terms (300 products, exact in float32 as each has 8 + 8 significant bits, and the bias) summed in float32 in any
    # order: 300 additions, each rounding to 2^-24 relative, are within 300 * 2^-24 of the sum of the terms' magnitudes (Higham's
    # bound for a recursive sum; a blocked or pairwise sum stays well inside it).
    magnitude = np.abs(bfloat16(x)) @ np.abs(bfloat16(w)).T + np.abs(bfloat16(b))
    bound = 300 * 2.0**-24 * magnitude
    err = np.abs(np.asarray(jax_out, np.float64) - exact)
    assert np.all(err <= bound), f"jax: {np.max(err / magnitude):.3g} of the terms' magnitude, bound {np.max(bound / magnitude):.3g}"
    unrounded = x.astype(np.float64) @ w.T.astype(np.float64) + b  # what the bound tells apart: float32 inputs, no bfloat16
    assert np.mean(np.abs(unrounded - exact) > bound) > 0.9


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_weights_and_optimizer_state_stay_float32_and_inference_returns_float32(framework):
    import importlib

    from benchmarks.inputs import benchmark_batches

    backend = importlib.import_module(f"{framework}_impl.training").Backend("cnn", "cpu", None, "bfloat16")
    model = backend.init_model(0)
    optimizer = backend.make_optimizer(model, 1e-3)
    step = backend.compile_step(model, optimizer)
    (batch,), _ = benchmark_batches("cnn", "default", "train", 8, 1, 0)
    loss = backend.to_numpy(step(*backend.put_batch(batch)))
    step.write_back()
    state = backend.checkpoint_state(model, optimizer)
    floats = {k: v.dtype for k, v in state.items() if np.issubdtype(v.dtype, np.floating) and not k.startswith("rng")}
    assert floats and set(floats.values()) == {np.dtype(np.float32)}, floats  # Adam's moments
    weights = backend.to_numpy(model.state_dict()) if framework == "torch" else None
    if framework == "jax":
        from jax_impl.weights import state_dict_from_model

        weights = state_dict_from_model(model)
    assert {v.dtype for k, v in weights.items() if "num_batches" not in k} == {np.dtype(np.float32)}
    outputs = backend.predict(model, backend.arch.eval_outputs, batch[0])
    assert outputs["logits"].dtype == np.float32 and np.isfinite(loss)
    assert backend.settings()["precision"] == "bfloat16"


def test_a_step_of_several_phases_reads_the_weights_its_earlier_phase_updated():
    """torch.autocast's weight cache would give the second phase the first phase's bfloat16 copy of a weight the first phase
    updated (docs/precision.md, "Autocast's weight cache"): the project's steps run with cache_enabled=False."""
    import torch

    from torch_impl.training import in_precision

    layer, x = torch.nn.Linear(4, 4), torch.randn(2, 4)

    def two_phases(layer, x):
        first = layer(x)
        with torch.no_grad():
            layer.weight.add_(1.0)  # what the first phase's optimizer step does to a weight the second reads
        return first, layer(x)

    first, second = in_precision(two_phases, torch.device("cpu"), "bfloat16")(layer, x)
    expected = x @ layer.weight.detach().T + layer.bias.detach()
    assert torch.allclose(second.float(), expected, rtol=2e-2, atol=2e-2) and not torch.allclose(first.float(), expected, rtol=2e-2, atol=2e-2)


def test_the_training_command_records_its_precision_and_a_resume_keeps_it(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "torch_impl.train", "mlp", "--epochs", "1", "--precision", "bfloat16", "--out", str(out)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((out / "metrics.json").read_text())["config"]["precision"] == "bfloat16"
    resumed = subprocess.run([sys.executable, "-m", "torch_impl.train", "mlp", "--resume", str(out), "--epochs", "2", "--precision", "float32"],
                             cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 2
    assert one_line_error(resumed.stderr) == f"error: --resume {out}: the run was trained with --precision bfloat16, not --precision float32"


# The quality targets: a bfloat16 run reaches its float32 run's quality, the test accuracy less 0.5 points at the worst, the negative
# ELBO plus 1 nat at the worst (better is allowed: the MLP's JAX bfloat16 run measured 95.5% against 95.0%, 5 of 1,000 digits).
QUALITY_TARGETS = {"mlp": ("test_accuracy", -0.005), "vae_mlp": ("test_neg_elbo", 1.0)}


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["torch", "jax"])
@pytest.mark.parametrize("arch", sorted(QUALITY_TARGETS))
def test_a_bfloat16_training_run_reaches_its_float32_quality(arch, framework, tmp_path):
    metric, worse_by = QUALITY_TARGETS[arch]  # the signed step from the float32 result to the worst allowed
    final = {}
    for precision in ("float32", "bfloat16"):
        out = tmp_path / precision
        proc = subprocess.run([sys.executable, "-m", f"{framework}_impl.train", arch, "--precision", precision, "--out", str(out)],
                              cwd=REPO_ROOT, capture_output=True, text=True, timeout=1200)
        assert proc.returncode == 0, proc.stderr[-2000:]
        final[precision] = json.loads((out / "metrics.json").read_text())["final"][metric]
    worst = final["float32"] + worse_by
    assert (final["bfloat16"] >= worst) if worse_by < 0 else (final["bfloat16"] <= worst), final


def comparison_cell(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray], start: dict[str, np.ndarray]) -> str:
    """One cell of docs/precision.md's table: first-step loss / worst phase gradient / worst of 10 losses (relative) / displacement."""
    loss = np.max(np.abs(actual["grad_losses"] - expected["grad_losses"]) / np.abs(expected["grad_losses"]))
    gradient = max(relative_l2(phase_gradients(actual)[p], g) for p, g in phase_gradients(expected).items())
    losses = np.max(np.abs(actual["losses"] - expected["losses"]) / np.abs(expected["losses"]))
    names = [k[len("param."):] for k in expected if k.startswith("param.") and not k.endswith(dp.BUFFERS)]
    apart = np.sqrt(sum(np.sum((actual[f"param.{k}"].astype(np.float64) - expected[f"param.{k}"]) ** 2) for k in names))
    moved = np.sqrt(sum(np.sum((expected[f"param.{k}"].astype(np.float64) - start[k]) ** 2) for k in names))
    return f"{loss:.0e} / {gradient:.0e} / {losses:.0e} / {apart / moved:.2f}"


if __name__ == "__main__":  # python -m tests.test_precision: docs/precision.md's table, measured on this machine
    import tempfile
    from pathlib import Path

    from safetensors.numpy import load_file

    with tempfile.TemporaryDirectory() as tmp:
        for case in [*dp.DEFAULT_CASES, *dp.SLOW_CASES]:
            results, start = runs(case, Path(tmp)), load_file(str(dp.case_weights(case, Path(tmp))))
            pairs = [*COMPARISONS.values(), (("torch", "float32"), ("jax", "float32"))]
            print(f"| {case} | " + " | ".join(comparison_cell(results[a], results[b], start) for a, b in pairs) + " |", flush=True)
