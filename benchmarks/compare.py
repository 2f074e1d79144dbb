"""Time one training step per architecture x framework x mode, on CPU or GPU.

    python benchmarks/compare.py                      # every architecture, every mode, CPU
    python benchmarks/compare.py --arch vae_mlp --mode jax-jit --steps 200
    python benchmarks/compare.py --device gpu

Each configuration runs in its own process (benchmarks/worker.py) with the
same number of threads; all rows of an architecture start from the same
weights and batches, so their final losses must agree. Efficiency is the
step's matmul/conv FLOPs over (the framework's own large float32 matmul
throughput x step time): 1.0 would mean the step ran at the matmul floor.
Writes OUT/results.json, OUT/results.md and OUT/results.png.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from shared.errors import UserError, run_cli  # noqa: E402
from shared.hparams import HPARAMS, label, variants  # noqa: E402
from shared.trainer import ArgumentParser, non_negative_int, positive_int  # noqa: E402

FRAMEWORK_MODES = {"torch": ("torch-eager", "torch-compile"), "jax": ("jax-jit",)}
ALL_MODES = [m for modes in FRAMEWORK_MODES.values() for m in modes]
LOSS_AGREEMENT_RTOL = 1e-4
WORKER = Path(__file__).resolve().with_name("worker.py")
COLUMNS = [
    "arch", "variant", "framework", "mode", "device", "batch_size", "threads", "step_ms_median", "step_ms_p10", "step_ms_p90",
    "compile_s", "samples_per_s", "flops_per_step", "gflops_per_s", "peak_gflops_per_s", "efficiency", "first_loss", "final_loss",
]


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python benchmarks/compare.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", nargs="+", choices=sorted(HPARAMS), default=sorted(HPARAMS))
    every_variant = sorted({v for arch in HPARAMS for v in variants(arch)})
    p.add_argument("--variant", nargs="+", choices=every_variant, help="only these variants (default: all; rnn: batched, per-name)")
    p.add_argument("--framework", nargs="+", choices=sorted(FRAMEWORK_MODES), default=sorted(FRAMEWORK_MODES, reverse=True))
    p.add_argument("--mode", nargs="+", choices=ALL_MODES, default=ALL_MODES)
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    p.add_argument("--batch-size", type=positive_int, help="default: each architecture's training batch size (the per-name RNN always takes 1)")
    p.add_argument("--steps", type=positive_int, default=100, help="timed steps per configuration")
    p.add_argument("--warmup", type=non_negative_int, default=10, help="untimed steps first (the first one compiles)")
    p.add_argument("--threads", type=positive_int, default=len(os.sched_getaffinity(0)), help="CPU threads for every configuration")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("results") / "benchmark", help="output folder")
    return p


def run_worker(cfg: dict, tmp: Path) -> dict:
    """Run one configuration in a fresh process; a failure there is a one-line error here."""
    name = f"{cfg['job']}-{cfg['framework']}-{cfg.get('arch', '')}-{cfg.get('variant', '')}-{cfg.get('mode', '')}"
    cfg_path, out_path = tmp / f"{name}.cfg.json", tmp / f"{name}.out.json"
    cfg_path.write_text(json.dumps(cfg))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, str(WORKER), str(cfg_path), str(out_path)], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        last = lines[-1].removeprefix("error: ") if lines else f"exit status {proc.returncode}"
        raise UserError(f"{cfg['framework']} {cfg.get('mode', 'matmul peak')} on {cfg['device']}: {last}")
    return json.loads(out_path.read_text())


def plan(args) -> list[tuple[str, str, str, str]]:
    """(arch, variant, framework, mode) of every row, in table order."""
    if not set(args.mode) & {m for f in args.framework for m in FRAMEWORK_MODES[f]}:
        raise UserError(f"--mode {' '.join(args.mode)} belongs to no framework in --framework {' '.join(args.framework)}")
    pairs = [(a, v) for a in args.arch for v in variants(a) if args.variant is None or v in args.variant or len(variants(a)) == 1]
    if not pairs:
        raise UserError(f"--variant {' '.join(args.variant)}: none of --arch {' '.join(args.arch)} has it")
    return [(a, v, f, m) for a, v in pairs for f in args.framework for m in FRAMEWORK_MODES[f] if m in args.mode]


def main(argv: list[str] | None = None) -> list[dict]:
    args = build_parser().parse_args(argv)
    if args.threads > len(os.sched_getaffinity(0)):
        raise UserError(f"--threads {args.threads}: only {len(os.sched_getaffinity(0))} CPUs are available")
    configs = plan(args)
    out = args.out
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    from benchmarks.inputs import count_step_flops, write_initial_weights

    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        common = {"device": args.device, "threads": args.threads, "seed": args.seed}
        peaks = {}
        for framework in dict.fromkeys(f for _, _, f, _ in configs):
            print(f"measuring {framework} float32 matmul peak on {args.device} ...", file=sys.stderr)
            peaks[framework] = run_worker({"job": "peak", "framework": framework, "arch": "vae_mlp", **common}, tmp)
        for arch, variant in dict.fromkeys((a, v) for a, v, _, _ in configs):
            hp = HPARAMS[arch][variant]
            batch_size = hp.batch_size if getattr(hp, "batch_size_fixed", False) else args.batch_size or hp.batch_size
            init = tmp / f"{arch}-{variant}.safetensors"
            write_initial_weights(arch, variant, args.seed, init)
            flops = count_step_flops(arch, variant, batch_size, args.steps, args.seed)
            for framework, mode in [(f, m) for a, v, f, m in configs if (a, v) == (arch, variant)]:
                print(f"timing {label(arch, variant)} {mode} ...", file=sys.stderr)
                cfg = {"job": "step", "framework": framework, "arch": arch, "variant": variant, "mode": mode,
                       "batch_size": batch_size, "steps": args.steps, "warmup": max(args.warmup, 1), "lr": hp.lr,
                       "init": str(init), **common}
                rows.append(make_row(cfg, run_worker(cfg, tmp), peaks[framework]["peak_gflops_per_s"], flops))
    flag_disagreements(rows)
    write_outputs(out, rows, args)
    return rows


def make_row(cfg: dict, result: dict, peak: float, flops: float) -> dict:
    step_s = result["step_ms_median"] / 1e3
    row = {k: cfg[k] for k in ("arch", "variant", "framework", "mode", "device", "batch_size", "threads")}
    row.update({k: result[k] for k in ("step_ms_median", "step_ms_p10", "step_ms_p90", "compile_s", "warmup_steps", "samples_per_s")})
    row.update({
        "flops_per_step": flops,
        "gflops_per_s": flops / step_s / 1e9,
        "peak_gflops_per_s": peak,
        "efficiency": flops / (peak * 1e9 * step_s),
        "first_loss": result["first_loss"],
        "final_loss": result["final_loss"],
        "device_name": result["device_name"],
        "versions": result["versions"],
    })
    return row


def flag_disagreements(rows: list[dict]) -> None:
    """Compare each row with the first row of its (arch, variant).

    The loss of the first step (same weights, same batch) must agree to
    LOSS_AGREEMENT_RTOL, or the row is flagged: it did not compute the same
    thing. The final loss's relative difference is reported too: float32
    rounding differences grow over the steps, slowly for smooth models, fast
    for ReLU networks under Adam at a high learning rate (tests/tolerances.py).
    """
    reference = {}
    for row in rows:
        ref = reference.setdefault((row["arch"], row["variant"]), row)
        row["first_loss_rel_diff"] = rel_diff(row["first_loss"], ref["first_loss"])
        row["final_loss_rel_diff"] = rel_diff(row["final_loss"], ref["final_loss"])
        row["loss_agrees"] = row["first_loss_rel_diff"] <= LOSS_AGREEMENT_RTOL


def rel_diff(loss, reference) -> float:
    """|loss - reference| / |reference|, the largest over a step's losses when it has several."""
    loss, reference = np.atleast_1d(np.asarray(loss, np.float64)), np.atleast_1d(np.asarray(reference, np.float64))
    return float(np.max(np.abs(loss - reference) / np.maximum(np.abs(reference), 1e-30)))


def format_losses(loss) -> str:
    return " / ".join(f"{v:.6g}" for v in np.atleast_1d(loss))


def row_label(row: dict) -> str:
    return label(row["arch"], row["variant"])


def jax_over_torch(rows: list[dict]) -> dict[str, float]:
    """Per architecture and variant: jax-jit step time / the best torch mode's step time (< 1: JAX faster)."""
    ratios = {}
    for name in dict.fromkeys(map(row_label, rows)):
        jax = [r["step_ms_median"] for r in rows if row_label(r) == name and r["framework"] == "jax"]
        torch = [r["step_ms_median"] for r in rows if row_label(r) == name and r["framework"] == "torch"]
        if jax and torch:
            ratios[name] = jax[0] / min(torch)
    return ratios


def batched_over_per_name(rows: list[dict]) -> dict[str, float]:
    """Per framework: names per second of the batched RNN over the per-name loop, each in its best mode."""
    speedups = {}
    for framework in dict.fromkeys(r["framework"] for r in rows):
        best = {
            variant: max((r["samples_per_s"] for r in rows if (r["arch"], r["variant"], r["framework"]) == ("rnn", variant, framework)), default=None)
            for variant in ("batched", "per-name")
        }
        if None not in best.values():
            speedups[framework] = best["batched"] / best["per-name"]
    return speedups


def summary_lines(rows: list[dict]) -> list[str]:
    lines = [f"- {name}: jax-jit / best torch step time = {v:.2f}" for name, v in jax_over_torch(rows).items()]
    lines += [f"- rnn, {fw}: batched / per-name names per second = {v:.0f}x (best mode of each)" for fw, v in batched_over_per_name(rows).items()]
    return lines


def format_table(rows: list[dict]) -> list[str]:
    header = ["arch", "mode", "batch", "step ms (p10-p90)", "compile s", "samples/s", "GFLOP/s", "peak", "efficiency", "final loss (rel. diff)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        flag = "" if r["loss_agrees"] else f" DISAGREES (first step {r['first_loss_rel_diff']:.1e})"
        drift = f" ({r['final_loss_rel_diff']:.0e})" if r["final_loss_rel_diff"] > LOSS_AGREEMENT_RTOL else ""
        lines.append("| " + " | ".join([
            row_label(r), r["mode"], str(r["batch_size"]),
            f"{r['step_ms_median']:.3f} ({r['step_ms_p10']:.3f}-{r['step_ms_p90']:.3f})",
            f"{r['compile_s']:.2f}", f"{r['samples_per_s']:,.0f}", f"{r['gflops_per_s']:.1f}",
            f"{r['peak_gflops_per_s']:.0f}", f"{r['efficiency']:.2f}", f"{format_losses(r['final_loss'])}{drift}{flag}",
        ]) + " |")
    return lines


def machine_summary(rows: list[dict], args) -> list[str]:
    names = sorted({f"{r['framework']}: {r['device_name']}" for r in rows})
    versions = {k: v for r in rows for k, v in r["versions"].items()}
    return [
        f"- machine: {platform.node() or 'unknown'}, {platform.machine()}, {len(os.sched_getaffinity(0))} CPUs available; "
        f"{args.threads} threads per configuration",
        f"- devices: {'; '.join(names)}",
        f"- versions: python {platform.python_version()}, " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())),
        f"- {args.steps} timed steps after {args.warmup} warm-up steps; efficiency = FLOPs per step / (peak x median step time)",
    ]


def write_outputs(out: Path, rows: list[dict], args) -> None:
    table = format_table(rows)
    ratio_lines = summary_lines(rows)
    print("\n".join(table + [""] + ratio_lines + machine_summary(rows, args)))
    (out / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    md = ["# Step-time benchmark", ""] + machine_summary(rows, args) + [""] + table + [""] + ratio_lines
    (out / "results.md").write_text("\n".join(md) + "\n")
    plot(out / "results.png", rows)
    print(f"wrote {out / 'results.json'}, {out / 'results.md'}, {out / 'results.png'}", file=sys.stderr)


def plot(path: Path, rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"torch-eager": "#ee8866", "torch-compile": "#bb4422", "jax-jit": "#4477aa"}
    labels = [f"{row_label(r)}  {r['mode']}" for r in rows]
    medians = [r["step_ms_median"] for r in rows]
    errors = [[r["step_ms_median"] - r["step_ms_p10"] for r in rows], [r["step_ms_p90"] - r["step_ms_median"] for r in rows]]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.2))
    y = list(range(len(rows)))[::-1]
    ax.barh(y, medians, xerr=errors, color=[colors[r["mode"]] for r in rows])
    for yi, r in zip(y, rows):
        ax.text(r["step_ms_p90"], yi, f"  eff {r['efficiency']:.2f}", va="center", fontsize=8)
    ax.set_yticks(y, labels, fontsize=8)
    slowest, fastest = max(r["step_ms_p90"] for r in rows), min(r["step_ms_p10"] for r in rows)
    if slowest > 50 * fastest:  # a per-name RNN step next to a CNN step: only a log axis shows both
        ax.set_xscale("log")
        ax.set_xlim(fastest / 2, slowest * 4)
    else:
        ax.set_xlim(0, slowest * 1.3)
    ax.set_xlabel(f"median training step time, ms (p10-p90), {rows[0]['device']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    run_cli(main)
