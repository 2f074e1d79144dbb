"""The reproducers in benchmarks/repro/ measure what they say they measure."""
import subprocess
import sys

import pytest

from benchmarks.repro import cpu_page_faults, xla_cpu_gaps, ynn_precision
from benchmarks.repro.op_profile import kind, until_completion
from shared.machine import malloc_env
from tests.conftest import REPO_ROOT
from tests.tolerances import BATCHNORM_CONV_GRAD_RTOL


@pytest.mark.slow
def test_both_float32_cnn_gradients_are_near_the_float64_one_under_the_tests_flags():
    """In this process's XLA_FLAGS (the suite runs with XLA's default) both frameworks' float32 gradients are within
    the CNN's conv-block bound of float64; with YNNPACK's reduce fusion off JAX's is 6.7e-2 away (docs/cpu-performance.md)."""
    errors = ynn_precision.worst_errors()
    assert errors["torch"] < BATCHNORM_CONV_GRAD_RTOL, errors
    assert errors["jax"] < BATCHNORM_CONV_GRAD_RTOL, errors
    assert errors["torch"] > 1e-7 and errors["jax"] > 1e-7, errors  # float32 really rounds: not the float64 model twice


@pytest.mark.slow
@pytest.mark.parametrize("case", [*xla_cpu_gaps.CONVS, "dense"])
def test_the_xla_cpu_reproducers_compute_what_their_float64_numpy_twins_do(case):
    """Each program of benchmarks/repro/xla_cpu_gaps.py, in JAX and torch, against its float64 numpy computation: a wrong
    layout or a wrong gradient formula on either side would be off by O(1), float32 rounding by up to ~1e-5 (the kernel
    gradient sums 78,400 products an entry: torch's came out 1.1e-5 away on one CPU)."""
    for framework, results in (("jax", xla_cpu_gaps.run_jax(case, calls=1, hlo=False)), ("torch", xla_cpu_gaps.run_torch(case, calls=1))):
        assert set(results) == ({"forward", "kernel gradient", "input gradient"} if case in xla_cpu_gaps.CONVS else
                                {"first product (1000x784 @ 784x500)", "4-layer forward"})
        for name, result in results.items():
            assert result["err"] < 1e-4 and result["ms"] > 0, (framework, name, result)


@pytest.mark.slow
def test_the_op_profile_names_the_mlps_products_in_both_frameworks(tmp_path):
    """The MLP's inference at batch 1000 is four products: torch's four addmm calls a step, and JAX's compiled step
    holds a product of the 1000x784 batch with the 784x500 first-layer weight, read from XLA's dump."""
    page = tmp_path / "profile.md"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.repro.op_profile", "mlp", "--task", "infer", "--steps", "3", "--out", str(page)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = page.read_text()
    assert "| `aten::addmm` | 4 |" in text, text
    assert "dot of f32[1000,784] and f32[784,500]" in text, text
    assert "## mlp infer, batch 1000" in text and "commit " in text


@pytest.mark.slow
def test_the_page_fault_reproducer_shows_xla_faulting_its_temporaries_in_at_every_call_unless_glibc_keeps_them():
    """Under glibc's defaults JAX's program faults in at least half its temporaries at every call (counted in 2 MiB pages, the
    fewest faults that could mean, where the kernel hands out huge pages); with freed memory kept, a twentieth of that at most.
    The reproducer's GLIBC_TUNABLES are the benchmark's --malloc retain."""
    assert cpu_page_faults.RETAIN == malloc_env("retain", {})["GLIBC_TUNABLES"]
    proc = subprocess.run([sys.executable, cpu_page_faults.__file__, "--calls", "3"], capture_output=True, text=True, check=True)
    jax_lines = [line for line in proc.stdout.splitlines() if " jax " in line]
    faults = [float(line.split(" ms a call, ")[1].split()[0]) for line in jax_lines]
    temp_mib = float(jax_lines[0].split("temporaries ")[1].split()[0])
    assert temp_mib > 32 and faults[0] >= temp_mib / 2 / 2 and faults[1] <= faults[0] / 20, proc.stdout


def test_an_instructions_time_runs_to_its_completion_marker():
    """XLA's own convolutions return after their launch and mark their completion later: each call takes the first marker
    after its start that no earlier call took; a call with no marker after it keeps its own event's length."""
    launch_only = [(0, 300), (1_000_000, 250), (5_000_000, 200)]  # (start, duration) in ns
    markers = [900_000, 400_000, 1_050_000]  # unsorted, as the trace's lines give them; none after the third call
    assert until_completion(launch_only, markers) == [400_000, 50_000, 200]
    assert until_completion([(0, 700)], [500]) == [700]  # a marker inside the event: the event's own length
    assert until_completion([(10, 5), (0, 5)], [20, 6]) == [6, 10]  # calls paired in time order


def test_an_operation_is_data_movement_only_when_it_moves_data_without_arithmetic():
    """XLA's instructions by what they compiled to (a fusion by every instruction it holds), torch's operators by name."""
    def jax_kind(what: str) -> str:
        return kind("jax", {"op": "fusion.1", "what": what})

    assert jax_kind("fusion f32[6400,64] (kLoop: slice)") == "data movement"
    assert jax_kind("fusion f32[100,8,2,8,2,32] (kLoop: concatenate, pad)") == "data movement"
    assert jax_kind("copy f32[32,14,14,100]; copy of f32[100,14,14,32]") == "data movement"
    assert jax_kind("fusion f32[100,3136] (kLoop: add, pad, slice, transpose)") == "the rest"  # an addition rides along
    assert jax_kind("fusion f32[32] (kCustom: multiply, reduce)") == "the rest"
    assert jax_kind("dot f32[64,32]; dot of f32[4900,64] and f32[4900,32]") == "products"
    assert jax_kind("fusion f32[64,7,7,128] (kCustom: convolution); convolution of f32[64,14,14,64] and f32[4,4,64,128]") == "convolutions"
    assert [kind("torch", {"op": op, "what": ""}) for op in ("aten::copy_", "aten::cat", "aten::native_batch_norm", "aten::addmm", "aten::to")] == [
        "data movement", "data movement", "the rest", "products", "the rest"]
