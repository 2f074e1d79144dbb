"""Minimal reproducers of the places where XLA:CPU is slower than torch in this repository's models.

    python xla_cpu_gaps.py conv      # a 3x3 convolution's forward, kernel gradient and input gradient
    python xla_cpu_gaps.py strided   # the same for a 4x4 convolution of stride 2 (DCGAN's discriminator)
    python xla_cpu_gaps.py dense     # a 4-layer MLP's forward at batch 1000, and its first product alone
    python xla_cpu_gaps.py conv --hlo   # also the optimised HLO of each JAX program

Standalone: it needs only `pip install jax torch numpy` (no other file of the repository), so it
can go into an upstream report as it is. Each JAX case runs once with XLA's default flags and
once per setting of --xla_cpu_experimental_ynn_fusion_type in SETTINGS, each in a fresh process
(XLA reads its flags once); torch runs with its defaults. Printed: the median of --calls jitted
calls (torch: eager calls, inputs already made) per program, in ms, and each result's largest
difference from a float64 numpy computation relative to its largest entry.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

SETTINGS = {"XLA's default": "", "YNNPACK convolutions off": "-individual_convolution", "YNNPACK dots off": "-individual_dot"}
CONVS = {  # NHWC in JAX
    "conv": {"batch": 100, "size": 28, "c_in": 16, "c_out": 32, "kernel": 3, "stride": 1, "padding": 1},  # the MNIST CNN's second
    "strided": {"batch": 64, "size": 14, "c_in": 64, "c_out": 128, "kernel": 4, "stride": 2, "padding": 1},  # DCGAN's discriminator's second
}
MLP = [784, 500, 200, 100, 10]  # the MNIST MLP: ReLU between layers, batch 1000


def median_ms(fn, *args, calls: int) -> float:
    """Median wall time of fn(*args) over `calls` calls after two untimed ones; fn must return a finished result."""
    for _ in range(2):
        fn(*args)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def rel_err(got, want: np.ndarray) -> float:
    return float(np.abs(np.asarray(got, np.float64) - want).max() / np.abs(want).max())


# ---------------------------------------------------------------- the cases' data and float64 truth
def out_size(c: dict) -> int:
    return (c["size"] + 2 * c["padding"] - c["kernel"]) // c["stride"] + 1


def conv_data(c: dict):
    rng = np.random.default_rng(0)
    b, s, k, ci, co = c["batch"], c["size"], c["kernel"], c["c_in"], c["c_out"]
    x = rng.normal(size=(b, s, s, ci)).astype(np.float32)  # NHWC
    w = (rng.normal(size=(k, k, ci, co)) / np.sqrt(k * k * ci)).astype(np.float32)  # HWIO
    g = rng.normal(size=(b, out_size(c), out_size(c), co)).astype(np.float32)  # the output's cotangent
    return x, w, g


def conv_truth(c: dict, x, w, g) -> dict[str, np.ndarray]:
    """Forward, kernel gradient and input gradient of the convolution, in float64 numpy, through its patches."""
    x, w, g = (a.astype(np.float64) for a in (x, w, g))
    k, st, p, o = c["kernel"], c["stride"], c["padding"], out_size(c)
    xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    window = lambda i, j: (slice(None), slice(i, i + st * (o - 1) + 1, st), slice(j, j + st * (o - 1) + 1, st))  # noqa: E731
    taps = [(i, j) for i in range(k) for j in range(k)]
    patches = np.stack([xp[window(i, j)] for i, j in taps], axis=3)  # b o o k*k ci
    forward = np.einsum("bhwtc,tco->bhwo", patches, w.reshape(k * k, *w.shape[2:]))
    kernel = np.einsum("bhwtc,bhwo->tco", patches, g).reshape(w.shape)
    patch_grads = np.einsum("bhwo,tco->bhwtc", g, w.reshape(k * k, *w.shape[2:]))  # each patch's share, added back where it came from
    inputs = np.zeros_like(xp)
    for t, (i, j) in enumerate(taps):
        inputs[window(i, j)] += patch_grads[:, :, :, t]
    return {"forward": forward, "kernel gradient": kernel, "input gradient": inputs[:, p:p + x.shape[1], p:p + x.shape[2]]}


def dense_data():
    rng = np.random.default_rng(0)
    x = rng.random((1000, MLP[0]), dtype=np.float32)
    weights = [(rng.normal(size=(i, o)) / np.sqrt(i)).astype(np.float32) for i, o in zip(MLP, MLP[1:])]
    return x, weights


def dense_truth(x, weights) -> dict[str, np.ndarray]:
    a = x.astype(np.float64)
    first = a @ weights[0].astype(np.float64)
    for i, w in enumerate(weights):
        a = a @ w.astype(np.float64)
        a = np.maximum(a, 0) if i < len(weights) - 1 else a
    return {"first product (1000x784 @ 784x500)": first, "4-layer forward": a}


# ---------------------------------------------------------------- JAX
def jax_programs(case: str) -> dict:
    """{name: (jitted function, its arguments)}."""
    import jax
    import jax.numpy as jnp

    if case in CONVS:
        c = CONVS[case]
        x, w, g = map(jnp.asarray, conv_data(c))

        def conv(x, w):
            st, p = c["stride"], c["padding"]
            return jax.lax.conv_general_dilated(x, w, (st, st), ((p, p), (p, p)), dimension_numbers=("NHWC", "HWIO", "NHWC"))

        return {"forward": (jax.jit(conv), (x, w)),
                "kernel gradient": (jax.jit(lambda x, w, g: jax.vjp(lambda w: conv(x, w), w)[1](g)[0]), (x, w, g)),
                "input gradient": (jax.jit(lambda x, w, g: jax.vjp(lambda x: conv(x, w), x)[1](g)[0]), (x, w, g))}
    x, weights = dense_data()
    x, weights = jnp.asarray(x), [jnp.asarray(w) for w in weights]

    def forward(x, weights):
        for i, w in enumerate(weights):
            x = x @ w
            x = jax.nn.relu(x) if i < len(weights) - 1 else x
        return x

    return {"first product (1000x784 @ 784x500)": (jax.jit(lambda x, w: x @ w), (x, weights[0])),
            "4-layer forward": (jax.jit(forward), (x, weights))}


def run_jax(case: str, calls: int, hlo: bool) -> dict:
    import jax

    truth = conv_truth(CONVS[case], *conv_data(CONVS[case])) if case in CONVS else dense_truth(*dense_data())
    out = {}
    for name, (fn, args) in jax_programs(case).items():
        result = fn(*args)
        out[name] = {"ms": median_ms(lambda *a, fn=fn: jax.block_until_ready(fn(*a)), *args, calls=calls),
                     "err": rel_err(result, truth[name]),
                     "hlo": fn.lower(*args).compile().as_text() if hlo else ""}
    return out


# ---------------------------------------------------------------- torch
def run_torch(case: str, calls: int) -> dict:
    import torch

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    if case in CONVS:
        c = CONVS[case]
        st, p = c["stride"], c["padding"]
        x, w, g = conv_data(c)
        xt, gt = torch.tensor(x).permute(0, 3, 1, 2).contiguous(), torch.tensor(g).permute(0, 3, 1, 2).contiguous()  # NCHW
        wt = torch.tensor(w).permute(3, 2, 0, 1).contiguous()  # OIHW

        def backward(mask):
            return torch.ops.aten.convolution_backward(gt, xt, wt, None, [st, st], [p, p], [1, 1], False, [0, 0], 1, mask)

        programs = {"forward": (lambda: torch.nn.functional.conv2d(xt, wt, stride=st, padding=p), lambda r: r.permute(0, 2, 3, 1)),
                    "kernel gradient": (lambda: backward([False, True, False])[1], lambda r: r.permute(2, 3, 1, 0)),
                    "input gradient": (lambda: backward([True, False, False])[0], lambda r: r.permute(0, 2, 3, 1))}
        truth = conv_truth(c, x, w, g)
    else:
        x, weights = dense_data()
        xt, wts = torch.tensor(x), [torch.tensor(w) for w in weights]

        def forward():
            a = xt
            for i, w in enumerate(wts):
                a = a @ w
                a = torch.relu(a) if i < len(wts) - 1 else a
            return a

        programs = {"first product (1000x784 @ 784x500)": (lambda: xt @ wts[0], lambda r: r), "4-layer forward": (forward, lambda r: r)}
        truth = dense_truth(x, weights)
    with torch.no_grad():
        return {name: {"ms": median_ms(fn, calls=calls), "err": rel_err(to_jax_layout(fn()).numpy(), truth[name])}
                for name, (fn, to_jax_layout) in programs.items()}


# ---------------------------------------------------------------- the report
def child(framework: str, case: str, calls: int, hlo: bool) -> dict:
    """One framework's (and, for JAX, one flag setting's) timings, in a process of its own."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    if framework != "torch":
        env["XLA_FLAGS"] = f"--xla_cpu_experimental_ynn_fusion_type={SETTINGS[framework]}" if SETTINGS[framework] else ""
    cmd = [sys.executable, __file__, case, "--calls", str(calls), "--child", "torch" if framework == "torch" else "jax"] + ["--hlo"] * hlo
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"error: the {framework} process failed: {(proc.stderr.strip().splitlines() or ['no output'])[-1]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def versions() -> str:
    import importlib.metadata
    import platform

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), platform.processor())
    packages = ", ".join(f"{p} {importlib.metadata.version(p)}" for p in ("jax", "jaxlib", "torch", "numpy"))
    return f"{cpu}, {len(os.sched_getaffinity(0))} CPUs; {packages}; python {platform.python_version()}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("case", choices=[*CONVS, "dense"])
    p.add_argument("--calls", type=int, default=50, help="timed calls per program (default 50)")
    p.add_argument("--hlo", action="store_true", help="also print the optimised HLO of each JAX program")
    p.add_argument("--child", choices=["torch", "jax"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(run_torch(args.case, args.calls) if args.child == "torch" else run_jax(args.case, args.calls, args.hlo)))
        return
    results = {"torch": child("torch", args.case, args.calls, False)}
    results.update({setting: child(setting, args.case, args.calls, args.hlo) for setting in SETTINGS})
    print(versions())
    print(f"median of {args.calls} calls, ms (largest error against float64, relative to the largest entry)\n")
    names = list(results["torch"])
    width = max(map(len, names)) + 2
    print(" " * width + "".join(f"{f'JAX, {s}':>30s}" for s in SETTINGS) + f"{'torch':>22s}")
    for name in names:
        cells = [f"{results[s][name]['ms']:9.3f} ({results[s][name]['err']:.0e})" for s in SETTINGS]
        print(f"{name:{width}s}" + "".join(f"{c:>30s}" for c in cells) + f"{results['torch'][name]['ms']:9.3f} ({results['torch'][name]['err']:.0e})".rjust(22))
    for setting in SETTINGS if args.hlo else []:
        for name in names:
            print(f"\n---- optimised HLO, {name}, {setting} ----\n{results[setting][name]['hlo']}")


if __name__ == "__main__":
    main()
