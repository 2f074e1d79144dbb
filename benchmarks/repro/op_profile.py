"""Where one step's time goes, operation by operation: torch.profiler against XLA:CPU's own trace of each operation.

    python -m benchmarks.repro.op_profile cnn                    # the training step; from the repository root
    python -m benchmarks.repro.op_profile mlp --task infer --top 6
    python -m benchmarks.repro.op_profile cnn --xla-flags=--xla_cpu_experimental_ynn_fusion_type=-individual_convolution

Each framework runs in a process of its own, built as the benchmark's worker builds its row (the same weights,
batches, batch size and threads): torch-eager against jax-jit. After the warm-up, --steps steps run under the
profiler. torch: torch.profiler's self CPU time of each aten operator. JAX: the events XLA:CPU records for each
operation of the compiled step (jax.profiler's trace, read back with jax.profiler.ProfileData), named by their HLO
instruction (XLA's own convolutions from their start to XLA's marker of their completion, "end: <instruction>": they
hand their work to the thread pool and return, so their event spans only the launch), and the compiled HLO (an XLA
dump in a temporary folder) says what each one is: a convolution, a dot, a fusion of which operations, or a
YNNPACK fusion. Printed per framework: the median step without the profiler and the minor page faults a step over
those steps (getrusage), the operations' time by kind (convolutions, products, data movement, the rest), and the top
operations with their time per step and their share of the operations' total.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

MODES = {"torch": "torch-eager", "jax": "jax-jit"}


def step_config(framework: str, arch: str, variant: str, task: str, tmp: Path) -> dict:
    """The benchmark worker's configuration of this row, at the architecture's batch size and seed 0."""
    from benchmarks.inputs import write_initial_weights
    from shared.hparams import HPARAMS

    hp = HPARAMS[arch][variant]
    init = tmp / "init.safetensors"
    write_initial_weights(arch, variant, 0, init)
    return {"job": "step", "framework": framework, "arch": arch, "variant": variant, "task": task, "mode": MODES[framework],
            "precision": "float32", "batch_size": hp.batch_size, "device": "cpu", "devices": 1, "warmup": 3,
            "threads": len(os.sched_getaffinity(0)), "seed": 0, "lr": hp.lr, "compile_mode": "default",
            "init": str(init), "outputs": str(tmp / "outputs.npz")}


def profile_torch(config, steps: int) -> list[dict]:
    """Self CPU time of each aten operator over `steps` steps (the profiler's own overhead on the ops' caller aside)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run_steps(config, steps)
    return [{"op": e.key, "ms": e.self_cpu_time_total / 1e3 / steps, "calls": e.count / steps, "what": ""}
            for e in prof.key_averages() if e.self_cpu_time_total > 0]


def profile_jax(config, steps: int, dump: Path) -> list[dict]:
    """XLA:CPU's events of each HLO instruction of the step's program over `steps` steps, and what each one is."""
    import jax
    from jax.profiler import ProfileData

    trace = dump / "trace"  # this process's own: a folder shared with other runs would hold their traces too
    jax.profiler.start_trace(str(trace))
    run_steps(config, steps)
    jax.profiler.stop_trace()
    starts: dict[str, dict[str, list[tuple[int, int]]]] = defaultdict(lambda: defaultdict(list))
    ends: dict[str, list[int]] = defaultdict(list)
    for plane in ProfileData.from_file(str(next(trace.rglob("*.xplane.pb")))).planes:
        for line in plane.lines:
            for event in line.events:
                stats = dict(event.stats)
                if "hlo_op" in stats:
                    starts[stats["hlo_module"]][stats["hlo_op"]].append((event.start_ns, event.duration_ns))
                elif event.name.startswith("end: "):
                    ends[event.name.removeprefix("end: ")].append(event.start_ns)
    module, ops = max(starts.items(), key=lambda kv: sum(d for calls in kv[1].values() for _, d in calls))  # the step's program
    instructions = hlo_instructions(dump, module)
    times = {name: until_completion(calls, ends[name]) if instructions.get(name, "").startswith("convolution ") else [d for _, d in calls]
             for name, calls in ops.items()}
    return [{"op": name, "ms": sum(ns) / 1e6 / steps, "calls": len(ns) / steps, "what": instructions.get(name, "")}
            for name, ns in times.items()]


def until_completion(calls: list[tuple[int, int]], ends: list[int]) -> list[int]:
    """Each call's nanoseconds from its start to the first completion marker after it not taken by an earlier call
    (its own event's end where no marker comes)."""
    ends, durations, taken = sorted(ends), [], 0
    for start, duration in sorted(calls):
        while taken < len(ends) and ends[taken] < start:
            taken += 1
        durations.append(max(duration, ends[taken] - start) if taken < len(ends) else duration)
        taken += taken < len(ends)
    return durations


def hlo_instructions(dump: Path, module: str) -> dict[str, str]:
    """{instruction name: what it is} from the optimised HLO of `module` in an XLA dump: the opcode and result shape,
    with a fusion's kind and the operations it fuses, a custom call's target, a convolution's layout and window."""
    path = next(dump.glob(f"*.{module}.*after_optimizations.txt"), None)
    if path is None:
        return {}
    computations, current, entry = {}, None, []
    for line in path.read_text().splitlines():
        if head := re.match(r"^(ENTRY )?%?([\w.\-]+) .*\{$", line):
            current = computations.setdefault(head.group(2), [])
            if head.group(1):
                entry = current
        elif current is not None and (inst := INSTRUCTION.match(line)):
            current.append(inst.groupdict() | {"line": line})
    described = {}
    for inst in entry:
        what = f"{inst['opcode']} {inst['shape'].split('{')[0]}"
        if called := re.search(r"calls=%?([\w.\-]+)", inst["line"]):
            body = computations.get(called.group(1), [])
            inside = sorted({i["opcode"] for i in body} - PLUMBING)
            kind = re.search(r"kind=(\w+)", inst["line"])
            what += f" ({kind.group(1) if kind else ''}{': ' if kind and inside else ''}{', '.join(inside)})"
            what += "".join(f"; {operands(i, body)}" for i in body if i["opcode"] in ("dot", "convolution"))
        elif inst["opcode"] in ("dot", "convolution"):
            what += f"; {operands(inst, entry)}"
        for key in ("custom_call_target", "dim_labels", "window"):
            if found := re.search(rf"{key}=(\"[^\"]*\"|\{{[^}}]*\}}|[\w>\-]+)", inst["line"]):
                what += f" {key}={found.group(1).strip(chr(34))}"
        described[inst["name"]] = what
    return described


def operands(inst: dict, computation: list[dict]) -> str:
    """'dot of f32[100,784] and f32[784,500]': a product's or convolution's operand shapes, looked up in its computation."""
    shapes = {i["name"]: i["shape"].split("{")[0] for i in computation}
    args = inst["line"].split(inst["opcode"] + "(", 1)[1].split(")", 1)[0]
    return f"{inst['opcode']} of " + " and ".join(shapes.get(name, name) for name in re.findall(r"%?([\w.\-]+)", args)[:2])


INSTRUCTION = re.compile(r"^\s+(?:ROOT )?%?(?P<name>[\w.\-]+) = (?P<shape>\S+) (?P<opcode>[\w\-]+)\(")
PLUMBING = {"parameter", "constant", "tuple", "get-tuple-element", "bitcast", "broadcast", "reshape", "copy"}


def run_steps(config, steps: int) -> list[float]:
    """`steps` steps through the row's timed batches; the seconds of each."""
    times = []
    for i in range(steps):
        start = time.perf_counter()
        config.call(config.timed[i % len(config.timed)][0])
        times.append(time.perf_counter() - start)
    return times


def child(framework: str, arch: str, variant: str, task: str, steps: int) -> dict:
    """In this process: the row's step, warmed up, timed plainly, then profiled."""
    from benchmarks.worker import Configuration, pin_threads

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        cfg = step_config(framework, arch, variant, task, tmp)
        pin_threads(cfg["threads"])
        config = Configuration(cfg)
        config.warm_up()
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        plain = 1e3 * statistics.median(run_steps(config, steps))
        faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / steps
        ops = profile_torch(config, steps) if framework == "torch" else profile_jax(config, steps, Path(os.environ["OP_PROFILE_DUMP"]))
    return {"step_ms": plain, "page_faults": faults, "ops": sorted(ops, key=lambda o: -o["ms"])}


def measure(framework: str, arch: str, variant: str, task: str, steps: int, xla_flags: str) -> dict:
    """One framework's profile, in a process of its own (JAX's with an XLA dump of the compiled step)."""
    with tempfile.TemporaryDirectory() as dump:
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "OP_PROFILE_DUMP": dump,
               "XLA_FLAGS": f"{xla_flags} --xla_dump_to={dump} --xla_dump_hlo_as_text".strip()}
        proc = subprocess.run([sys.executable, "-m", "benchmarks.repro.op_profile", "--child", framework, arch, variant, task, str(steps)],
                              env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"error: {arch}/{variant} {task} in {framework}: {(proc.stderr.strip().splitlines() or ['no output'])[-1]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(framework: str, result: dict, top: int) -> list[str]:
    """The top operations of one framework's step, and the rest in one line; JAX's with what XLA compiled each to."""
    jax = framework == "jax"
    total, rest = sum(o["ms"] for o in result["ops"]), result["ops"][top:]
    rows = [[f"`{o['op']}`", f"{o['calls']:g}", f"{o['ms']:.3f}", f"{o['ms'] / total:.0%}", *[o["what"]] * jax] for o in result["ops"][:top]]
    rest_ms = sum(o["ms"] for o in rest)
    rows.append([f"{len(rest)} others", "", f"{rest_ms:.3f}", f"{rest_ms / total:.0%}", *[""] * jax])
    head = [f"{MODES[framework]}: {'HLO instruction' if jax else 'aten operator'}", "calls a step", "ms a step", "share",
            *["what XLA compiled it to"] * jax]
    return ["| " + " | ".join(cells) + " |" for cells in [head, ["---"] * len(head), *rows]]


# What moves data without arithmetic: torch's operators by name, XLA's instructions (or every instruction a fusion holds).
TORCH_MOVES = re.compile(r"aten::(copy_|_to_copy|clone|contiguous|cat|stack|constant_pad_nd|pad|slice|narrow|select|index_select|"
                         r"transpose|permute|t|view|reshape|as_strided|expand|flatten|unsqueeze|squeeze|split|chunk)$")
XLA_MOVES = {"bitcast", "broadcast", "concatenate", "copy", "dynamic-slice", "dynamic-update-slice", "pad", "reshape", "slice", "transpose"}
KINDS = ("convolutions", "products", "data movement", "the rest")


def kind(framework: str, op: dict) -> str:
    """One of KINDS: an aten operator by its name, an HLO instruction by what it compiled to (a fusion by what it fuses)."""
    text = op["op"] if framework == "torch" else op["what"]
    if "conv" in text:
        return "convolutions"
    if re.search(r"aten::(addmm|mm|bmm|matmul)$|\bdot\b", text):
        return "products"
    if framework == "torch":
        return "data movement" if TORCH_MOVES.search(text) else "the rest"
    fused = re.search(r"\(k\w+: ([^)]*)\)", text)
    operations = {o.strip() for o in fused.group(1).split(",")} if fused else set(text.split()[:1])
    return "data movement" if operations and operations <= XLA_MOVES else "the rest"


def by_kind(framework: str, ops: list[dict]) -> str:
    """'jax-jit: convolutions 41.2 ms (32%) in 11 operations, products 3.1 ms (2%) in 4 operations, ...'."""
    total, groups = sum(o["ms"] for o in ops), defaultdict(list)
    for o in ops:
        groups[kind(framework, o)].append(o["ms"])
    return f"{MODES[framework]}: " + ", ".join(f"{name} {sum(groups[name]):.2f} ms ({sum(groups[name]) / total:.0%}) in {len(groups[name])} operations"
                                              for name in KINDS if groups[name])


def section(arch: str, variant: str, task: str, results: dict, top: int) -> list[str]:
    from shared.hparams import HPARAMS, label

    lines = [f"## {label(arch, variant)} {task}, batch {HPARAMS[arch][variant].batch_size}", ""]
    lines.append("; ".join(f"{MODES[f]} {r['step_ms']:.2f} ms a step and {r['page_faults']:,.0f} page faults a step (its operations "
                           f"under the profiler: {sum(o['ms'] for o in r['ops']):.2f} ms)" for f, r in results.items())
                 + f"; JAX / torch {results['jax']['step_ms'] / results['torch']['step_ms']:.2f}.")
    lines += ["", "By kind: " + "; ".join(by_kind(f, r["ops"]) for f, r in results.items()) + "."]
    for framework, result in results.items():
        lines += ["", *table(framework, result, top)]
    return [*lines, ""]


def header(argv: list[str], xla_flags: str) -> list[str]:
    import datetime
    import importlib.metadata

    from shared.machine import cpu_details, cpu_name, malloc_setting, source_commit

    details = cpu_details()
    versions = ", ".join(f"{p} {importlib.metadata.version(p)}" for p in ("torch", "jax", "flax", "optax"))
    return ["# Where a step's time goes, operation by operation", "",
            f"Generated by `python -m benchmarks.repro.op_profile {' '.join(argv)}` on "
            f"{datetime.date.today().isoformat()}, commit {source_commit(ROOT) or 'unknown'}: {cpu_name()}"
            f" ({', '.join(f'{k} {v}' for k, v in details.items() if k != 'flags')}; {' '.join(details.get('flags', []))}), "
            f"{len(os.sched_getaffinity(0))} CPUs, {versions}, XLA_FLAGS {xla_flags!r}, glibc malloc {malloc_setting(dict(os.environ))}.", "",
            "Per framework: the median step time without the profiler, and each operation's time a step and share of "
            "all operations' time (torch: an aten operator's self CPU time; JAX: XLA:CPU's events of an HLO instruction, "
            "which can overlap when XLA runs independent instructions side by side; for XLA's own convolutions, which run on "
            "the thread pool after their event, from its start to XLA's marker of their completion, waiting for the pool "
            "included), and the process's minor page faults a step (memory the kernel maps in, "
            "[why](../cpu-performance.md#page-faults)). [How to read it](../cpu-performance.md).", ""]


ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        framework, arch, variant, task, steps = argv[1:]
        print(json.dumps(child(framework, arch, variant, task, int(steps))))
        return
    from shared.hparams import HPARAMS, variants

    p = argparse.ArgumentParser(prog="python -m benchmarks.repro.op_profile", description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+", metavar="ARCH[/VARIANT]", help="for example cnn autoencoder/conv vae gan")
    p.add_argument("--task", choices=["train", "infer"], default="train")
    p.add_argument("--steps", type=int, default=20, help="steps timed and profiled (default 20)")
    p.add_argument("--top", type=int, default=8, help="operations listed per framework (default 8)")
    p.add_argument("--xla-flags", default=os.environ.get("XLA_FLAGS", ""), help="XLA_FLAGS of the JAX process")
    p.add_argument("--out", type=Path, help="write the page here (markdown); default: print it")
    args = p.parse_args(argv)
    lines = header(argv, args.xla_flags)
    for model in args.models:
        arch, _, variant = model.partition("/")
        if arch not in HPARAMS or (variant or variants(arch)[0]) not in variants(arch):
            p.error(f"{model}: not an architecture (one of {', '.join(sorted(HPARAMS))}, with /VARIANT where it has several)")
        variant = variant or variants(arch)[0]
        print(f"profiling {model} {args.task} ...", file=sys.stderr)
        results = {f: measure(f, arch, variant, args.task, args.steps, args.xla_flags) for f in MODES}
        lines += section(arch, variant, args.task, results, args.top)
    text = "\n".join(lines)
    if args.out:
        args.out.write_text(text)
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        print(text)


if __name__ == "__main__":
    main()
