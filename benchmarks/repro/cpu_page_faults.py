"""Minimal reproducer: on Linux with glibc, a jitted JAX program whose temporaries exceed 32 MiB maps them anew at every call
and faults every page of them in again.

    python cpu_page_faults.py                 # two 3x3 convolutions' weight gradient at batch 128: 98 MiB of temporaries
    python cpu_page_faults.py --batch 32      # the same at batch 32

Standalone: it needs only `pip install jax torch numpy`, so it can go into an upstream report as it is.
XLA:CPU gives a compiled program's temporaries one block, allocated at each call and freed at its end.
glibc's malloc serves a block above its mmap threshold with a mapping of its own and unmaps it when
it is freed; the threshold rises to the size of a freed block but never above 32 MiB on 64-bit Linux
(mallopt(3)), so above that every call maps a fresh block and the kernel faults in and zeroes each
4 KiB page on first touch. torch's eager steps allocate tensor by tensor and pay the same for those
glibc maps. Each framework runs in a fresh process twice: with glibc's defaults, and with
GLIBC_TUNABLES keeping freed memory (one arena, no mmap, no trim). Printed: the median ms of
--calls calls, the minor page faults per call, and JAX's temporaries from the compiled program's
memory analysis.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

RETAIN = "glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=2147483647"
SETTINGS = {"glibc's defaults": None, "freed memory kept (GLIBC_TUNABLES)": RETAIN}
CHANNELS, SIZE = (1, 32, 64), 28  # NHWC in JAX: 1 -> 32 -> 64 channels, 3x3, padding 1, ReLU between


def data(batch: int):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, SIZE, SIZE, CHANNELS[0])).astype(np.float32)
    ws = [(rng.normal(size=(3, 3, a, b)) / np.sqrt(9 * a)).astype(np.float32) for a, b in zip(CHANNELS, CHANNELS[1:])]
    return x, ws


def timed(fn, calls: int) -> dict:
    """Median ms of fn() over `calls` calls after three untimed ones, and the minor page faults per call."""
    for _ in range(3):
        fn()
    times, before = [], resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {"ms": 1e3 * float(np.median(times)), "faults": (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / calls}


def run_jax(batch: int, calls: int) -> dict:
    import jax
    import jax.numpy as jnp

    def loss(ws, x):
        for i, w in enumerate(ws):
            x = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
            x = jax.nn.relu(x) if i < len(ws) - 1 else x
        return jnp.mean(x**2)

    x, ws = data(batch)
    x, ws = jnp.asarray(x), [jnp.asarray(w) for w in ws]
    grad = jax.jit(jax.grad(loss))
    temp = grad.lower(ws, x).compile().memory_analysis().temp_size_in_bytes
    return {**timed(lambda: jax.block_until_ready(grad(ws, x)), calls), "temp_mib": temp / 2**20}


def run_torch(batch: int, calls: int) -> dict:
    import torch

    x, ws = data(batch)
    x = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
    ws = [torch.from_numpy(w).permute(3, 2, 0, 1).contiguous().requires_grad_() for w in ws]

    def step():
        h = x
        for i, w in enumerate(ws):
            h = torch.nn.functional.conv2d(h, w, padding=1)
            h = torch.relu(h) if i < len(ws) - 1 else h
        return torch.autograd.grad((h**2).mean(), ws)

    return timed(step, calls)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--calls", type=int, default=30, help="timed calls per framework and setting (default 30)")
    p.add_argument("--child", choices=["jax", "torch"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps((run_jax if args.child == "jax" else run_torch)(args.batch, args.calls)))
        return
    import jax
    import torch

    print(f"jax {jax.__version__}, torch {torch.__version__}, {os.cpu_count()} CPUs; two 3x3 convolutions "
          f"{' -> '.join(map(str, CHANNELS))} channels at {SIZE}x{SIZE}, batch {args.batch}: the gradient of the weights")
    for name, tunables in SETTINGS.items():
        env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"} | ({"GLIBC_TUNABLES": tunables} if tunables else {})
        for framework in ("jax", "torch"):
            out = subprocess.run([sys.executable, __file__, "--child", framework, "--batch", str(args.batch), "--calls", str(args.calls)],
                                 env=env, capture_output=True, text=True, check=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            temp = f", temporaries {r['temp_mib']:.1f} MiB" if "temp_mib" in r else ""
            print(f"{name:38s} {framework:5s} {r['ms']:8.2f} ms a call, {r['faults']:8.0f} page faults a call{temp}")


if __name__ == "__main__":
    main()
