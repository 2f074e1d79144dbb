"""What benchmarks/compare.py makes of its rows: the summary, the table, Markdown, charts, and the diff of two runs."""
from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import numpy as np

from shared.contract import DATA_PARALLEL_MODES, GPU_MODES, MODES, SCAN_MODE
from shared.hparams import label
from shared.machine import BFLOAT16_FLAGS, native_bfloat16

SATURATION = 0.9  # throughput "stops growing" at the smallest batch within 10% of the best
RATIO_AGREEMENT = 0.10  # two runs' JAX/torch ratios "agree" within this, relative
CONFIDENCE = 0.95  # a ratio's interval covers its centre at least this often; a row's, the median of its round medians
MARGIN = 0.05  # a difference is clear when its whole interval lies beyond 1 +- this (below 1/1.05 or above 1.05)
VERDICTS = ("JAX faster", "torch faster", "no clear difference")
TOO_FEW_ROUNDS = "too few rounds"
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


# ---------------------------------------------------------------- how sure
def median_interval(values, confidence: float = CONFIDENCE) -> tuple[float, float, float] | None:
    """(low, high, coverage): the distribution-free confidence interval of the median of `values`, or None for too few.

    The k-th smallest and k-th largest value, k the largest for which fewer
    than k of n values fall below the median with probability at most
    (1 - confidence) / 2 (the sign test's interval: Binomial(n, 1/2), no
    assumption about the values' distribution); coverage = 1 - twice that
    probability. n = 6 is the fewest with a 95% interval: [min, max], 96.9%.
    """
    x, n = np.sort(np.asarray(values, np.float64)), len(values)
    tail, k = 0.0, 0
    while k < n and tail + math.comb(n, k) / 2**n <= (1 - confidence) / 2:
        tail, k = tail + math.comb(n, k) / 2**n, k + 1
    return None if k == 0 else (float(x[k - 1]), float(x[n - k]), 1 - 2 * tail)


def verdict(interval: list[float] | None) -> str:
    """What a JAX/torch ratio's interval [low, high] says: below 1 / (1 + MARGIN) JAX is faster, above 1 + MARGIN torch is."""
    if interval is None:
        return TOO_FEW_ROUNDS
    low, high = interval
    return VERDICTS[0] if high < 1 / (1 + MARGIN) else VERDICTS[1] if low > 1 + MARGIN else VERDICTS[2]


def signed_rank_cdf(n: int) -> np.ndarray:
    """P(T <= t), t = 0 .. n(n+1)/2: the exact distribution of Wilcoxon's signed-rank statistic T of n values symmetric
    about zero (each rank 1..n counted with probability 1/2: the number of subsets of the ranks summing to t, over 2^n)."""
    ways = np.zeros(n * (n + 1) // 2 + 1)
    ways[0] = 1
    for rank in range(1, n + 1):
        ways[rank:] = ways[rank:] + ways[:-rank]  # the right side is evaluated first: subsets without this rank, then with it
    return np.cumsum(ways) / 2**n


def ratio_interval(ratios, confidence: float = CONFIDENCE) -> tuple[float, float, float, float] | None:
    """(estimate, low, high, coverage) of the centre of round-by-round ratios, or None for too few (fewer than 6 at 95%).

    On the logarithms of the ratios: the Hodges-Lehmann estimate (the median
    of the n(n+1)/2 pairwise means, the Walsh averages) and the Wilcoxon
    signed-rank interval, from the (k+1)-th smallest to the (k+1)-th largest
    Walsh average, k the largest with P(T <= k) <= (1 - confidence) / 2;
    coverage = 1 - 2 P(T <= k). It assumes the log ratios are symmetric about
    their centre, which rounds that alternate the frameworks' order make
    plausible, and uses every ratio, not two order statistics as the median's
    interval does: docs/benchmark.md says how much better it repeats.
    """
    logs = np.log(np.asarray(ratios, np.float64))
    i, j = np.triu_indices(len(logs))
    walsh = np.sort((logs[i] + logs[j]) / 2)
    cdf = signed_rank_cdf(len(logs))
    k = int(np.searchsorted(cdf, (1 - confidence) / 2, side="right")) - 1
    if k < 0:
        return None
    return float(np.exp(np.median(walsh))), float(np.exp(walsh[k])), float(np.exp(walsh[-1 - k])), float(1 - 2 * cdf[k])


def ratio_stats(per_round: np.ndarray) -> dict:
    """Estimate, min-max, confidence interval and its coverage of round-by-round ratios (ratio_interval); with too few
    rounds for an interval the estimate is their median."""
    centre = ratio_interval(per_round)
    return {"estimate": float(np.median(per_round)) if centre is None else centre[0], "spread": [float(per_round.min()), float(per_round.max())],
            "interval": None if centre is None else list(centre[1:3]), "coverage": None if centre is None else centre[3]}


def verdict_method() -> dict:
    """How the verdicts are reached, as results.json records it."""
    return {"ratio": "jax-jit's step time over the best torch mode's, formed within each round",
            "estimate": "Hodges-Lehmann estimate of the log round ratios' centre (the median of their pairwise means)",
            "interval": "Wilcoxon signed-rank confidence interval of that centre (exact, from the pairwise means)",
            "confidence": CONFIDENCE, "margin": MARGIN,
            "rule": f"JAX faster if the interval lies below 1/{1 + MARGIN:g}, torch faster if above {1 + MARGIN:g}, else no clear difference"}


# ---------------------------------------------------------------- summary
def jax_over_torch(rows: list[dict]) -> list[dict]:
    """Per architecture, task and batch size: jax-jit's step time over the best torch mode's, round by round.

    The ratio is formed within each round (both measured within seconds of
    each other), then its estimate, min-max and confidence interval over the
    rounds, and the verdict the interval gives.
    """
    out = []
    groups = {}
    for r in single_device(rows):
        groups.setdefault(ratio_key(r), []).append(r)
    for (arch, variant, task, batch, precision), group in groups.items():
        jax = [r for r in group if r["mode"] == "jax-jit"]
        torch = [r for r in group if r["framework"] == "torch"]
        if not jax or not torch:
            continue
        torch_rounds = np.array([r["step_ms_rounds"] for r in torch])
        per_round = np.array(jax[0]["step_ms_rounds"]) / torch_rounds.min(axis=0)
        stats = ratio_stats(per_round)
        fastest = np.bincount(torch_rounds.argmin(axis=0), minlength=len(torch)).argmax()  # the torch mode best in most rounds
        out.append({"arch": arch, "variant": variant, "task": task, "batch_size": batch, "precision": precision, **stats,
                    "verdict": verdict(stats["interval"]),
                    "jax_mode": jax[0]["mode"], "torch_mode": torch[fastest]["mode"]})
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
            "precision": precision_of(r), "base_mode": base["mode"], "base_precision": precision_of(base), **ratio_stats(per_round)}


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


def compiled_over_eager(rows: list[dict]) -> list[dict]:
    """Per torch-compile row: its step time over torch-eager's, round by round (what compiling buys torch)."""
    def base_of(r):
        return ("torch-eager", precision_of(r), 1) if r["mode"] == "torch-compile" else None

    return [ratio_record(r, b, per_round) for r, b, per_round in against(rows, base_of)]


def summary(rows: list[dict]) -> dict:
    return {
        "verdict_method": verdict_method(),
        "jax_over_torch": jax_over_torch(rows),
        "compiled_over_eager": compiled_over_eager(rows),
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


def ratio_key(x: dict) -> tuple:
    """What a JAX/torch ratio is of: architecture, variant, task, batch size, precision."""
    return x["arch"], x["variant"], x["task"], x["batch_size"], precision_of(x)


def table(rows: list[dict]) -> list[str]:
    header = ["arch", "task", "mode", "precision", "batch", "step ms [interval]", "verdict", "compile s", "samples/s", "GFLOP/s", "eff.",
              "peak MB", "first step vs the group's first row"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    verdicts = {ratio_key(x): x["verdict"] for x in jax_over_torch(rows)}
    for r in timed(rows):
        lo, hi = r.get("step_ms_interval") or r["step_ms_spread"]
        unstable = " UNSTABLE" if r["unstable"] else ""
        lines.append("| " + " | ".join([
            row_label(r), r["task"], mode_label(r), precision_of(r), str(r["batch_size"]), f"{r['step_ms_median']:.3f} [{lo:.3f}-{hi:.3f}]{unstable}",
            verdicts.get(ratio_key(r), "") if r.get("devices", 1) == 1 else "",
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
    lines = [f"- {row_label(x)} {x['task']} batch {x['batch_size']}{precision_label(x)}: {x['verdict']}: jax-jit / best torch step time = "
             f"{x['estimate']:.2f} [{interval_text(x)}] (torch's best: {x['torch_mode']})" for x in s["jax_over_torch"]]
    lines += [f"- {row_label(x)} {x['task']} batch {x['batch_size']} {x['mode']}: bfloat16 / float32 step time = {x['estimate']:.2f} "
              f"[{x['spread'][0]:.2f}-{x['spread'][1]:.2f} over rounds]" for x in s.get("bfloat16_over_float32", [])]
    lines += [f"- {row_label(x)} {x['task']} batch {x['batch_size']}{precision_label(x)}: {x['mode']} / {x['base_mode']} step time = "
              f"{x['estimate']:.2f} [{x['spread'][0]:.2f}-{x['spread'][1]:.2f} over rounds]" for x in s.get("overhead_free", [])]
    lines += [f"- rnn, {fw}: batched / per-name training names per second = {v:.0f}x (best mode of each)"
              for fw, v in s["batched_over_per_name"].items()]
    lines += [f"- {row_label(x)} {x['task']} batch {x['batch_size']}: {x['mode']} on {x['devices']} devices / {x['single_device_mode']} on one "
              f"= {x['overhead']:.2f} [{x['overhead_spread'][0]:.2f}-{x['overhead_spread'][1]:.2f} over rounds], scaling efficiency "
              f"{x['scaling_efficiency']:.2f}" for x in s.get("data_parallel", [])]
    lines += [f"- {row_label(x)} {x['task']} {x['mode']}{precision_label(x)}: samples/s " + saturation(x) + " ("
              + ", ".join(f"{b}: {v:,.0f}" for b, v in x["samples_per_s"].items()) + ")" for x in s["scaling"]]
    lines += [f"- unstable (the median's interval wider than 10% of it): {len(s['unstable'])} of {len(timed(results['rows']))} rows: "
              f"{', '.join(s['unstable'])}"] if s["unstable"] else []
    lines += [f"- DISAGREES with its group's first row: {', '.join(s['disagreements'])}"] if s["disagreements"] else []
    return lines + software_bfloat16_lines(results)


def interval_text(x: dict) -> str:
    """'low-high, 96% interval' or, with too few rounds for one, 'low-high over rounds' (the min-max)."""
    if x.get("interval"):
        return f"{x['interval'][0]:.2f}-{x['interval'][1]:.2f}, {x['coverage']:.0%} interval"
    return f"{x['spread'][0]:.2f}-{x['spread'][1]:.2f} over rounds"


def verdict_lines(results: dict) -> list[str]:
    """The verdicts first: how many of each, the rule, and the ratio chart as text."""
    ratios = results["summary"]["jax_over_torch"]
    if not ratios:
        return []
    counts = ", ".join(f"{v} {sum(x['verdict'] == v for x in ratios)}" for v in (*VERDICTS, TOO_FEW_ROUNDS)
                       if any(x["verdict"] == v for x in ratios))
    method = results["summary"].get("verdict_method", verdict_method())
    return [f"JAX / torch, step time ({counts}; {method['rule']}, at {method['confidence']:.0%} confidence):", "",
            *ratio_chart_lines(ratios)]


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
    mallocs = sorted({r["settings"].get("malloc", "default") for r in rows})
    lines = [
        f"- machine: {machine_name(results)} available, {m['platform']}; devices: {'; '.join(devices)}",
        f"- versions: python {m['python']}, " + ", ".join(f"{k} {v}" for k, v in sorted(results["versions"].items())),
        f"- command: `{results['command']}`",
        f"- XLA_FLAGS of the JAX rows: {' | '.join(repr(f) for f in flags) or 'none'}",
        f"- glibc malloc of every row's process: {', '.join(mallocs)} (--malloc; retain: freed memory kept for the next step)",
    ] + ([f"- torch.compile mode of the torch-compile rows: {', '.join(compile_modes)} (--compile-mode)"] if compile_modes else [])
    if not timed(rows):
        return lines
    return lines + [
        f"- each configuration: {rounds_text(results['settings'])}, at most {results['settings']['steps']} timed steps "
        f"and {results['settings']['max_time']:g} s over them (at least 3 a round), after {results['settings']['warmup']} warm-up steps; "
        "step time = median over rounds of each round's median, [its confidence interval, or the min-max with fewer than 6 rounds]",
    ]


# ---------------------------------------------------------------- files
def write(out: Path, results: dict) -> None:
    """The verdicts and ratio chart first, then the table, summary and machine: on stdout, as Markdown, charts and report.html."""
    from benchmarks import html_report

    rows = results["rows"]
    verdicts = verdict_lines(results)
    lines = verdicts + [""] * bool(verdicts) + table(rows) + [""] + fit_table(rows) + [""] + summary_lines(results) + machine_lines(results)
    print("\n".join(lines))
    written = [out / "ratios.png"] if plot_ratios(out / "ratios.png", results) else []
    md = ["# Benchmark", ""] + machine_lines(results) + [""] + (["```", *verdicts, "```", ""] if verdicts else []) + table(rows) + [""]
    md += fit_table(rows) + [""] + summary_lines(results)
    (out / "results.md").write_text("\n".join(md) + "\n")
    html_report.write_run_page(out / "report.html", results)
    written += [out / "report.html", out / "results.json", out / "results.md"]
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


VERDICT_COLORS = {VERDICTS[0]: FRAMEWORK_COLORS["jax"], VERDICTS[1]: FRAMEWORK_COLORS["torch"], VERDICTS[2]: "#888888",
                  TOO_FEW_ROUNDS: "#bbbbbb"}


def ratio_name(x: dict) -> str:
    return f"{row_label(x)} {x['task']} b{x['batch_size']}{precision_label(x)}"


def ratio_chart_lines(ratios: list[dict], width: int = 41, span: float = 4.0) -> list[str]:
    """The JAX/torch ratios as text: a log axis from 1/span to span, | at 1, the interval [---] and the estimate o."""
    def column(value: float) -> int:
        return round((min(max(math.log(value) / math.log(span), -1), 1) + 1) / 2 * (width - 1))

    names = [ratio_name(x) for x in ratios]
    pad = max(map(len, names), default=0)
    lines = [f"{'':{pad}}  {'':18}  {'JAX faster <':>{width // 2 + 1}}|> torch faster (log axis, 1/{span:g} to {span:g})"]
    for name, x in zip(names, ratios):
        low, high = x["interval"] or x["spread"]
        axis = ["."] * width
        axis[column(1.0)] = "|"
        for i in range(column(low), column(high) + 1):
            axis[i] = "-"
        axis[column(low)], axis[column(high)], axis[column(x["estimate"])] = "[", "]", "o"
        lines.append(f"{name:{pad}}  {x['estimate']:5.2f} [{low:.2f}-{high:.2f}]  {''.join(axis)}  {x['verdict']}")
    return lines


def ratio_figure(results: dict):
    """The answer as a picture: JAX/torch per architecture and task (left) and each mode over its framework's base step
    (right), median and interval on a log axis, coloured by verdict; None when the rows hold no JAX/torch ratio."""
    s = results["summary"]
    ratios, modes = s.get("jax_over_torch", []), s.get("compiled_over_eager", []) + s.get("overhead_free", [])
    if not ratios:
        return None
    plt = _pyplot()
    sizes = [len(ratios)] + ([len(modes)] if modes else [])
    fig, axes = plt.subplots(len(sizes), 1, figsize=(9, 0.24 * sum(sizes) + 1.2 * len(sizes) + 0.6), squeeze=False,
                             gridspec_kw={"height_ratios": [n + 3 for n in sizes]})
    panel(axes[0][0], ratios, [ratio_name(x) for x in ratios], [VERDICT_COLORS[x["verdict"]] for x in ratios],
          "JAX's step / torch's best (jax-jit over the faster torch mode of each round)", ("JAX faster", "torch faster"))
    if modes:
        panel(axes[1][0], modes, [f"{ratio_name(x)} {x['mode']} / {x['base_mode']}" for x in modes],
              [MODE_COLORS.get(x["mode"], "gray") for x in modes], "each mode's step over its framework's base step",
              ("mode faster", "mode slower"))
    handles = [plt.Line2D([], [], marker="o", linestyle="", color=c, label=v) for v, c in VERDICT_COLORS.items()
               if any(x["verdict"] == v for x in ratios)]
    axes[0][0].legend(handles=handles, fontsize=7, loc="lower right")
    method = s.get("verdict_method", {})
    fig.suptitle(f"{results['machine']['cpu']}, {results['machine']['cpus_available']} CPUs, {results.get('date', '')[:10]}\n"
                 f"Hodges-Lehmann estimate and {method.get('confidence', CONFIDENCE):.0%} interval over {results['settings']['repeats']} rounds; "
                 f"grey band: within {method.get('margin', MARGIN):.0%} of 1", fontsize=8)
    fig.tight_layout()
    return fig


def panel(ax, ratios: list[dict], names: list[str], colors: list[str], title: str, sides: tuple[str, str]) -> None:
    """One ratio panel: a point and interval (min-max where there is none) per entry, the line at 1 and the margin band."""
    y = np.arange(len(ratios))[::-1]
    estimates = np.array([x["estimate"] for x in ratios])
    low_high = np.array([x["interval"] or x["spread"] for x in ratios])
    ax.errorbar(estimates, y, xerr=[estimates - low_high[:, 0], low_high[:, 1] - estimates], fmt="none", ecolor=colors, elinewidth=2)
    ax.scatter(estimates, y, c=colors, zorder=3, s=18)
    ax.axvspan(1 / (1 + MARGIN), 1 + MARGIN, color="#dddddd", zorder=0)
    ax.axvline(1, color="black", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_yticks(y, names, fontsize=7)
    ax.set_ylim(-0.7, len(ratios) - 0.3)
    low, high = min(low_high.min(), 0.5), max(low_high.max(), 2.0)
    ax.set_xlim(low / 1.1, high * 1.1)
    ticks = [t for t in (0.1, 0.2, 0.25, 0.33, 0.5, 0.67, 0.8, 1, 1.25, 1.5, 2, 3, 4, 5, 10) if low / 1.1 <= t <= high * 1.1]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.xaxis.set_minor_formatter(plt_null_formatter())
    ax.set_xlabel(f"<- {sides[0]}        ratio (log)        {sides[1]} ->", fontsize=8)
    ax.set_title(title, fontsize=8)
    ax.tick_params(axis="x", labelsize=7)


def plt_null_formatter():
    from matplotlib.ticker import NullFormatter

    return NullFormatter()


def plot_ratios(path: Path, results: dict) -> bool:
    """ratios.png from ratio_figure; False when there is nothing to draw."""
    fig = ratio_figure(results)
    if fig is None:
        return False
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return True


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
def measure(row: dict) -> float:
    """What a row times: the step in ms (train, infer) or the whole training command in s (fit)."""
    return row["wall_s"] if row["task"] == "fit" else row["step_ms_median"]


def normalised_rounds(row: dict) -> np.ndarray | None:
    """A row's round medians in units of the driver's reference product timed just before each round (None for a fit row
    or a file written before the reference was recorded): what a slower or faster machine moment changes in both alike."""
    reference = row.get("reference_ms_rounds")
    if row["task"] == "fit" or not reference or len(reference) != len(row["step_ms_rounds"]):
        return None
    return np.array(row["step_ms_rounds"]) / np.array(reference)


def interval_or_range(values: np.ndarray) -> list[float]:
    """The median's confidence interval; with fewer than 6 values (too few for one), their min-max."""
    interval = median_interval(values)
    return [float(values.min()), float(values.max())] if interval is None else list(interval[:2])


def changed(old: list[float] | None, new: list[float] | None, change: float | None) -> str | None:
    """'slower' or 'faster' when the two intervals do not overlap and the change is beyond MARGIN, else None."""
    if old is None or new is None or change is None or abs(math.log(change)) <= math.log(1 + MARGIN):
        return None
    return "slower" if new[0] > old[1] else "faster" if new[1] < old[0] else None


DIFF_METHOD = (f"A row is flagged when its step time, in units of the reference product the driver timed before each round (a "
               f"{MARGIN:.0%} margin aside), changed beyond both runs' {CONFIDENCE:.0%} intervals of the median: the reference cancels "
               "what made the whole machine slower or faster between the runs. A JAX/torch ratio is flagged on the same rule.")


def diff_records(old: dict, new: dict) -> dict:
    """Row by row and ratio by ratio: old, new, new / old and whether that is a change (DIFF_METHOD).

    Rows match on arch, variant, task, mode, precision, batch size and device;
    when each file holds one device and they differ (a CPU run against a GPU
    run), on all but the device.
    """
    devices = [sorted({r["device"] for r in results["rows"]}) for results in (old, new)]
    across = len(devices[0]) == len(devices[1]) == 1 and devices[0] != devices[1]  # one device each: CPU against GPU

    def key(r: dict) -> tuple:
        return r["arch"], r["variant"], r["task"], r["mode"] + precision_label(r), r["batch_size"], "" if across else r["device"]

    old_rows, new_rows = {key(r): r for r in old["rows"]}, {key(r): r for r in new["rows"]}
    records = [diff_row(old_rows[k], new_rows[k]) for k in old_rows if k in new_rows]
    ratios = ratio_changes(old, new)
    flagged = sum(r["flag"] is not None for r in records)
    summary = [f"{flagged} of {len(records)} matched rows ({flagged / max(len(records), 1):.0%}) changed beyond the noise (the method below)"]
    if ratios:
        agree = sum(abs(x["change"] - 1) <= RATIO_AGREEMENT for x in ratios)
        same = sum(x["old"]["verdict"] == x["new"]["verdict"] for x in ratios)
        summary += [f"the JAX/torch ratios of {agree} of {len(ratios)} rows ({agree / len(ratios):.0%}) agree within {RATIO_AGREEMENT:.0%}",
                    f"the verdicts of {same} of {len(ratios)} rows ({same / len(ratios):.0%}) are the same"]

    def where(results: dict) -> str:
        devices = sorted({r["device_name"] for r in results["rows"]})
        return f"{results['machine']['cpu']}; {', '.join(devices)}; " + ", ".join(f"{k} {v}" for k, v in sorted(results["versions"].items()))

    return {"old": {"where": where(old)}, "new": {"where": where(new)}, "across_devices": across, "method": DIFF_METHOD,
            "rows": records, "ratios": ratios, "summary": summary,
            "only_old": [describe_key(k) for k in old_rows if k not in new_rows],
            "only_new": [describe_key(k) for k in new_rows if k not in old_rows]}


def diff_row(o: dict, n: dict) -> dict:
    """One matched row of a diff: absolute and normalised new / old, each run's interval, and the flag.

    Rows of files without the reference (written before it was recorded) are
    judged on their round medians as they are, and say n/a for the normalised change.
    """
    old_value, new_value = measure(o), measure(n)
    old_norm, new_norm = normalised_rounds(o), normalised_rounds(n)
    normalised_change = None
    if old_norm is not None and new_norm is not None:
        normalised_change = float(np.median(new_norm) / np.median(old_norm))
    elif o["task"] != "fit":
        old_norm, new_norm = np.array(o["step_ms_rounds"]), np.array(n["step_ms_rounds"])
    old_interval, new_interval = (interval_or_range(old_norm), interval_or_range(new_norm)) if o["task"] != "fit" else (None, None)
    judged = normalised_change if normalised_change is not None else None if o["task"] == "fit" else new_value / old_value
    return {**{k: o[k] for k in ("arch", "variant", "task", "mode", "batch_size")}, "precision": precision_of(o), "device": n["device"],
            "old_ms": old_value, "new_ms": new_value, "change": new_value / old_value, "normalised_change": normalised_change,
            "old_interval": old_interval, "new_interval": new_interval, "flag": changed(old_interval, new_interval, judged)}


def ratio_changes(old: dict, new: dict) -> list[dict]:
    """The two runs' JAX/torch ratios, matched, with their intervals and verdicts, recomputed from each file's rows."""
    old_ratios = {ratio_key(x): x for x in jax_over_torch(old["rows"])}
    out = []
    for n in jax_over_torch(new["rows"]):
        if (o := old_ratios.get(ratio_key(n))) is None:
            continue
        side = lambda x: {"estimate": x["estimate"], "interval": x["interval"] or x["spread"], "verdict": x["verdict"]}  # noqa: E731
        change = n["estimate"] / o["estimate"]
        flag = changed(side(o)["interval"], side(n)["interval"], change)
        out.append({k: n[k] for k in ("arch", "variant", "task", "batch_size", "precision")} | {
            "old": side(o), "new": side(n), "change": change, "flag": None if flag is None else "changed"})
    return out


def diff_lines(old: dict, new: dict, old_path: Path, new_path: Path) -> list[str]:
    """The diff as Markdown: both files, the summary, the ratios, the rows, the unmatched rows and the method."""
    d = diff_records(old, new)
    lines = [f"- old: {old_path}: {d['old']['where']}", f"- new: {new_path}: {d['new']['where']}"]
    lines += ["- matching the rows across devices (one device in each file)"] if d["across_devices"] else []
    lines += [f"- {sentence}" for sentence in d["summary"]]
    if d["ratios"]:
        lines += ["", "| arch | task | batch | old jax-jit / best torch [interval] | old verdict | new | new verdict | new / old | changed |",
                  "|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {label(x['arch'], x['variant'])}{precision_label(x)} | {x['task']} | {x['batch_size']} | {ratio_text(x['old'])} | "
                  f"{x['old']['verdict']} | {ratio_text(x['new'])} | {x['new']['verdict']} | {x['change']:.2f} | {x['flag'] or 'no'} |"
                  for x in d["ratios"]]
    lines += ["", "| arch | task | mode | batch | old (ms, or s for fit) | new | new / old | new / old, in reference units | changed |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in d["rows"]:
        normalised = "n/a" if r["normalised_change"] is None else f"{r['normalised_change']:.2f}"
        lines.append(f"| {label(r['arch'], r['variant'])} | {r['task']} | {r['mode']}{precision_label(r)} | {r['batch_size']} | "
                     f"{r['old_ms']:.3f} | {r['new_ms']:.3f} | {r['change']:.2f} | {normalised} | {'yes: ' + r['flag'] if r['flag'] else 'no'} |")
    for name in ("old", "new"):
        if d[f"only_{name}"]:
            lines.append(f"- only in the {name} file: " + ", ".join(d[f"only_{name}"]))
    return lines + ["", d["method"]]


def ratio_text(x: dict) -> str:
    low, high = x["interval"]
    return f"{x['estimate']:.2f} [{low:.2f}-{high:.2f}]"


def describe_key(k: tuple) -> str:
    """arch, variant, task, mode, batch size and (unless the CPU) device, as the diff names a row."""
    return f"{label(k[0], k[1])} {k[2]} {k[3]} batch {k[4]}" + (f" {k[5]}" if k[5] not in ("", "cpu") else "")


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
        if not x:
            return ""
        low, high = x.get("interval") or x["spread"]
        return f"{x['estimate']:.2f} [{low:.2f}-{high:.2f}] {x.get('verdict', '')}".rstrip()

    lines = ["| architecture | train: JAX / torch | infer: JAX / torch |", "|---|---|---|"]
    return lines + [f"| {name(k)} | {cell(v.get('train'))} | {cell(v.get('infer'))} |" for k, v in ratios.items()]


def rounds_text(settings: dict) -> str:
    """'12 interleaved rounds', and in how many processes when more than one (files written before --processes: one)."""
    processes = min(settings.get("processes", 1), settings["repeats"])
    return f"{settings['repeats']} interleaved rounds" + (f" in {processes} processes" if processes > 1 else "")


def headline(results: dict, json_link: str) -> list[str]:
    """The headline table and, under it, how it was measured, where and when, linking the results page beside `json_link`."""
    return [*headline_table(results), "", f"JAX's step time (jax-jit) over torch's best mode's (below 1: JAX faster), Hodges-Lehmann estimate "
                                          f"[{interval_name(results)}] over {rounds_text(results['settings'])}, and the verdict "
                                          f"([how](docs/benchmark.md#verdicts)). {provenance(results)}; "
                                          f"[results page]({json_link.removesuffix('.json')}.md)."]


def interval_name(results: dict) -> str:
    """What the brackets of a ratio hold: its confidence interval, or the min-max where the rounds are too few for one."""
    ratios = results["summary"]["jax_over_torch"]
    if ratios and all(x.get("interval") for x in ratios):
        return f"{min(x['coverage'] for x in ratios):.0%} interval"
    return "min-max"


def cpu_gap_note(results: dict) -> list[str]:
    """Under a CPU run's verdicts: where the page that splits JAX's CPU gap into what the repository closes and what is upstream is."""
    if not any(r.get("device") == "cpu" for r in results["rows"]):
        return []
    return ["", "Where JAX's CPU time goes, per architecture: how much of each gap the repository's own layers close and what "
                "is left to XLA, with reproducers and upstream reports ([cpu-performance.md](../cpu-performance.md#the-gap-per-architecture))."]


def results_page(results: dict, json_name: str) -> str:
    """A run's results page: what was run, where and when, the headline ratios, every row, and the summary."""
    lines = [f"# Benchmark results: {results['machine']['cpu']}, {results.get('date', 'undated')[:10]}", "",
             f"Generated by `python benchmarks/compare.py --report docs/results/{json_name}` from that results file; do not edit.", "",
             f"- date: {results.get('date', 'not recorded')}; commit: {results.get('commit') or 'not recorded'}",
             *machine_lines(results), "", "## JAX / torch", "", *headline_table(results), "",
             f"JAX's step time (jax-jit) over torch's best mode's, round by round (below 1: JAX faster): Hodges-Lehmann estimate [{interval_name(results)}] "
             "over the rounds, and the verdict.", "", "```", *verdict_lines(results), "```", *cpu_gap_note(results),
             "", "## Every row", "", *table(results["rows"])]
    fits = fit_table(results["rows"])
    lines += ["", "## Time to result", "", *fits] if fits else []
    return "\n".join(lines + ["", "## Summary", "", *summary_lines(results)]) + "\n"


def write_results_page(results: dict, source: Path, folder: Path) -> list[Path]:
    """docs/results/<stem>.md from `results`, with its results file beside it (a copy, or the file itself rewritten)."""
    stem = page_stem(results)
    folder.mkdir(parents=True, exist_ok=True)
    json_path, page = folder / f"{stem}.json", folder / f"{stem}.md"
    json_path.write_text(json.dumps(results, indent=1) + "\n")  # also over its source: the summary as this version computes it
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
