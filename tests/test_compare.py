"""benchmarks/compare.py end to end on a few steps: the rows, their agreement, the files.

Two runs serve every test (each configuration is a process that imports its
framework and compiles, so runs are what costs): the MLP VAE and both forms
of the RNN in torch-eager and jax-jit, and the MLP VAE in torch's two modes
for torch.compile's row.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from benchmarks.compare import COLUMNS
from tests.conftest import REPO_ROOT

# vae_mlp, batch 100: 2 FLOPs per multiply-add of the forward matmuls
# (784x500 + 2 x 500x5 + 5x500 + 500x784) for the output and the weight
# gradients, plus the input gradients of every layer but the first.
FORWARD_MACS = 784 * 500 + 2 * 500 * 5 + 5 * 500 + 500 * 784
VAE_MLP_STEP_FLOPS = 100 * 2 * (2 * FORWARD_MACS + (FORWARD_MACS - 784 * 500))
TRAINING_BATCH = {("vae_mlp", "default"): 100, ("rnn", "batched"): 64, ("rnn", "per-name"): 1}


def run_compare(out, *args: str) -> tuple[list[dict], str]:
    proc = subprocess.run(
        [sys.executable, "benchmarks/compare.py", *args, "--out", str(out)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "results.json").read_text()), proc.stdout


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(rows, stdout, out folder) of vae_mlp and rnn in torch-eager and jax-jit, 12 timed steps."""
    out = tmp_path_factory.mktemp("bench")
    rows, stdout = run_compare(out, "--arch", "vae_mlp", "rnn", "--mode", "torch-eager", "jax-jit", "--steps", "12", "--warmup", "2")
    return rows, stdout, out


@pytest.fixture(scope="module")
def compiled_rows(tmp_path_factory):
    """vae_mlp in torch-eager and torch-compile, 3 timed steps."""
    return run_compare(tmp_path_factory.mktemp("bench-compile"), "--arch", "vae_mlp", "--framework", "torch", "--steps", "3", "--warmup", "2")[0]


def of(rows: list[dict], arch: str, variant: str = "default") -> list[dict]:
    return [r for r in rows if (r["arch"], r["variant"]) == (arch, variant)]


def test_every_mode_is_timed_with_the_required_columns(run, compiled_rows):
    rows = run[0]
    assert [(r["arch"], r["variant"], r["mode"]) for r in rows] == [
        (arch, variant, mode)
        for arch, variant in [("vae_mlp", "default"), ("rnn", "batched"), ("rnn", "per-name")]
        for mode in ("torch-eager", "jax-jit")
    ]
    assert [r["mode"] for r in compiled_rows] == ["torch-eager", "torch-compile"]
    for row in rows + compiled_rows:
        assert set(COLUMNS) <= set(row), set(COLUMNS) - set(row)
        assert row["device"] == "cpu" and row["batch_size"] == TRAINING_BATCH[row["arch"], row["variant"]]
        assert 0 < row["step_ms_p10"] <= row["step_ms_median"] <= row["step_ms_p90"]
        assert row["samples_per_s"] == pytest.approx(row["batch_size"] / (row["step_ms_median"] / 1e3))
        assert row["efficiency"] == pytest.approx(
            row["flops_per_step"] / (row["peak_gflops_per_s"] * 1e9 * row["step_ms_median"] / 1e3)
        )
        assert row["device_name"] and row["versions"]
    assert compiled_rows[1]["compile_s"] > compiled_rows[0]["compile_s"], "torch.compile's compile time should show"


def test_flops_are_counted_once_for_every_row(run, compiled_rows):
    assert {r["flops_per_step"] for r in of(run[0], "vae_mlp") + compiled_rows} == {VAE_MLP_STEP_FLOPS} == {396_500_000}


def test_all_modes_compute_the_same_steps(run, compiled_rows):
    rows = run[0]
    assert all(r["loss_agrees"] for r in rows + compiled_rows), [(r["arch"], r["mode"], r["first_loss_rel_diff"]) for r in rows]
    for group in (of(rows, "vae_mlp"), compiled_rows):  # the smooth VAE stays together for all the steps
        losses = [r["final_loss"] for r in group]
        assert max(losses) - min(losses) <= 1e-4 * abs(losses[0])


def test_table_markdown_and_chart_are_written(run):
    _, stdout, out = run
    assert "| vae_mlp | jax-jit | 100 |" in stdout and "jax-jit / best torch step time" in stdout
    md = (out / "results.md").read_text()
    assert "versions:" in md and "torch 2.13.0" in md and "jax 0" in md
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_flags_are_one_line_errors(tmp_path):
    proc = subprocess.run(
        [sys.executable, "benchmarks/compare.py", "--arch", "resnet", "--out", str(tmp_path)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "resnet" in proc.stderr
    proc = subprocess.run(
        [sys.executable, "benchmarks/compare.py", "--framework", "jax", "--mode", "torch-eager", "--out", str(tmp_path)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2 and "belongs to no framework" in proc.stderr and "Traceback" not in proc.stderr


def test_gpu_without_a_gpu_is_a_one_line_error(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    proc = subprocess.run(
        [sys.executable, "benchmarks/compare.py", "--device", "gpu", "--out", str(tmp_path)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "error: torch matmul peak on gpu: --device gpu: torch sees no CUDA device"


def test_classifier_rows_cover_both_rnn_forms(run):
    rows, stdout, _ = run
    per_name = of(rows, "rnn", "per-name")
    assert {r["batch_size"] for r in per_name} == {1}
    assert "rnn, torch: batched / per-name names per second" in stdout and "| rnn/per-name | jax-jit | 1 |" in stdout


def test_mlp_flops_are_the_analytic_count():
    """What the benchmark's FLOP counter (torch.utils.flop_counter over one training step) says of the MLP at batch 1000."""
    from benchmarks.inputs import count_step_flops

    macs = 784 * 500 + 500 * 200 + 200 * 100 + 100 * 10  # forward multiply-adds per image
    expected = 1000 * 2 * (2 * macs + (macs - 784 * 500))  # forward, weight gradients, input gradients but the first layer's
    assert count_step_flops("mlp", "default", 1000, 1, 0) == expected


def test_per_name_warm_up_compiles_every_name_length(run):
    """No timed step may compile: the warm-up holds one name of every length among the timed names."""
    from benchmarks.inputs import benchmark_batches

    warm, timed = benchmark_batches("rnn", "per-name", 1, 2, 12, 0)
    lengths = {len(chars) for chars, _ in timed}
    assert len(lengths) > 1 and lengths <= {len(chars) for chars, _ in warm}
    assert {r["warmup_steps"] for r in of(run[0], "rnn", "per-name")} == {len(warm)}
