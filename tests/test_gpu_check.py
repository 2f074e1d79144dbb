"""The GPU check without a GPU: pytest's --device gpu refusing, benchmarks/gpu_check.py's dry run, its budget and its summary.

The check itself needs a GPU (docs/gpu.md); what can be shown here is that
it would start: its dry run passes and names the commands it would run, a
missing dependency stops it with one line, a step past its deadline is
interrupted and keeps its output, and the summary says what was not measured.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from benchmarks import compare, gpu_check
from tests.conftest import REPO_ROOT

ONE_PARITY_TEST = "tests/test_parity_mlp.py::test_parameter_shapes_and_counts_are_equal"


def torch_sees_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def jax_sees_a_gpu() -> bool:
    import jax

    try:
        return bool(jax.devices("gpu"))
    except RuntimeError:
        return False


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, env=env)


def one_usage_error(proc: subprocess.CompletedProcess) -> str:
    """pytest's usage error: exit status 4, nothing but one line on stderr, no traceback."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == pytest.ExitCode.USAGE_ERROR, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert len(lines) == 1 and "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    return lines[0]


# ---------------------------------------------------------------- pytest --device gpu
def test_pytest_device_gpu_without_a_gpu_is_a_one_line_usage_error():
    if torch_sees_cuda():
        pytest.skip("torch sees a CUDA device here")
    proc = run("-m", "pytest", ONE_PARITY_TEST, "--device", "gpu", "-p", "no:cacheprovider", "-n", "0")
    assert one_usage_error(proc).startswith("ERROR: --device gpu: torch sees no CUDA device"), proc.stderr


@pytest.mark.slow  # kept out of the default suite's 6 minutes (docs/testing.md)
def test_pytest_device_gpu_names_jax_when_only_jax_sees_no_gpu(tmp_path):
    """torch made to see CUDA by a plugin loaded first: the refusal is then JAX's."""
    if jax_sees_a_gpu():  # asked here, not at collection: JAX's backends start on first use
        pytest.skip("JAX sees a GPU here")
    (tmp_path / "torch_sees_cuda.py").write_text(
        "import pytest\n\n\n@pytest.hookimpl(tryfirst=True)\ndef pytest_configure(config):\n"
        "    import torch\n\n    torch.cuda.is_available = lambda: True\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    proc = run("-m", "pytest", ONE_PARITY_TEST, "--device", "gpu", "-p", "torch_sees_cuda", "-p", "no:cacheprovider", "-n", "0", env=env)
    assert one_usage_error(proc).startswith("ERROR: --device gpu: JAX sees no GPU"), proc.stderr


# ---------------------------------------------------------------- the dry run
def test_dry_run_passes_here_and_prints_the_gpu_commands(tmp_path):
    out = tmp_path / "check"
    proc = run("-m", "benchmarks.gpu_check", "--dry-run", "--out", str(out))  # from the repository root, as on an uninstalled GPU machine
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    pytest_line = next(line for line in lines if " -m pytest " in line)
    for path in sorted(REPO_ROOT.glob("tests/test_parity_*.py")):
        assert str(path.relative_to(REPO_ROOT)) in pytest_line
    assert "--device gpu" in pytest_line and "XLA_PYTHON_CLIENT_PREALLOCATE=false" in pytest_line and "--junitxml" in pytest_line
    table, overhead_free = (line for line in lines if " -m benchmarks.compare " in line)  # the table first, then the other modes
    assert {"float32", "bfloat16"} <= set(compare.PRECISIONS)
    for line in (table, overhead_free):
        assert "--device gpu" in line and f"--precision {' '.join(compare.PRECISIONS)} " in line
    assert "--mode torch-eager jax-jit " in table and "--out " in table and "/benchmark " in table + " "
    assert "--mode torch-compile torch-compile-cudagraphs jax-jit jax-scan " in overhead_free
    single_device = {m for m in compare.ALL_MODES if m not in compare.DATA_PARALLEL_MODES.values()}
    assert set().union(*gpu_check.benchmark_runs(compare).values()) == single_device  # every mode, in one run or the other
    assert any("tests" in line and "collected" in line for line in lines)  # pytest --collect-only ran
    assert any("compare.py plans" in line for line in lines)
    if not torch_sees_cuda():
        assert any("torch: no GPU here (dry run)" in line for line in lines)
    assert "summary.md" in lines[-2] and lines[-1].endswith("every check passed")
    assert not out.exists()  # a dry run writes nothing


def test_a_missing_dependency_is_named_with_how_to_bring_it(tmp_path, monkeypatch, capsys):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\nname = "x"\ndependencies = ["numpy>=2.0", "no-such-zoo-package==1.2.3", "jax[cuda13]>=0.10.2"]\n'
                         '[project.optional-dependencies]\ndev = ["pytest>=8", "pytest-xdist>=3.6", "ruff>=0.15"]\n')
    required = gpu_check.required_packages(pyproject)
    assert [(r.name, r.version, r.module) for r in required] == [
        ("numpy", "2.0", "numpy"), ("no-such-zoo-package", "1.2.3", "no_such_zoo_package"), ("jax", "0.10.2", "jax"),
        ("pytest", "8", "pytest"), ("pytest-xdist", "3.6", "xdist"), ("jaxlib", "0.10.2", "jaxlib"),
    ]  # ruff: not needed by the check
    assert [r.name for r in gpu_check.missing_packages(required)] == ["no-such-zoo-package"]
    monkeypatch.setattr(gpu_check, "PYPROJECT", pyproject)
    with pytest.raises(SystemExit) as stopped:
        gpu_check.main(["--out", str(tmp_path / "out")])
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: missing dependency no-such-zoo-package (import no_such_zoo_package): where there is a network, "
                   "`pip download no-such-zoo-package==1.2.3 --no-deps -d wheels/`, then here `pip install --no-deps wheels/*.whl`"]
    assert not (tmp_path / "out").exists()  # stopped before anything ran


def test_the_projects_own_dependencies_are_the_ones_checked():
    """The GPU image we know lacks mlxtend and faker: both are checked, and the test tools the parity step runs."""
    modules = {r.module for r in gpu_check.required_packages()}
    assert {"torch", "jax", "jaxlib", "flax", "optax", "numpy", "safetensors", "tqdm", "matplotlib", "mlxtend", "faker",
            "pytest", "xdist", "hypothesis"} <= modules
    assert "ruff" not in modules


# ---------------------------------------------------------------- the budget
def test_each_step_gets_its_share_of_what_is_left():
    reserve = gpu_check.RESERVE_S
    assert gpu_check.step_timeout(480, gpu_check.PARITY_SHARE) == pytest.approx((480 - reserve) * gpu_check.PARITY_SHARE)
    assert gpu_check.step_timeout(300, 1.0) == pytest.approx(300 - reserve)  # the last step: all but the reserve
    assert gpu_check.step_timeout(reserve - 1, 1.0) == 0.0  # the budget spent: the step is not run
    assert gpu_check.Budget(100.0, start=time.monotonic() - 30).left() == pytest.approx(70, abs=1)
    not_run = gpu_check.run_step(["false"], REPO_ROOT / "never-written.log", 0.0)
    assert not_run.returncode is None and not_run.outcome() == "not run: the budget was spent"
    assert not (REPO_ROOT / "never-written.log").exists()


SLEEPER = """
import signal, sys, time
{handler}
print("started", flush=True)
try:
    time.sleep(60)
except KeyboardInterrupt:
    print("saved what it measured", flush=True)
    sys.exit(130)
"""


def test_a_step_past_its_deadline_gets_sigint_and_keeps_its_output(tmp_path):
    log = tmp_path / "step.log"
    result = gpu_check.run_step([sys.executable, "-c", SLEEPER.format(handler="")], log, timeout_s=2.0)
    assert result.stopped and result.returncode == 130, log.read_text()
    assert log.read_text().splitlines() == ["started", "saved what it measured"]
    assert 2.0 <= result.wall_s < 2.0 + gpu_check.INTERRUPT_GRACE_S
    assert result.outcome() == "stopped at its deadline (2 s) by SIGINT, exit status 130"


def test_a_step_that_ignores_sigint_is_killed_after_the_grace(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check, "INTERRUPT_GRACE_S", 0.5)
    result = gpu_check.run_step([sys.executable, "-c", SLEEPER.format(handler="signal.signal(signal.SIGINT, signal.SIG_IGN)")],
                                tmp_path / "step.log", timeout_s=2.0)
    assert result.stopped and result.returncode == -signal.SIGKILL and result.wall_s < 10


# ---------------------------------------------------------------- the summary
KEY = ("arch", "mode", "batch_size")


def row_key(row: dict) -> tuple:
    return tuple(row[k] for k in KEY)


def test_the_configurations_left_unmeasured_and_the_resume_command():
    configs = [{"arch": a, "mode": m, "batch_size": 8} for a in ("mlp", "cnn") for m in ("torch-eager", "jax-jit")]
    rows = [{**configs[0], "step_ms_median": 1.0}, {**configs[2], "step_ms_median": 2.0}]
    missing = gpu_check.unmeasured(configs, rows, row_key)
    assert missing == [configs[1], configs[3]]
    resume = "python -m benchmarks.compare --device gpu --resume"
    lines = gpu_check.benchmark_lines(["| the table |"], len(configs), missing, KEY, False, resume)
    text = "\n".join(lines)
    assert lines[0] == "2 of 4 configurations measured." and "| the table |" in lines
    assert f"Not measured: 2 configuration(s); to measure them (from the source tree): `{resume}`" in text
    assert "| mlp | jax-jit | 8 |" in text and "| cnn | jax-jit | 8 |" in text and "| mlp | torch-eager | 8 |" not in text
    assert "results.md" not in text  # an interrupted run wrote no report of its own
    finished = "\n".join(gpu_check.benchmark_lines(["| the table |"], 2, [], KEY, True, resume))
    assert "benchmark/results.md" in finished and "Not measured" not in finished and "--resume" not in finished
    elsewhere = "\n".join(gpu_check.benchmark_lines([], 2, [], KEY, True, resume, "benchmark-overhead-free"))
    assert "[benchmark-overhead-free/results.md](benchmark-overhead-free/results.md)" in elsewhere


JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="1" failures="1" skipped="1" tests="5">
<testcase classname="tests.test_parity_mlp" name="test_a"/><testcase classname="tests.test_parity_mlp" name="test_b"/>
<testcase classname="tests.test_parity_cnn" name="test_c[torch-&gt;jax]"><failure message="x">x</failure></testcase>
<testcase classname="tests.test_parity_cnn" name="test_d"><error message="y">y</error></testcase>
<testcase classname="tests.test_parity_gan" name="test_e"><skipped message="z"/></testcase></testsuite></testsuites>"""


def test_parity_counts_come_from_the_junit_report(tmp_path):
    (tmp_path / "parity.xml").write_text(JUNIT)
    counts = gpu_check.parity_counts(tmp_path / "parity.xml")
    assert counts == {"passed": 2, "failed": 1, "errors": 1, "skipped": 1,
                      "failed_tests": ["tests.test_parity_cnn::test_c[torch->jax]", "tests.test_parity_cnn::test_d"]}
    assert gpu_check.parity_line(counts) == "2 passed, 1 failed, 1 errors, 1 skipped"
    assert gpu_check.parity_counts(tmp_path / "missing.xml") is None
    (tmp_path / "cut.xml").write_text(JUNIT[:100])
    assert gpu_check.parity_line(gpu_check.parity_counts(tmp_path / "cut.xml")).startswith("no report")


def test_the_summary_holds_the_gpu_versions_steps_and_tables():
    env = {"date": "2026-12-06 10:00 UTC", "python": "3.12.3", "versions": {"torch": "2.9.0", "jax": "0.7.1"},
           "torch_cuda": {"device": "NVIDIA H100 80GB HBM3", "cuda_version": "12.8"}, "jax_gpu": {"device_kind": "NVIDIA H100 80GB HBM3"}}
    parity = gpu_check.StepResult(["python", "-m", "pytest"], 170.0, wall_s=150.4, returncode=1)
    bench = gpu_check.StepResult(["python", "-m", "benchmarks.compare"], 250.0, wall_s=262.0, returncode=130, stopped=True)
    steps = {"environment": ("probes", 12.0), "parity": ("python -m pytest", parity), "benchmark": ("python -m benchmarks.compare", bench)}
    counts = {"passed": 160, "failed": 1, "errors": 0, "skipped": 3, "failed_tests": ["tests.test_parity_gan::test_x"]}
    text = gpu_check.summary_markdown(env, "python -m benchmarks.gpu_check", 440.0, 480.0, steps, counts,
                                      ["## Benchmark", "", "3 of 9 configurations measured."])
    for expected in ("torch: NVIDIA H100 80GB HBM3 (CUDA 12.8); JAX: NVIDIA H100 80GB HBM3", "Python 3.12.3, torch 2.9.0, jax 0.7.1",
                     "440 s of its 480 s budget", "| environment | probes | 12 s | finished |",
                     "| parity | `python -m pytest` | 150 s | exit status 1 |",
                     "| benchmark | `python -m benchmarks.compare` | 262 s | stopped at its deadline (250 s) by SIGINT, exit status 130 |",
                     "160 passed, 1 failed, 0 errors, 3 skipped", "- `tests.test_parity_gan::test_x`", "## Benchmark\n\n3 of 9 configurations measured."):
        assert expected in text, expected
