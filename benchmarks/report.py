"""What benchmarks/compare.py makes of its rows: the summary, the table, Markdown, charts, and the diff of two runs."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np

from shared.contract import DATA_PARALLEL_MODES, GPU_MODES, MODES, SCAN_MODE
from shared.hparams import label
from shared.machine import BFLOAT16_FLAGS, native_bfloat16

SATURATION = 0.9  # throughput "stops growing" at the smallest batch within 10% of the best
RATIO_AGREEMENT = 0.10  # two runs' JAX/torch ratios "agree" within this, relative
MODE_COLORS = {"torch-eager": "#ee8866", "torch-compile": "#bb4422", "torch-compile-cudagraphs": "#882211", "jax-jit": "#4477aa",
               "jax-scan": "#223366"}
FRAMEWORK_COLORS = {"torch": "#bb4422", "jax": "#4477aa"}


def row_label(row: dict) -> str:
    return label(row["arch"], row["variant"])


SINGLE_DEVICE_MODE = {DATA_PARALLEL_MODES[f]: MODES[f][0] for f in MODES}  # what a data-parallel row is scaled against
OVERHEAD_FREE_BASE = {SCAN_MODE: "jax-jit", GPU_MODES[0]: "torch-compile"}  # what an overhead-free row is timed against


def timed(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["task"] != "fit"]


def single_device(rows: list[dict]) -> list[dict]:
    return [r for r in timed(rows) if r.get("devices", 1) == 1]


def precision_of(row: dict) -> str:
    return row.get("precision", "float32")  # rows of files written before the column: float32


def precision_label(row: dict) -> str:
    return "" if precision_of(row) == "float32" else f" {precision_of(row)}"


def mode_label(row: dict) -> str:
    return row["mode"] + (f" x{row['devices']}" if row.get("devices", 1) > 1 else "")


def against(rows: list[dict], base_of) -> list[tuple[dict, dict, np.ndarray]]:
    """(row, its base row, the row's step time over the base's round by round) for each row that `base_of(row)` gives
    a base for: (mode, precision, devices) of a row of the same architecture, variant, task and batch size."""
    index = {(r["arch"], r["variant"], r["task"], r["batch_size"], r["mode"], precision_of(r), r.get("devices", 1)): r for r in timed(rows)}
    pairs = []
    for r in timed(rows):
        base = base_of(r)
        b = index.get((r["arch"], r["variant"], r["task"], r["batch_size"], *base)) if base else None
        if b is not None and len(b["step_ms_rounds"]) == len(r["step_ms_rounds"]):
            pairs.append((r, b, np.array(r["step_ms_rounds"]) / np.array(b["step_ms_rounds"])))
    return pairs


# ---------------------------------------------------------------- summary
def jax_over_torch(rows: list[dict]) -> list[dict]:
    """Per architecture, task and batch size: jax-jit's step time over the best torch mode's, round by round.

    The ratio is formed within each round (both measured within seconds of
    each other), then its median and min-max over the rounds.
    """
    out = []
    groups = {}
    for r in single_device(rows):
        groups.setdefault((r["arch"], r["variant"], r["task"], r["batch_size"], precision_of(r)), []).append(r)
    for (arch, variant, task, batch, precision), group in groups.items():
        jax = [r for r in group if r["mode"] == "jax-jit"]
        torch = [r for r in group if r["framework"] == "torch"]
        if not jax or not torch:
            continue
        per_round = np.array(jax[0]["step_ms_rounds"]) / np.min([r["step_ms_rounds"] for r in torch], axis=0)
        out.append({"arch": arch, "variant": variant, "task": task, "batch_size": batch, "precision": precision,
                    "median": float(np.median(per_round)), "spread": [float(per_round.min()), float(per_round.max())]})
    return out


def batched_over_per_name(rows: list[dict]) -> dict[str, float]:
    """Per framework: training names per second of the batched RNN over the per-name loop, each in its best mode."""
    speedups = {}
    for framework in dict.fromkeys(r["framework"] for r in rows):
        best = {
            v: max((r["samples_per_s"] for r in timed(rows) if (r["arch"], r["variant"], r["framework"], r["task"]) == ("rnn", v, framework, "train")),
                   default=None)
            for v in ("batched", "per-name")
        }
        if None not in best.values():
            speedups[framework] = best["batched"] / best["per-name"]
    return speedups


def scaling(rows: list[dict]) -> list[dict]:
    """Per architecture, task, framework and mode with several batch sizes: samples/s at each, and where it stops growing."""
    curves = {}
    for r in timed(rows):
        curves.setdefault((r["arch"], r["variant"], r["task"], r["framework"], r["mode"], precision_of(r)), {})[r["batch_size"]] = r["samples_per_s"]
    out = []
    for (arch, variant, task, framework, mode, precision), points in curves.items():
        if len(points) < 2:
            continue
        best = max(points.values())
        out.append({"arch": arch, "variant": variant, "task": task, "framework": framework, "mode": mode, "precision": precision,
                    "samples_per_s": {str(b): points[b] for b in sorted(points)},
                    "saturates_at": min(b for b, s in points.items() if s >= SATURATION * best)})
    return out


def data_parallel(rows: list[dict]) -> list[dict]:
    """Per data-parallel row: its step time over its framework's single-device step at the same global batch, round by
    round (the overhead: its median and min-max), and the scaling efficiency, single / (devices x data-parallel)."""
    def base_of(r):
        return (SINGLE_DEVICE_MODE[r["mode"]], precision_of(r), 1) if r.get("devices", 1) > 1 and r["mode"] in SINGLE_DEVICE_MODE else None

    return [{"arch": r["arch"], "variant": r["variant"], "task": r["task"], "batch_size": r["batch_size"], "mode": r["mode"],
             "precision": precision_of(r), "devices": r["devices"], "single_device_mode": b["mode"], "overhead": float(np.median(per_round)),
             "overhead_spread": [float(per_round.min()), float(per_round.max())],
             "scaling_efficiency": float(1 / (r["devices"] * np.median(per_round)))}
            for r, b, per_round in against(rows, base_of)]


def ratio_record(r: dict, base: dict, per_round: np.ndarray) -> dict:
    return {"arch": r["arch"], "variant": r["variant"], "task": r["task"], "batch_size": r["batch_size"], "mode": r["mode"],
            "precision": precision_of(r), "base_mode": base["mode"], "base_precision": precision_of(base),
            "median": float(np.median(per_round)), "spread": [float(per_round.min()), float(per_round.max())]}


def bfloat16_over_float32(rows: list[dict]) -> list[dict]:
    """Per bfloat16 row: its step time over the same mode's float32 step, round by round."""
    def base_of(r):
        return (r["mode"], "float32", r.get("devices", 1)) if precision_of(r) == "bfloat16" else None

    return [ratio_record(r, b, per_round) for r, b, per_round in against(rows, base_of)]


def overhead_free(rows: list[dict]) -> list[dict]:
    """Per overhead-free row (jax-scan, torch-compile-cudagraphs): its step time over its framework's step without, by round."""
    def base_of(r):
        return (OVERHEAD_FREE_BASE[r["mode"]], precision_of(r), 1) if r["mode"] in OVERHEAD_FREE_BASE else None

    return [ratio_record(r, b, per_round) for r, b, per_round in against(rows, base_of)]


def summary(rows: list[dict]) -> dict:
    return {
        "jax_over_torch": jax_over_torch(rows),
        "data_parallel": data_parallel(rows),
        "bfloat16_over_float32": bfloat16_over_float32(rows),
        "overhead_free": overhead_free(rows),
        "batched_over_per_name": batched_over_per_name(rows),
        "scaling": scaling(rows),
        "unstable": [describe(r) for r in timed(rows) if r["unstable"]],
        "disagreements": [describe(r) for r in timed(rows) if not r.get("loss_agrees", r.get("outputs_agree", True))],
    }


def describe(row: dict) -> str:
    return f"{row_label(row)} {row['task']} {row['mode']}{precision_label(row)} batch {row['batch_size']}"


# ---------------------------------------------------------------- tables
def agreement(row: dict) -> str:
    """How far the row's first step is from its group's first row: the loss (train) or the outputs (infer), relative."""
    if row["task"] == "train":
        return f"loss {row['first_loss_rel_diff']:.0e}" + ("" if row["loss_agrees"] else " DISAGREES")
    return f"outputs {row['output_rel_diff']:.0e}" + ("" if row["outputs_agree"] else " DISAGREES")


def table(rows: list[dict]) -> list[str]:
    header = ["arch", "task", "mode", "precision", "batch", "step ms [round spread]", "compile s", "samples/s", "GFLOP/s", "eff.",
              "peak MB", "first step vs the group's first row"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in timed(rows):
        lo, hi = r["step_ms_spread"]
        unstable = " UNSTABLE" if r["unstable"] else ""
        lines.append("| " + " | ".join([
            row_label(r), r["task"], mode_label(r), precision_of(r), str(r["batch_size"]), f"{r['step_ms_median']:.3f} [{lo:.3f}-{hi:.3f}]{unstable}",
            f"{r['compile_s']:.2f}", f"{r['samples_per_s']:,.0f}", f"{r['gflops_per_s']:.1f}", f"{r['efficiency']:.2f}",
            f"{r['peak_mem_mb']:.1f}", agreement(r),
        ]) + " |")
    return lines


def fit_table(rows: list[dict]) -> list[str]:
    fits = [r for r in rows if r["task"] == "fit"]
    if not fits:
        return []
    lines = ["| arch | framework | precision | batch | epochs | wall s | s per epoch (median) | quality |", "|---|---|---|---|---|---|---|---|"]
    for r in fits:
        lines.append(f"| {row_label(r)} | {r['framework']} | {precision_of(r)} | {r['batch_size']} | {r['epochs']} | {r['wall_s']:.1f} | "
                     f"{r['epoch_s_median']:.2f} | {r['quality_metric']} {r['quality']:.4g} |")
    return lines


def summary_lines(results: dict) -> list[str]:
    s = results["summary"]
    lines = [f"- {row_label(x)} {x['task']} batch {x['batch_size']}{precision_label(x)}: jax-jit / best torch step time = {x['median']:.2f} "
             f"[{x['spread'][0]:.2f}-{x['spread'][1]:.2f} over rounds]" for x in s["jax_over_torch"]]
    lines += [f"- {row_label(x)} {x['task']} batch {x['batch_size']} {x['mode']}: bfloat16 / float32 step time = {x['median']:.2f} "
              f"[{x['spread'][0]:.2f}-{x['spread'][1]:.2f} over rounds]" for x in s.get("bfloat16_over_float32", [])]
    lines += [f"- {row_label(x)} {x['task']} batch {x['batch_size']}{precision_label(x)}: {x['mode']} / {x['base_mode']} step time = "
              f"{x['median']:.2f} [{x['spread'][0]:.2f}-{x['spread'][1]:.2f} over rounds]" for x in s.get("overhead_free", [])]
    lines += [f"- rnn, {fw}: batched / per-name training names per second = {v:.0f}x (best mode of each)"
              for fw, v in s["batched_over_per_name"].items()]
    lines += [f"- {row_label(x)} {x['task']} batch {x['batch_size']}: {x['mode']} on {x['devices']} devices / {x['single_device_mode']} on one "
              f"= {x['overhead']:.2f} [{x['overhead_spread'][0]:.2f}-{x['overhead_spread'][1]:.2f} over rounds], scaling efficiency "
              f"{x['scaling_efficiency']:.2f}" for x in s.get("data_parallel", [])]
    lines += [f"- {row_label(x)} {x['task']} {x['mode']}{precision_label(x)}: samples/s " + saturation(x) + " ("
              + ", ".join(f"{b}: {v:,.0f}" for b, v in x["samples_per_s"].items()) + ")" for x in s["scaling"]]
    lines += [f"- unstable (round medians more than 10% apart): {len(s['unstable'])} of {len(timed(results['rows']))} rows: "
              f"{', '.join(s['unstable'])}"] if s["unstable"] else []
    lines += [f"- DISAGREES with its group's first row: {', '.join(s['disagreements'])}"] if s["disagreements"] else []
    return lines + software_bfloat16_lines(results)


def software_bfloat16_lines(results: dict) -> list[str]:
    """A warning when bfloat16 rows ran on a CPU without bfloat16 arithmetic in hardware: there a precision's speed says little."""
    cpu_rows = [r for r in results["rows"] if precision_of(r) == "bfloat16" and r.get("device", "cpu") == "cpu"]
    if not cpu_rows or native_bfloat16(results["machine"].get("cpu_details")) is not False:
        return []
    return [f"- bfloat16 on a CPU without bfloat16 arithmetic ({' / '.join(BFLOAT16_FLAGS)} not among its flags): its {len(cpu_rows)} "
            "bfloat16 rows convert in software, and may be slower than float32 where a CPU with them is faster"]


def saturation(curve: dict) -> str:
    """Where a mode's throughput stops growing, or that it had not by the largest batch measured."""
    if curve["saturates_at"] == max(map(int, curve["samples_per_s"])):
        return f"still growing at the largest batch, {curve['saturates_at']}"
    return f"stops growing at batch {curve['saturates_at']} (within {1 - SATURATION:.0%} of its best)"


def machine_lines(results: dict) -> list[str]:
    m, rows = results["machine"], results["rows"]
    devices = sorted({f"{r['framework']}: {r['device_name']}" for r in rows})
    flags = sorted({r["settings"].get("xla_flags", "") for r in rows if r["framework"] == "jax"})
    compile_modes = sorted({r["settings"].get("compile_mode", "default") for r in rows if r["mode"] == "torch-compile"})
    lines = [
        f"- machine: {machine_name(results)} available, {m['platform']}; devices: {'; '.join(devices)}",
        f"- versions: python {m['python']}, " + ", ".join(f"{k} {v}" for k, v in sorted(results["versions"].items())),
        f"- command: `{results['command']}`",
        f"- XLA_FLAGS of the JAX rows: {' | '.join(repr(f) for f in flags) or 'none'}",
    ] + ([f"- torch.compile mode of the torch-compile rows: {', '.join(compile_modes)} (--compile-mode)"] if compile_modes else [])
    if not timed(rows):
        return lines
    return lines + [
        f"- each configuration: {results['settings']['repeats']} interleaved rounds, at most {results['settings']['steps']} timed steps "
        f"and {results['settings']['max_time']:g} s over them (at least 3 a round), after {results['settings']['warmup']} warm-up steps; "
        "step time = median over rounds of each round's median, [min-max of the round medians]",
    ]


# ---------------------------------------------------------------- files
def write(out: Path, results: dict) -> None:
    rows = results["rows"]
    lines = table(rows) + [""] + fit_table(rows) + [""] + summary_lines(results) + machine_lines(results)
    print("\n".join(lines))
    md = ["# Benchmark", ""] + machine_lines(results) + [""] + table(rows) + [""] + fit_table(rows) + [""] + summary_lines(results)
    (out / "results.md").write_text("\n".join(md) + "\n")
    written = [out / "results.json", out / "results.md"]
    if timed(rows):
        plot_steps(out / "results.png", rows)
        written.append(out / "results.png")
    if results["summary"]["scaling"]:
        plot_scaling(out / "scaling.png", rows)
        written.append(out / "scaling.png")
    if any(r["task"] == "fit" for r in rows):
        plot_fit(out / "fit.png", rows)
        written.append(out / "fit.png")
    print("wrote " + ", ".join(map(str, written)), file=sys.stderr)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_steps(path: Path, rows: list[dict]) -> None:
    """Step time (median, round spread) and peak memory of every row, training and inference side by side."""
    plt = _pyplot()
    tasks = [t for t in ("train", "infer") if any(r["task"] == t for r in rows)]
    height = max(len([r for r in rows if r["task"] == t]) for t in tasks)
    fig, axes = plt.subplots(len(tasks), 2, figsize=(12, 0.32 * height * len(tasks) + 1.5), squeeze=False,
                             gridspec_kw={"width_ratios": [3, 1]})
    for (ax_time, ax_mem), task in zip(axes, tasks):
        group = [r for r in rows if r["task"] == task]
        y = np.arange(len(group))[::-1]
        medians = np.array([r["step_ms_median"] for r in group])
        spread = np.array([[r["step_ms_median"] - r["step_ms_spread"][0], r["step_ms_spread"][1] - r["step_ms_median"]] for r in group]).T
        colors = [MODE_COLORS.get(r["mode"], "gray") for r in group]
        ax_time.barh(y, medians, xerr=spread, color=colors)
        ax_time.set_yticks(y, [f"{row_label(r)} {r['mode']}{precision_label(r)} b{r['batch_size']}" for r in group], fontsize=7)
        if medians.max() > 50 * medians.min():
            ax_time.set_xscale("log")
        ax_time.set_xlabel(f"{task} step, ms (median over rounds, bars: round spread)")
        ax_mem.barh(y, [r["peak_mem_mb"] for r in group], color=colors)
        ax_mem.set_yticks(y, [])
        ax_mem.set_xlabel("peak memory above baseline, MB")
    fig.suptitle(f"{rows[0]['device_name']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_scaling(path: Path, rows: list[dict]) -> None:
    """Samples per second against batch size, log-log: a panel per architecture, a line per mode, train solid, infer dashed."""
    plt = _pyplot()
    archs = list(dict.fromkeys(row_label(r) for r in timed(rows)))
    cols = min(3, len(archs))
    fig, axes = plt.subplots(-(-len(archs) // cols), cols, figsize=(4.2 * cols, 3.4 * -(-len(archs) // cols)), squeeze=False)
    for ax, arch in zip(axes.flat, archs):
        for (task, mode, precision) in dict.fromkeys((r["task"], r["mode"], precision_of(r)) for r in timed(rows) if row_label(r) == arch):
            points = sorted((r["batch_size"], r["samples_per_s"]) for r in timed(rows)
                            if (row_label(r), r["task"], r["mode"], precision_of(r)) == (arch, task, mode, precision))
            ax.plot(*zip(*points), marker="o" if precision == "float32" else "s", color=MODE_COLORS.get(mode, "gray"),
                    linestyle="-" if task == "train" else "--", label=f"{mode} {task}{'' if precision == 'float32' else ' ' + precision}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(arch, fontsize=9)
        ax.set_xlabel("batch size")
        ax.set_ylabel("samples / s")
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(archs):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_fit(path: Path, rows: list[dict]) -> None:
    """The quality metric after each epoch against the seconds since the training command began, per framework."""
    plt = _pyplot()
    fits = [r for r in rows if r["task"] == "fit"]
    archs = list(dict.fromkeys((row_label(r), r["batch_size"]) for r in fits))
    fig, axes = plt.subplots(1, len(archs), figsize=(4.5 * len(archs), 3.4), squeeze=False)
    for ax, (arch, batch) in zip(axes[0], archs):
        for r in [r for r in fits if (row_label(r), r["batch_size"]) == (arch, batch)]:
            if r["curve"]:
                ax.plot(*zip(*r["curve"]), marker=".", color=FRAMEWORK_COLORS[r["framework"]], label=f"{r['framework']} ({r['wall_s']:.0f} s in all)")
            ax.set_ylabel(r["quality_metric"])
        ax.set_title(f"{arch}, batch {batch}", fontsize=9)
        ax.set_xlabel("seconds since the command began")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------- two runs
def measure(row: dict) -> tuple[float, float, float]:
    """(value, low, high) of what a row times: the step (train, infer) or the whole training command (fit)."""
    if row["task"] == "fit":
        return row["wall_s"], row["wall_s"], row["wall_s"]
    return row["step_ms_median"], *row["step_ms_spread"]


def diff_lines(old: dict, new: dict, old_path: Path, new_path: Path) -> list[str]:
    """Row by row: new / old, and whether the change exceeds both runs' spreads.

    Rows match on arch, variant, task, mode, batch size and device; when each
    file holds one device and they differ (a CPU run against a GPU run), on
    all but the device.
    """
    devices = [sorted({r["device"] for r in results["rows"]}) for results in (old, new)]
    across = len(devices[0]) == len(devices[1]) == 1 and devices[0] != devices[1]  # one device each: CPU against GPU

    def key(r: dict) -> tuple:
        return r["arch"], r["variant"], r["task"], r["mode"] + precision_label(r), r["batch_size"], "" if across else r["device"]

    old_rows, new_rows = {key(r): r for r in old["rows"]}, {key(r): r for r in new["rows"]}

    def where(results: dict, path: Path) -> str:
        devices = sorted({r["device_name"] for r in results["rows"]})
        return f"{path}: {results['machine']['cpu']}; {', '.join(devices)}; " + ", ".join(f"{k} {v}" for k, v in sorted(results["versions"].items()))

    lines = [f"- old: {where(old, old_path)}", f"- new: {where(new, new_path)}"]
    lines += [f"- matching {devices[0][0]} rows with {devices[1][0]} rows"] if across else []
    lines += ["",
             "| arch | task | mode | batch | old (ms, or s for fit) [spread] | new [spread] | new / old | beyond both spreads |",
             "|---|---|---|---|---|---|---|---|"]
    for k in [k for k in old_rows if k in new_rows]:
        (o, o_lo, o_hi), (n, n_lo, n_hi) = measure(old_rows[k]), measure(new_rows[k])
        changed = abs(n - o) > max(o_hi - o_lo, n_hi - n_lo)
        lines.append(f"| {label(k[0], k[1])} | {k[2]} | {k[3]} | {k[4]} | {o:.3f} [{o_lo:.3f}-{o_hi:.3f}] | {n:.3f} [{n_lo:.3f}-{n_hi:.3f}] | "
                     f"{n / o:.2f} | {'yes: ' + ('slower' if n > o else 'faster') if changed else 'no'} |")
    for name, only in (("old", [k for k in old_rows if k not in new_rows]), ("new", [k for k in new_rows if k not in old_rows])):
        if only:
            lines.append(f"- only in the {name} file: " + ", ".join(describe_key(k) for k in only))
    return lines + ratio_diff_lines(old, new)


def describe_key(k: tuple) -> str:
    """arch, variant, task, mode, batch size and (unless the CPU) device, as the diff names a row."""
    return f"{label(k[0], k[1])} {k[2]} {k[3]} batch {k[4]}" + (f" {k[5]}" if k[5] not in ("", "cpu") else "")


def ratio_diff_lines(old: dict, new: dict) -> list[str]:
    """The two runs' JAX/torch ratios side by side, and how many agree within RATIO_AGREEMENT.

    Ratios are formed within each run's rounds, so they cancel what slowed a
    whole run down; two runs on one machine should agree on them far better
    than on step times.
    """
    key = lambda x: (x["arch"], x["variant"], x["task"], x["batch_size"], precision_of(x))  # noqa: E731
    old_ratios = {key(x): x for x in old.get("summary", {}).get("jax_over_torch", [])}
    pairs = [(k, old_ratios[k], x) for x in new.get("summary", {}).get("jax_over_torch", []) if (k := key(x)) in old_ratios]
    if not pairs:
        return []
    lines = ["", "| arch | task | batch | old jax-jit / best torch [rounds] | new | new / old |", "|---|---|---|---|---|---|"]
    agree = 0
    for (arch, variant, task, batch, _), o, n in pairs:
        change = n["median"] / o["median"]
        agree += abs(change - 1) <= RATIO_AGREEMENT
        lines.append(f"| {label(arch, variant)}{precision_label(o)} | {task} | {batch} | {o['median']:.2f} [{o['spread'][0]:.2f}-{o['spread'][1]:.2f}] | "
                     f"{n['median']:.2f} [{n['spread'][0]:.2f}-{n['spread'][1]:.2f}] | {change:.2f} |")
    lines.append(f"- the JAX/torch ratios of {agree} of {len(pairs)} rows ({agree / len(pairs):.0%}) agree within {RATIO_AGREEMENT:.0%}")
    return lines


# ---------------------------------------------------------------- results pages
HEADLINE_START, HEADLINE_END = "<!-- headline: generated from {} by python benchmarks/compare.py --report, do not edit -->", "<!-- /headline -->"


def page_stem(results: dict) -> str:
    """A run's results page name, <cpu>-<family>-<model>-<date> (or <gpu>-<date>), e.g. intel-xeon-processor-6-207-2026-12-07."""
    machine, details = results["machine"], results["machine"].get("cpu_details", {})
    gpu = next((r["device_name"] for r in results["rows"] if r["device"] == "gpu"), None)
    name = gpu or machine["cpu"] + (f" {details['family']} {details['model']}" if details.get("family") else "")
    slug = re.sub(r"[^a-z0-9]+", "-", re.sub(r"\((r|tm)\)", "", name.lower())).strip("-")
    return f"{slug}-{results.get('date', 'undated')[:10]}"


def machine_name(results: dict) -> str:
    """The CPU as /proc/cpuinfo names it, its family and model numbers and speed-deciding flags, and the CPUs the run had."""
    m, details = results["machine"], results["machine"].get("cpu_details", {})
    ids = f", family {details['family']} model {details['model']}" if details.get("family") else ""
    flags = f", {' '.join(details['flags'])}" if details.get("flags") else ""
    return f"{m['cpu']}{ids}{flags}; {m['cpus_available']} CPUs"


def provenance(results: dict) -> str:
    """Machine, versions, date and commit of a run, in one line."""
    versions = ", ".join(f"{k} {v}" for k, v in sorted(results["versions"].items()) if k in ("torch", "jax", "flax", "optax"))
    commit = results.get("commit") or "unknown commit"
    return f"{machine_name(results)}; {versions}; {results.get('date', 'undated')[:10]}, commit {commit[:7]}{commit[40:]}"


def headline_table(results: dict) -> list[str]:
    """The JAX/torch step-time ratio per architecture, training and inference side by side."""
    ratios = {}
    for x in results["summary"]["jax_over_torch"]:
        ratios.setdefault((row_label(x), x["batch_size"], x["precision"]), {})[x["task"]] = x
    per_arch = {}
    for arch, batch, precision in ratios:
        per_arch.setdefault(arch, (set(), set()))[0].add(batch)
        per_arch[arch][1].add(precision)
    several = {k: any(len(sets[i]) > 1 for sets in per_arch.values()) for k, i in (("batch", 0), ("precision", 1))}  # name them only then

    def name(key):
        return f"`{key[0]}`" + (f" batch {key[1]}" if several["batch"] else "") + (f" {key[2]}" if several["precision"] else "")

    def cell(x):
        return f"{x['median']:.2f} [{x['spread'][0]:.2f}-{x['spread'][1]:.2f}]" if x else ""

    lines = ["| architecture | train: JAX / torch | infer: JAX / torch |", "|---|---|---|"]
    return lines + [f"| {name(k)} | {cell(v.get('train'))} | {cell(v.get('infer'))} |" for k, v in ratios.items()]


def headline(results: dict, json_link: str) -> list[str]:
    """The headline table and, under it, how it was measured, where and when, linking the results page beside `json_link`."""
    return [*headline_table(results), "", f"JAX's step time (jax-jit) over torch's best mode's (below 1: JAX faster), median [min-max] over "
                                          f"{results['settings']['repeats']} interleaved rounds. {provenance(results)}; "
                                          f"[results page]({json_link.removesuffix('.json')}.md)."]


def results_page(results: dict, json_name: str) -> str:
    """A run's results page: what was run, where and when, the headline ratios, every row, and the summary."""
    lines = [f"# Benchmark results: {results['machine']['cpu']}, {results.get('date', 'undated')[:10]}", "",
             f"Generated by `python benchmarks/compare.py --report docs/results/{json_name}` from that results file; do not edit.", "",
             f"- date: {results.get('date', 'not recorded')}; commit: {results.get('commit') or 'not recorded'}",
             *machine_lines(results), "", "## JAX / torch", "", *headline_table(results), "",
             "JAX's step time (jax-jit) over torch's best mode's, round by round (below 1: JAX faster): median [min-max] over the rounds.",
             "", "## Every row", "", *table(results["rows"])]
    fits = fit_table(results["rows"])
    lines += ["", "## Time to result", "", *fits] if fits else []
    return "\n".join(lines + ["", "## Summary", "", *summary_lines(results)]) + "\n"


def write_results_page(results: dict, source: Path, folder: Path) -> list[Path]:
    """docs/results/<stem>.md from `results`, with a copy of its results file beside it (unless it is that file)."""
    stem = page_stem(results)
    folder.mkdir(parents=True, exist_ok=True)
    json_path, page = folder / f"{stem}.json", folder / f"{stem}.md"
    if source.resolve() != json_path.resolve():
        json_path.write_text(json.dumps(results, indent=1) + "\n")
    page.write_text(results_page(results, json_path.name))
    return [json_path, page]


def update_headline(readme: Path, results: dict, json_link: str) -> None:
    """Replace the README's generated headline block (between HEADLINE_START and HEADLINE_END) with this run's."""
    text = readme.read_text()
    start, end = text.find("<!-- headline:"), text.find(HEADLINE_END)
    if start < 0 or end < start:
        raise ValueError(f"{readme}: no generated headline block (a line starting '<!-- headline:' and a line '{HEADLINE_END}')")
    block = "\n".join([HEADLINE_START.format(json_link), *headline(results, json_link)])
    readme.write_text(text[:start] + block + "\n" + text[end:])
