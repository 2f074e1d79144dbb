"""Time every architecture in both frameworks: training and inference steps, memory, batch-size sweeps, repeated rounds.

    python benchmarks/compare.py                          # every architecture, train and infer, every mode, 3 rounds
    python benchmarks/compare.py --arch mlp cnn --batch-size 1 8 64 512
    python benchmarks/compare.py --task fit --arch mlp    # time to result: the training command in each framework
    python benchmarks/compare.py --devices 2              # also each framework's data-parallel training step on 2 devices
    python benchmarks/compare.py --precision float32 bfloat16   # every row in both precisions, bfloat16 / float32 by round
    python benchmarks/compare.py --diff OLD/results.json NEW/results.json

The project installed (pip install -e ., the README's set-up), it runs as
above; from the repository root, `python -m benchmarks.compare ...` runs it
from the source tree without installing it. Its processes start likewise,
as python -m in the repository root, so they import the driver's own tree.

Each configuration (architecture, variant, task, framework, mode, batch size)
runs in its own process (benchmarks/worker.py, JSON lines in and out), which loads and compiles once
and serves all its rounds. The processes of one architecture and batch size
load side by side, then warm up one at a time, then time in interleaved
rounds (A B C, A B C, ...) while the others wait, so that a slow minute of
the machine hits them alike; ratios are formed within a round. All rows of
an architecture start from the same weights and see the same batches, so
their first-step losses (training) or outputs (inference) must agree.
OUT/results.json is rewritten after every finished group, so an interrupted
run keeps what it measured and --resume continues it. See docs/benchmark.md.
"""
from __future__ import annotations

import os

# Before numpy loads OpenBLAS: its threads then sleep as soon as the driver's reference product (reference_ms) is done,
# instead of spinning into the next process's round (they slowed the step timed right after by 12-20%).
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import contextlib
import datetime
import json
import platform
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from benchmarks import report
from shared.contract import COMPILE_MODES, DATA_PARALLEL_MODES, GPU_MODES, MODES, PRECISIONS, SCAN_MODE
from shared.distributed import check_data_parallel
from shared.errors import UserError, run_cli
from shared.hparams import HPARAMS, label, variants
from shared.machine import MALLOC_SETTINGS, cpu_details, cpu_name, malloc_env, malloc_setting, source_commit
from shared.trainer import ArgumentParser, non_negative_int, positive_float, positive_int, prepare_out_dir, seed_int, write_json

SCHEMA_VERSION = 2  # rows without a precision (written before it was a column) are float32
TRAIN_MODES = (SCAN_MODE,)  # K training steps in one call: training rows only
ALL_MODES = [m for modes in MODES.values() for m in modes] + list(DATA_PARALLEL_MODES.values())
FIT_MODE = {f: modes[0] for f, modes in MODES.items()}  # what the training command runs: each framework's default
TASKS = ("train", "infer", "fit")
LOSS_AGREEMENT_RTOL = 1e-4  # first-step losses of one group, relative
OUTPUT_AGREEMENT_RTOL = 1e-4  # inference outputs, relative to the largest entry (float32 forward passes agree to ~1e-6)
# bfloat16 rows against the group's first bfloat16 row: each framework rounds its own operations to 8 bits (tests/tolerances.py)
AGREEMENT_RTOL = {"float32": {"loss": LOSS_AGREEMENT_RTOL, "outputs": OUTPUT_AGREEMENT_RTOL}, "bfloat16": {"loss": 2e-2, "outputs": 5e-2}}
UNSTABLE_SPREAD = 0.10  # a row whose median's confidence interval is wider than this, relative to the median
HANDOFF_PAUSE_S = 0.02  # between two processes' rounds: the last one's spinning threads go to sleep
REFERENCE_N, REFERENCE_CALLS = 512, 11  # the driver's yardstick before each round: 11 float32 512x512 matmuls (~15 ms on 2 cores)
ROOT = Path(__file__).resolve().parents[1]
KEY = ("arch", "variant", "task", "mode", "precision", "batch_size")  # a row's identity, within a results file and across two
PLAN_KEYS = ("arch", "variant", "task", "framework", "mode", "precision", "device", "batch_size", "repeats", "processes", "steps", "max_time",
             "warmup", "threads", "seed", "xla_flags", "compile_mode", "malloc", "fit_epochs", "devices")  # what --resume must find unchanged
COLUMNS = [
    "arch", "variant", "task", "framework", "mode", "precision", "device", "batch_size", "threads", "repeats",
    "step_ms_median", "step_ms_spread", "step_ms_p10", "step_ms_p90", "unstable", "compile_s", "samples_per_s",
    "flops_per_step", "gflops_per_s", "peak_gflops_per_s", "efficiency", "peak_mem_mb",
]  # every train and infer row has these; train rows also first_loss, final_loss; infer rows output_rel_diff


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python benchmarks/compare.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", nargs="+", choices=sorted(HPARAMS), default=sorted(HPARAMS))
    every_variant = sorted({v for arch in HPARAMS for v in variants(arch)})
    p.add_argument("--variant", nargs="+", choices=every_variant, help="only these variants (default: all; rnn: batched, per-name)")
    p.add_argument("--task", nargs="+", choices=TASKS, default=["train", "infer"],
                   help="train: a training step; infer: an inference step (eval mode, no gradient); fit: the training command to the end")
    p.add_argument("--framework", nargs="+", choices=sorted(MODES), default=sorted(MODES, reverse=True))
    p.add_argument("--mode", nargs="+", choices=ALL_MODES,
                   help=f"default: every mode of the device ({', '.join(GPU_MODES)} only on a GPU; {', '.join(TRAIN_MODES)} trains only; "
                        "the data-parallel modes with --devices N)")
    p.add_argument("--precision", nargs="+", choices=PRECISIONS, default=[PRECISIONS[0]],
                   help="float32 (default) and/or bfloat16 mixed precision (docs/precision.md): every row in each")
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    p.add_argument("--devices", type=positive_int, default=1, metavar="N",
                   help="N > 1: also each framework's data-parallel training step on N devices (torch-ddp: N processes; jax-sharded: "
                        "one process, N devices, on a CPU simulated), scaled against its single-device step at the same global batch")
    p.add_argument("--batch-size", nargs="+", type=positive_int,
                   help="one or more (a sweep); default: each architecture's training batch size (the per-name RNN always takes 1)")
    p.add_argument("--repeats", type=positive_int, default=12,
                   help="rounds per configuration, interleaved across the modes (6 at least for a verdict; docs/benchmark.md)")
    p.add_argument("--processes", type=positive_int, default=1,
                   help="processes per configuration, one after the other, the rounds split between them (default 1; docs/benchmark.md)")
    p.add_argument("--steps", type=positive_int, default=1000, help="timed steps per configuration at most, over all rounds")
    p.add_argument("--max-time", type=positive_float, default=1.5, help="seconds of timed steps per configuration at most (at least 3 steps a round)")
    p.add_argument("--warmup", type=non_negative_int, default=3, help="untimed steps first (the first one compiles)")
    p.add_argument("--threads", type=positive_int, default=len(os.sched_getaffinity(0)), help="CPU threads for every configuration")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the initial weights and batches, 0 to 2^63 - 1")
    p.add_argument("--xla-flags", default=None, metavar='"FLAGS"',
                   help="XLA_FLAGS for the JAX workers (default: the environment's XLA_FLAGS, else XLA's defaults)")
    p.add_argument("--compile-mode", choices=COMPILE_MODES, default=COMPILE_MODES[0],
                   help="torch.compile's mode for the torch-compile rows, recorded in each torch row's settings (default: default)")
    p.add_argument("--malloc", choices=MALLOC_SETTINGS, default=MALLOC_SETTINGS[0],
                   help="glibc malloc of every process, both frameworks: default, glibc's own (it maps a block over 32 MiB anew at "
                        "each allocation); retain keeps freed memory for the next step (docs/benchmark.md#glibc-malloc)")
    p.add_argument("--fit-epochs", type=positive_int, help="--task fit: epochs (default: each architecture's)")
    p.add_argument("--out", type=Path, default=Path("results") / "benchmark", help="output folder")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out, skipping what it measured")
    p.add_argument("--diff", nargs=2, type=Path, metavar=("OLD", "NEW"),
                   help="compare two results.json files row by row: on stdout and as OUT/diff.html; measures nothing")
    p.add_argument("--report", type=Path, metavar="RESULTS", help="write RESULTS's results page, docs/results/<cpu>-<date>.md, with a copy of "
                                                                  "RESULTS beside it; measures nothing")
    p.add_argument("--report-dir", type=Path, default=ROOT / "docs" / "results", metavar="DIR", help="--report: the folder of the page")
    p.add_argument("--headline", type=Path, metavar="README", help="--report: also replace README's generated headline table with this run's")
    return p


def write_report(args) -> None:
    """--report: a run's results page (and, with --headline, the README's headline table) from its results file."""
    results = load_results(args.report, "--report")
    results["summary"] = report.summary(results["rows"])  # from the rows, as the run wrote it (also for a file without one)
    if not results["summary"]["jax_over_torch"] and args.headline:
        raise UserError(f"--headline: {args.report} holds no JAX/torch ratio (it needs a train or infer row of each framework)")
    try:
        written = report.write_results_page(results, args.report, args.report_dir)
        if args.headline:
            link = os.path.relpath(written[0], args.headline.resolve().parent)
            report.update_headline(args.headline, results, link)
            written.append(args.headline)
    except OSError as e:
        raise UserError(f"--report: cannot write {e.filename or args.report_dir} ({e.strerror})") from None
    except ValueError as e:
        raise UserError(f"--headline {e}") from None
    print("wrote " + ", ".join(map(str, written)), file=sys.stderr)


def write_diff(args) -> None:
    """--diff OLD NEW: the comparison on stdout, and as a page, OUT/diff.html."""
    from benchmarks import html_report

    old, new = (load_results(path, "--diff") for path in args.diff)
    print("\n".join(report.diff_lines(old, new, *args.diff)))
    page = args.out / "diff.html"
    try:
        html_report.write_diff_page(page, report.diff_records(old, new), str(args.diff[0]), str(args.diff[1]))
    except OSError as e:
        raise UserError(f"--diff: cannot write {e.filename or page} ({e.strerror})") from None
    print(f"wrote {page}", file=sys.stderr)


# ---------------------------------------------------------------- the plan
def plan(args) -> list[dict]:
    """Every configuration to run, grouped (in order) by architecture, variant and batch size."""
    if args.mode is None:
        args.mode = [m for m in ALL_MODES if args.device == "gpu" or m not in GPU_MODES]
    elif args.device == "cpu" and set(args.mode) & set(GPU_MODES):
        raise UserError(f"--mode {' '.join(sorted(set(args.mode) & set(GPU_MODES)))}: CUDA graphs need a GPU (--device gpu)")
    if not set(args.mode) & {m for f in args.framework for m in (*MODES[f], DATA_PARALLEL_MODES[f])}:
        raise UserError(f"--mode {' '.join(args.mode)} belongs to no framework in --framework {' '.join(args.framework)}")
    parallel_modes = [(f, DATA_PARALLEL_MODES[f]) for f in args.framework if DATA_PARALLEL_MODES[f] in args.mode]
    if args.devices == 1 and set(args.mode) <= set(DATA_PARALLEL_MODES.values()):
        raise UserError(f"--mode {' '.join(args.mode)}: the data-parallel modes run with --devices N, N > 1")
    if args.devices > 1:
        check_devices(args.devices, args.device)
    pairs = [(a, v) for a in args.arch for v in variants(a) if args.variant is None or v in args.variant or len(variants(a)) == 1]
    if not pairs:
        raise UserError(f"--variant {' '.join(args.variant)}: none of --arch {' '.join(args.arch)} has it")
    configs = []
    for arch, variant in pairs:
        hp = HPARAMS[arch][variant]
        fixed = getattr(hp, "batch_size_fixed", False)
        for batch_size in [hp.batch_size] if fixed or not args.batch_size else args.batch_size:
            for task in [t for t in TASKS if t in args.task]:
                if task == "fit":
                    modes = [(f, FIT_MODE[f]) for f in args.framework]
                else:
                    modes = [(f, m) for f in args.framework for m in MODES[f] if m in args.mode and (task == "train" or m not in TRAIN_MODES)]
                if task == "train" and args.devices > 1 and not fixed:
                    check_data_parallel(arch, variant, None, batch_size, args.devices)
                    modes += parallel_modes
                configs += [{"arch": arch, "variant": variant, "task": task, "framework": f, "mode": m, "precision": precision,
                             "batch_size": batch_size, "device": args.device, "devices": args.devices if m in report.SINGLE_DEVICE_MODE else 1}
                            for precision in args.precision for f, m in modes]
    check_batch_sizes(configs)
    return configs


def check_batch_sizes(configs: list[dict]) -> None:
    from benchmarks.inputs import benchmark_task, examples

    for c in {(c["arch"], c["variant"], c["task"], c["batch_size"]): c for c in configs}.values():
        task = benchmark_task(c["arch"], c["variant"])
        available = examples(task, "infer" if c["task"] == "infer" else "train")
        if c["batch_size"] > available:
            split = "test" if c["task"] == "infer" else "training"
            raise UserError(f"--batch-size {c['batch_size']}: {label(c['arch'], c['variant'])} has {available} {split} examples")
        if c["task"] != "infer" and c["batch_size"] < task.min_train_batch:
            raise UserError(f"--batch-size {c['batch_size']}: {label(c['arch'], c['variant'])} trains on batches of "
                            f"{task.min_train_batch} or more (its BatchNorm normalises over the batch); --task infer times it at any size")


def check_devices(devices: int, device: str) -> None:
    """--devices N: as many CPU cores (one replica each) or GPUs as the training commands ask for."""
    from shared.distributed import check_devices as check
    from shared.distributed import cpu_count

    if device == "cpu":
        check(devices, cpu_count(), "CPU cores (one replica each)")
    else:
        import torch  # the driver imports no JAX; torch's count of the CUDA devices stands for both

        check(devices, torch.cuda.device_count(), "CUDA devices")


def group_key(config: dict) -> tuple:
    return config["arch"], config["variant"], config["batch_size"]


def row_key(row: dict) -> tuple:
    return tuple(row[k] for k in KEY)


def plan_settings(args, configs: list[dict]) -> dict:
    """What defines a run's configuration set: --resume refuses a folder measured with other settings."""
    return {
        "arch": sorted({c["arch"] for c in configs}), "variant": sorted({c["variant"] for c in configs}),
        "task": sorted(args.task), "framework": sorted(args.framework), "mode": sorted({c["mode"] for c in configs}),
        "precision": sorted(args.precision),
        "device": args.device, "batch_size": args.batch_size, "repeats": args.repeats, "processes": args.processes, "steps": args.steps,
        "max_time": args.max_time, "warmup": args.warmup, "threads": args.threads, "seed": args.seed,
        "xla_flags": xla_flags(args), "compile_mode": args.compile_mode, "malloc": args.malloc, "fit_epochs": args.fit_epochs, "devices": args.devices,
    }


def xla_flags(args) -> str:
    """XLA_FLAGS of the JAX processes: --xla-flags, else the environment's (the project sets none: XLA's defaults)."""
    return os.environ.get("XLA_FLAGS", "") if args.xla_flags is None else args.xla_flags


# ---------------------------------------------------------------- the results file
def load_results(path: Path, what: str) -> dict:
    """A results.json of this schema, or a one-line error naming the file and what is wrong with it."""
    try:
        results = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{what} {path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{what} {path}: a folder, expected a results.json") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{what} {path}: not a results file ({type(e).__name__}: {e})") from None
    if not isinstance(results, dict) or results.get("schema_version") != SCHEMA_VERSION or not isinstance(results.get("rows"), list):
        raise UserError(f"{what} {path}: not a results file of benchmarks/compare.py (schema_version {SCHEMA_VERSION} with rows)")
    for row in results["rows"]:
        if isinstance(row, dict):
            row.setdefault("precision", PRECISIONS[0])
        if not isinstance(row, dict) or not set(KEY) <= set(row):
            raise UserError(f"{what} {path}: a row without {', '.join(KEY)}")
    results.setdefault("settings", {}).setdefault("precision", [PRECISIONS[0]])
    results["settings"].setdefault("compile_mode", COMPILE_MODES[0])  # written before it was a flag: torch.compile's default
    results["settings"].setdefault("processes", 1)  # written before it was a flag: one process per configuration
    results["settings"].setdefault("malloc", "default")  # written before it was a flag: glibc's own
    return results


def new_results(args, argv: list[str], configs: list[dict]) -> dict:
    return {
        "schema_version": SCHEMA_VERSION,
        "machine": {
            "cpu": cpu_name(), "cpu_details": cpu_details(), "cpus_available": len(os.sched_getaffinity(0)), "node": platform.node(),
            "platform": platform.platform(), "python": platform.python_version(),
        },
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),  # when the run began
        "commit": source_commit(ROOT),
        "versions": {},
        "command": " ".join(shlex.quote(a) for a in ["python", "benchmarks/compare.py", *argv]),
        "settings": plan_settings(args, configs),
        "peaks": {},
        "phases": {},
        "rows": [],
    }


def resumed_results(args, argv: list[str], configs: list[dict]) -> dict:
    path = args.out / "results.json"
    if not path.exists():
        raise UserError(f"--resume: {path} does not exist (nothing to continue; run without --resume)")
    results = load_results(path, "--resume")
    wanted = plan_settings(args, configs)
    for key in PLAN_KEYS:
        if results.get("settings", {}).get(key) != wanted[key]:
            raise UserError(
                f"--resume {args.out}: measured with another {key} ({results.get('settings', {}).get(key)!r} there, {wanted[key]!r} now)"
            )
    results["command"] = new_results(args, argv, configs)["command"]
    return results


# ---------------------------------------------------------------- worker processes
class ForkServer:
    """One framework's fork server (python -m benchmarks.worker --fork-server): it imports the framework once, then forks each configuration's process."""

    def __init__(self, framework: str, args, tmp: Path):
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.log = open(tmp / f"fork-server-{framework}.stderr", "w+")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.worker", "--fork-server", framework, str(args.threads), str(theirs.fileno())],
            pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
            env=worker_env(framework, args, tmp), cwd=ROOT,  # -m: the tree at cwd comes first on the worker's path
        )
        theirs.close()
        self.framework = framework

    def fork(self, fds: list[int]) -> int:
        """A new worker process with fds as its stdin, stdout and stderr; its pid."""
        try:
            socket.send_fds(self.sock, [b"fork"], fds)
            answer = self.sock.recv(64)
        except OSError:
            answer = b""
        if not answer:
            self.log.seek(0)
            lines = [line for line in self.log.read().splitlines() if line.strip()]
            raise UserError(f"the {self.framework} fork server stopped ({lines[-1] if lines else f'exit status {self.proc.poll()}'})")
        return int(answer)

    def close(self) -> None:
        self.sock.close()  # the server's loop ends
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


class Worker:
    """One configuration's process: JSON commands in, JSON events out; a failure there is a one-line error here.

    torch-ddp: process 0 of the configuration's `devices`, and the others
    (`followers`), which take their commands from it and whose output is not read.
    """

    def __init__(self, cfg: dict, tmp: Path, server: ForkServer, name: str | None = None):
        self.cfg, self.finished, self.followers = cfg, False, []
        self.name = name or f"{label(cfg['arch'], cfg['variant'])} {cfg['task']} {cfg['mode']}" + report.precision_label(cfg)
        if cfg.get("mode") == "torch-ddp":
            cfg = self.cfg = {**cfg, "rank": 0, "port": free_port()}
            with open(os.devnull, "w") as null:
                for rank in range(1, cfg["devices"]):
                    pid, stdin, stderr = self.start({**cfg, "rank": rank}, tmp, server, null.fileno())
                    stdin.close()  # a follower reads its configuration only
                    self.followers.append((pid, stderr))
        stdout, child_stdout = os.pipe()
        try:
            self.pid, self.stdin, self.stderr = self.start(cfg, tmp, server, child_stdout)
        finally:
            os.close(child_stdout)
        self.stdout = os.fdopen(stdout)

    @staticmethod
    def start(cfg: dict, tmp: Path, server: ForkServer, stdout: int):
        """A worker from `server` that writes its events to the fd `stdout`, configured over its stdin: (pid, its stdin, its stderr file)."""
        stem = "-".join(str(cfg.get(k, "")) for k in ("job", "framework", "arch", "variant", "task", "mode", "precision", "batch_size", "rank"))
        stderr = open(tmp / f"{stem}.stderr", "w+")  # noqa: SIM115 - closed in close()
        child_stdin, stdin = os.pipe()
        try:
            pid = server.fork([child_stdin, stdout, stderr.fileno()])
        finally:
            os.close(child_stdin)
        stdin = os.fdopen(stdin, "w")
        with contextlib.suppress(BrokenPipeError):  # it has exited already: expect() reports why
            stdin.write(json.dumps({"cmd": "configure", "config": cfg}) + "\n")
            stdin.flush()
        return pid, stdin, stderr

    def expect(self, event: str) -> dict:
        for line in self.stdout:
            if not line.startswith('{"event"'):
                continue  # a library's chatter on stdout
            message = json.loads(line)
            if message["event"] == "error":
                raise UserError(f"{self.name} on {self.cfg['device']}: {message['message']}")
            if message["event"] == event:
                self.finished = event == "done"
                return message
        self.finished = True  # its stdout closed: it has exited
        self.stderr.seek(0)
        lines = [line for line in self.stderr.read().splitlines() if line.strip()]
        last = lines[-1].removeprefix("error: ") if lines else "no message"
        raise UserError(f"{self.name} on {self.cfg['device']}: the worker stopped ({last})")

    def command(self, cmd: str, event: str, **fields) -> dict:
        try:
            self.stdin.write(json.dumps({"cmd": cmd, **fields}) + "\n")
            self.stdin.flush()
        except BrokenPipeError:
            pass  # it has exited: expect() reports why
        return self.expect(event)

    def close(self) -> None:
        for pid in [self.pid] * (not self.finished) + [pid for pid, _ in self.followers]:  # followers: done when process 0 is
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for stream in (self.stdin, self.stdout, self.stderr, *(stderr for _, stderr in self.followers)):
            with contextlib.suppress(OSError):
                stream.close()


def free_port() -> int:
    """A TCP port nobody listens on now, for a torch-ddp configuration's process group."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def worker_env(framework: str, args, tmp: Path) -> dict:
    """The environment of a framework's processes: --malloc, XLA's flags, and a JAX compilation cache of this run.

    The cache serves the small programs that initialise the models, which every
    process of an architecture compiles anew (4-9 s of a JAX process's start on
    a 2-core VM), and a configuration's later processes (--processes) their
    step; compile_s is the first process's, which compiles it.
    """
    env = malloc_env(args.malloc, {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": str(len(os.sched_getaffinity(0)))})
    if framework == "jax":
        env.update({"XLA_FLAGS": xla_flags(args), "JAX_COMPILATION_CACHE_DIR": str(tmp / "jax-cache"),
                    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"})
    return env


def measure_peak(framework: str, args, tmp: Path, server: ForkServer) -> float:
    worker = Worker({"job": "peak", "framework": framework, "arch": "vae_mlp", "variant": "default", "device": args.device,
                     "threads": args.threads}, tmp, server, name=f"{framework} matmul peak")
    try:
        return worker.expect("done")["peak_gflops_per_s"]
    finally:
        worker.close()


def run_group(group: list[dict], args, tmp: Path, servers: dict, peaks: dict, progress, phases: dict) -> list[dict]:
    """The group's rounds, split over `--processes` generations of its processes, one generation after the other.

    `phases` gets the wall seconds of each phase (load, warmup, rounds) over the generations, where a run's time goes.
    """
    from benchmarks.inputs import count_flops, write_initial_weights

    arch, variant, batch_size = group_key(group[0])
    init = tmp / f"{arch}-{variant}.safetensors"
    if not init.exists():
        write_initial_weights(arch, variant, args.seed, init)
    flops = {t: count_flops(arch, variant, t, batch_size, args.seed) for t in dict.fromkeys(c["task"] for c in group)}
    hp = HPARAMS[arch][variant]
    cfgs = [{**c, "job": "step", "warmup": max(args.warmup, 1), "threads": args.threads, "seed": args.seed, "lr": hp.lr,
             "compile_mode": args.compile_mode, "init": str(init), "outputs": str(tmp / outputs_file(c))} for c in group]
    shares = [list(s) for s in np.array_split(range(args.repeats), min(args.processes, args.repeats))]
    where = f"{label(arch, variant)} batch {batch_size}"
    generations = [run_generation(cfgs, share, where + (f", process {i + 1}/{len(shares)}" if len(shares) > 1 else ""), args, tmp, servers,
                                  progress, phases) for i, share in enumerate(shares)]
    rows = []
    for i, cfg in enumerate(cfgs):
        ours = [g[i] for g in generations]
        rounds = [times for g in ours for times in g["rounds"]]
        done = {**ours[-1]["done"], "peak_mem_mb": max(g["done"]["peak_mem_mb"] for g in ours)}
        row = make_row(cfg, ours[0]["ready"], rounds, done, peaks[cfg["framework"]], flops[cfg["task"]])  # compile_s: the first, cold
        row.update(processes=len(ours), worker_pids=[g["pid"] for g in ours], reference_ms_rounds=[r for g in generations for r in g[0]["reference"]])
        rows.append(row)
    check_agreement(rows, tmp)
    return rows


def run_generation(cfgs: list[dict], share: list[int], where: str, args, tmp: Path, servers: dict, progress, phases: dict) -> list[dict]:
    """One process per configuration: load them side by side, warm them up, time them in the interleaved rounds `share`
    (A B C, C B A, ... by round number), finish them. Per configuration: its pid, ready and done events, round times and
    the reference before each round."""
    began = time.perf_counter()
    workers = []
    try:
        for cfg in cfgs:
            workers.append(Worker(cfg, tmp, servers[cfg["framework"]]))
        progress.set_postfix_str(f"{where}: loading {len(workers)} processes")
        for w in workers:
            w.expect("loaded")
        phases["load_s"], began = phases.get("load_s", 0.0) + time.perf_counter() - began, time.perf_counter()
        progress.set_postfix_str(f"{where}: compiling, " + " beside ".join(
            dict.fromkeys(w.cfg["framework"] for w in workers)))
        ready = warm_up(workers)
        phases["warmup_s"], began = phases.get("warmup_s", 0.0) + time.perf_counter() - began, time.perf_counter()
        rounds, reference = {w.name: [] for w in workers}, []
        per_round = {"max_steps": -(-args.steps // args.repeats), "max_time": args.max_time / args.repeats}
        for r in share:
            progress.set_postfix_str(f"{where}: round {r + 1}/{args.repeats}")
            reference.append(reference_ms())
            time.sleep(HANDOFF_PAUSE_S)
            for w in workers if r % 2 == 0 else workers[::-1]:  # A B C, C B A, ...: a slow moment of the machine hits every mode alike
                rounds[w.name].append(w.command("round", "round", **per_round)["times"])
                time.sleep(HANDOFF_PAUSE_S)
        done = {w.name: w.command("finish", "done") for w in workers}
        phases["rounds_s"] = phases.get("rounds_s", 0.0) + time.perf_counter() - began
    finally:
        for w in workers:
            w.close()
    return [{"pid": w.pid, "ready": ready[w.name], "done": done[w.name], "rounds": rounds[w.name], "reference": reference} for w in workers]


def warm_up(workers: list[Worker]) -> dict[str, dict]:
    """Each worker's warm-up (its compilation), the frameworks side by side: one lane per framework, its processes one
    at a time: JAX's compiler works while torch's waits on g++. Nothing is timed meanwhile but the warm-up calls, whose
    compile_s therefore includes the other lane's share of the cores (docs/benchmark.md, "Warm-up")."""
    lanes = {}
    for w in workers:
        lanes.setdefault(w.cfg["framework"], []).append(w)

    def lane(members: list[Worker]) -> dict[str, dict]:
        return {w.name: w.command("warmup", "ready") for w in members}

    with ThreadPoolExecutor(len(lanes)) as pool:
        done = [pool.submit(lane, members) for members in lanes.values()]
        ready = {name: event for future in done for name, event in future.result().items()}  # a worker's error raises here
    time.sleep(HANDOFF_PAUSE_S)
    return ready


def reference_ms() -> float:
    """The driver's own yardstick of the machine's speed now, before a round: the median of REFERENCE_CALLS float32
    REFERENCE_N^2 matmuls (numpy, every CPU, whatever --threads says). --diff compares two runs' rows in its units."""
    a = np.random.default_rng(0).random((REFERENCE_N, REFERENCE_N), dtype=np.float32)
    times = []
    for _ in range(REFERENCE_CALLS):
        start = time.perf_counter()
        a @ a
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def make_row(cfg: dict, ready: dict, rounds: list[list[float]], done: dict, peak: float, flops: float) -> dict:
    """A row: the median over rounds of each round's median step, its confidence interval, the spread (min-max), the rest."""
    round_medians = [float(np.median(times)) for times in rounds]
    step_s = float(np.median(round_medians))
    interval = report.median_interval(round_medians)
    every = np.concatenate(rounds)
    row = {k: cfg[k] for k in ("arch", "variant", "task", "framework", "mode", "precision", "device", "batch_size", "threads", "devices")}
    row.update({
        "repeats": len(rounds),
        "timed_steps": int(len(every)),
        "step_ms_median": 1e3 * step_s,
        "step_ms_spread": [1e3 * min(round_medians), 1e3 * max(round_medians)],
        "step_ms_rounds": [1e3 * m for m in round_medians],
        "step_ms_interval": None if interval is None else [1e3 * interval[0], 1e3 * interval[1]],
        "step_ms_p10": 1e3 * float(np.percentile(every, 10)),
        "step_ms_p90": 1e3 * float(np.percentile(every, 90)),
        "unstable": (interval[1] - interval[0] if interval else max(round_medians) - min(round_medians)) > UNSTABLE_SPREAD * step_s,
        "compile_s": sum(max(seconds - steps * step_s, 0.0) for seconds, steps in ready["warmup_calls"]),
        "warmup_steps": ready["warmup_steps"],
        "samples_per_s": cfg["batch_size"] / step_s,
        "flops_per_step": flops,
        "gflops_per_s": flops / step_s / 1e9,
        "peak_gflops_per_s": peak,
        "efficiency": flops / (peak * 1e9 * step_s),
        "peak_mem_mb": done["peak_mem_mb"],
        "peak_mem_method": done["peak_mem_method"],
        "device_name": done["device_name"],
        "versions": done["versions"],
        "settings": done["settings"],
    })
    if cfg["task"] == "train":
        row.update(first_loss=ready["first_loss"], final_loss=done["final_loss"])
    return row


def outputs_file(row: dict) -> str:
    return f"outputs-{row['arch']}-{row['variant']}-{row['batch_size']}-{row['mode']}-{row['precision']}.npz"


def check_agreement(rows: list[dict], tmp: Path) -> None:
    """Every row against the first row of its task and precision: first-step losses (train) or first outputs (infer).

    The loss of the first step (same weights, same batch) must agree to
    AGREEMENT_RTOL[precision]["loss"], the inference outputs to
    AGREEMENT_RTOL[precision]["outputs"] of their largest entry, or the row is
    flagged: it did not compute the same thing. Final losses are not compared:
    the rows of a group take different numbers of steps. A bfloat16 row also
    says how far its first step is from float32's (`first_loss_vs_float32`).
    """
    reference = {}
    for row in rows:
        ref = reference.setdefault((row["task"], row["precision"]), row)
        rtol = AGREEMENT_RTOL[row["precision"]]
        if row["task"] == "train":
            row["first_loss_rel_diff"] = rel_diff(row["first_loss"], ref["first_loss"])
            row["loss_agrees"] = row["first_loss_rel_diff"] <= rtol["loss"]
            if (row["task"], PRECISIONS[0]) in reference and row["precision"] != PRECISIONS[0]:
                row["first_loss_vs_float32"] = rel_diff(row["first_loss"], reference[row["task"], PRECISIONS[0]]["first_loss"])
        else:
            ours, theirs = (np.load(tmp / outputs_file(r)) for r in (row, ref))
            row["output_rel_diff"] = max(max_rel_diff(ours[k], theirs[k]) for k in theirs.files)
            row["outputs_agree"] = row["output_rel_diff"] <= rtol["outputs"]


def rel_diff(loss, reference) -> float:
    """|loss - reference| / |reference|, the largest over a step's losses when it has several."""
    loss, reference = np.atleast_1d(np.asarray(loss, np.float64)), np.atleast_1d(np.asarray(reference, np.float64))
    return float(np.max(np.abs(loss - reference) / np.maximum(np.abs(reference), 1e-30)))


def max_rel_diff(output: np.ndarray, reference: np.ndarray) -> float:
    """max |output - reference| over max |reference|."""
    output, reference = np.asarray(output, np.float64), np.asarray(reference, np.float64)
    return float(np.max(np.abs(output - reference)) / max(float(np.max(np.abs(reference))), 1e-30))


# ---------------------------------------------------------------- time to result
def run_fit(group: list[dict], args, tmp: Path, progress) -> list[dict]:
    """The training command of each framework, from one initial weights file, to the end: wall time and quality."""
    from benchmarks.inputs import benchmark_task, write_initial_weights

    arch, variant, batch_size = group_key(group[0])
    task = benchmark_task(arch, variant)
    init = tmp / f"fit-{arch}-{variant}.safetensors"
    write_initial_weights(arch, variant, args.seed, init)
    cpus = sorted(os.sched_getaffinity(0))[: args.threads]
    rows = []
    for c in group:
        progress.set_postfix_str(f"{label(arch, variant)} fit: the {c['framework']} training command, to the end")
        out = args.out / "fit" / f"{label(arch, variant).replace('/', '-')}-{c['framework']}-{c['precision']}"
        cmd = [sys.executable, "-m", f"{c['framework']}_impl.train", arch, "--variant", variant, "--init", str(init),
               "--seed", str(args.seed), "--device", args.device, "--batch-size", str(batch_size), "--precision", c["precision"], "--out", str(out)]
        cmd += ["--epochs", str(args.fit_epochs)] if args.fit_epochs else []
        start = time.perf_counter()
        env = {**worker_env(c["framework"], args, tmp), "OMP_NUM_THREADS": str(args.threads)}
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, preexec_fn=lambda: os.sched_setaffinity(0, cpus))
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            lines = [line for line in proc.stderr.splitlines() if line.strip()]
            raise UserError(f"{label(arch, variant)} fit in {c['framework']}: {lines[-1] if lines else proc.returncode}")
        metrics = json.loads((out / "metrics.json").read_text())
        name, better = task.quality
        epochs = metrics["epochs"]
        rows.append({
            **{k: c[k] for k in ("arch", "variant", "task", "framework", "mode", "precision", "device", "batch_size")},
            "threads": args.threads,
            "wall_s": wall,
            "epochs": len(epochs),
            "epoch_s_median": float(np.median([e["seconds"] for e in epochs])) if epochs else None,
            "quality_metric": name, "quality_better": better, "quality": metrics["final"][name],
            "curve": [[e["elapsed_s"], e[name]] for e in epochs],
            "device_name": metrics["config"]["device"], "versions": metrics["config"]["versions"],
            "settings": {"malloc": malloc_setting(env)} | ({"xla_flags": xla_flags(args)} if c["framework"] == "jax" else {}),
        })
    return rows


# ---------------------------------------------------------------- the run
def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if args.diff:
        write_diff(args)
        return {}
    if args.report:
        write_report(args)
        return {}
    if args.headline:
        raise UserError("--headline: give the results file with --report RESULTS")
    if args.threads > len(os.sched_getaffinity(0)):
        raise UserError(f"--threads {args.threads}: only {len(os.sched_getaffinity(0))} CPUs are available")
    configs = plan(args)
    prepare_out_dir(args.out)  # before anything is measured
    results = resumed_results(args, argv, configs) if args.resume else new_results(args, argv, configs)
    measured = {row_key(r) for r in results["rows"]}
    todo = [c for c in configs if row_key(c) not in measured]
    groups: dict[tuple, list[dict]] = {}
    for c in todo:
        groups.setdefault((*group_key(c), c["task"] == "fit"), []).append(c)

    from tqdm import tqdm

    progress = tqdm(total=len(configs), initial=len(configs) - len(todo), unit="config", desc="benchmark", file=sys.stderr,
                    bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} configurations [{elapsed}<{remaining}] {postfix}")
    try:
        with tempfile.TemporaryDirectory() as tmp_name, contextlib.ExitStack() as stack:
            tmp = Path(tmp_name)
            frameworks = list(dict.fromkeys(c["framework"] for c in todo if c["task"] != "fit"))
            servers = {f: ForkServer(f, args, tmp) for f in frameworks}  # they import side by side
            for server in servers.values():
                stack.callback(server.close)
            for framework in frameworks:
                if framework not in results["peaks"]:
                    progress.set_postfix_str(f"measuring {framework}'s float32 matmul peak")
                    results["peaks"][framework] = measure_peak(framework, args, tmp, servers[framework])
            for (*_, fit), group in groups.items():
                phases = results["phases"].setdefault(" ".join(map(str, group_key(group[0]))) + (" fit" if fit else ""), {})
                rows = run_fit(group, args, tmp, progress) if fit else run_group(group, args, tmp, servers, results["peaks"], progress, phases)
                results["rows"] += rows
                for row in rows:
                    results["versions"].update(row["versions"])
                results["summary"] = report.summary(results["rows"])
                write_json(args.out / "results.json", results)  # atomically: an interruption keeps every finished group
                progress.update(len(rows))
    except UserError:
        progress.close()  # the error's line below the bar, not after it
        raise
    except KeyboardInterrupt:
        progress.close()
        print(f"interrupted: {len(results['rows'])} of {len(configs)} configurations are in {args.out / 'results.json'}; "
              f"the same command with --resume measures the rest", file=sys.stderr)
        raise SystemExit(130) from None
    progress.close()
    order = {row_key(c): i for i, c in enumerate(configs)}
    results["rows"].sort(key=lambda r: order.get(row_key(r), len(order)))
    results["summary"] = report.summary(results["rows"])
    write_json(args.out / "results.json", results)
    report.write(args.out, results)
    return results


if __name__ == "__main__":
    run_cli(main)
