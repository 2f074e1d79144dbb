"""One benchmark configuration, run in its own process by benchmarks/compare.py.

Usage: python benchmarks/worker.py CONFIG_JSON RESULT_JSON
CONFIG holds job ("step" or "peak"), framework, arch, variant, mode, device,
batch_size, steps, warmup, threads, init (weights file), seed.
Threads are pinned before any framework is imported.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def pin_threads(threads: int) -> None:
    """Limit this process to `threads` CPUs; torch, XLA and BLAS size their pools from it."""
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, cpus[:threads])
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)


def make_backend(cfg: dict):
    if cfg["framework"] == "torch":
        import torch

        from torch_impl.training import Backend

        torch.set_num_threads(cfg["threads"])
    else:
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        from jax_impl.training import Backend
    return Backend(cfg["arch"], cfg["device"])


def matmul_peak(cfg: dict, backend) -> dict:
    """The framework's own float32 matmul throughput on a large square product."""
    import numpy as np

    n = 8192 if cfg["device"] == "gpu" else 2048
    a = backend.to_device(np.random.default_rng(0).random((n, n), dtype=np.float32))
    if cfg["framework"] == "torch":
        matmul = lambda _: a @ a  # noqa: E731
    else:
        import jax

        jitted = jax.jit(lambda m: m @ m)
        matmul = lambda _: jitted(a)  # noqa: E731
    _, times, _, _ = timed_calls(matmul, [None] * 13, backend, warmup=3)
    return {"peak_gflops_per_s": 2 * n**3 / float(np.median(times)) / 1e9, "matmul_n": n}


def timed_calls(fn, inputs: list, backend, warmup: int) -> tuple[list[float], list[float], object, object]:
    """Seconds of fn(x) for each x in `inputs`, device synchronised around each call.

    Returns the warm-up calls' times, the other calls' times, the first result and the last.
    """
    times, results = [], []
    for x in inputs:
        start = time.perf_counter()
        results.append(fn(x))
        backend.sync(results[-1])
        times.append(time.perf_counter() - start)
    return times[:warmup], times[warmup:], results[0], results[-1]


def losses_of(value) -> float | list[float]:
    """A step's loss as JSON: a float, or a list for steps with several (the GAN's D and G losses)."""
    import numpy as np

    value = np.asarray(value, np.float64)
    return float(value) if value.ndim == 0 else value.tolist()


def train_steps(cfg: dict, backend) -> dict:
    """Time the timed steps after the warm-up steps; the warm-up steps' extra time is compile time."""
    import numpy as np

    from benchmarks.inputs import benchmark_batches, benchmark_task, model_kwargs

    task = benchmark_task(cfg["arch"], cfg["variant"])
    model = backend.init_model(cfg["seed"], Path(cfg["init"]), **model_kwargs(cfg["arch"], cfg["variant"]))
    optimizer = backend.make_optimizer(model, cfg["lr"])
    step = backend.compile_step(model, optimizer, task.train_step(backend.arch), cfg["mode"])
    warm, timed = benchmark_batches(cfg["arch"], cfg["variant"], cfg["batch_size"], cfg["warmup"], cfg["steps"], cfg["seed"])
    batches = [tuple(map(backend.to_device, b)) for b in warm + timed]  # data on the device before timing
    backend.sync([a for b in batches for a in b])

    warmup, times, first_loss, loss = timed_calls(lambda batch: step(*batch), batches, backend, len(warm))
    step_s = float(np.median(times))
    return {
        "step_ms_median": 1e3 * step_s,
        "step_ms_p10": 1e3 * float(np.percentile(times, 10)),
        "step_ms_p90": 1e3 * float(np.percentile(times, 90)),
        # tracing and compiling (torch.compile may recompile on the second step): warm-up time beyond steady steps
        "compile_s": sum(max(t - step_s, 0.0) for t in warmup),
        "warmup_steps": len(warm),
        "samples_per_s": cfg["batch_size"] / step_s,
        "first_loss": losses_of(backend.to_numpy(first_loss)),
        "final_loss": losses_of(backend.to_numpy(loss)),
        "device_name": backend.device_name(),
        "versions": backend.versions(),
    }


def main(argv: list[str]) -> None:
    cfg = json.loads(Path(argv[0]).read_text())
    pin_threads(cfg["threads"])
    backend = make_backend(cfg)
    result = matmul_peak(cfg, backend) if cfg["job"] == "peak" else train_steps(cfg, backend)
    Path(argv[1]).write_text(json.dumps(result))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from shared.errors import run_cli

    run_cli(lambda _: main(sys.argv[1:]))
