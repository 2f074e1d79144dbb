"""One prepared GPU check: the environment, the parity tests on the GPU, the benchmark in every precision, within a time budget.

    python -m benchmarks.gpu_check                   # on a GPU machine: 8 minutes at most, results in results/gpu-check
    python -m benchmarks.gpu_check --dry-run         # anywhere: every step checked, nothing run on a GPU
    python -m benchmarks.gpu_check --out DIR --budget-s 600

It runs the project from this source tree, which need not be installed (run
from the repository root as above; python benchmarks/gpu_check.py only where
the project is installed), with the torch and JAX it finds (a GPU image's own
CUDA builds, whatever their versions), and installs nothing: a missing
dependency is reported with how to bring it to an offline machine. Its steps
run from the repository root too, compare.py as python -m benchmarks.compare.
The benchmark runs twice, the GPU table first: every architecture,
both tasks and precisions in each framework's plain mode (torch-eager,
jax-jit), then the compiled and overhead-free modes (torch-compile and its
CUDA graphs, jax-jit and jax-scan), whose compilations take most of the time.
The steps share the budget: the parity tests get a share of what is left, the
benchmark runs the rest; one still running when its time is spent is
interrupted (it keeps what it measured) and the summary says which
configurations were not measured and the --resume command that measures
them. OUT/summary.md is the page to read; docs/gpu.md says what each file holds.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import io
import json
import os
import platform
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
import xml.etree.ElementTree as ElementTree
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn

try:
    from shared.errors import EXIT_USER_ERROR, UserError, run_cli
    from shared.trainer import positive_float
except ModuleNotFoundError as e:  # python benchmarks/gpu_check.py where the project is not installed
    if e.name != "shared":
        raise
    print("error: the project is not installed here: run the check from the repository root as python -m benchmarks.gpu_check", file=sys.stderr)
    raise SystemExit(2) from None

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
DEFAULT_OUT = Path("results") / "gpu-check"
DEFAULT_BUDGET_S = 480.0  # 8 minutes of one GPU
FRAMEWORKS = ("torch", "jax", "jaxlib", "flax", "optax", "numpy")  # the versions environment.json records
DEV_TOOLS = ("pytest", "pytest-xdist", "hypothesis")  # of the dev extra: the runner, its workers (-n), hypothesis (the suite's fuzz tests)
IMPORT_NAMES = {"pytest-xdist": "xdist"}  # distribution -> module, where they differ
PARITY_FILES = "tests/test_parity_*.py"
PARITY_SHARE = 0.4  # of the time left after the environment: the parity tests (compile-bound), the benchmark gets the rest
TABLE_SHARE = 0.7  # of the time left after the parity tests: the first benchmark run (the table), the second gets the rest
BENCHMARK_LIMITS = ("--repeats", "6", "--max-time", "1")  # 6 rounds (the fewest with a verdict), 1 s a configuration: most of the table fits
# After SIGINT: pytest writes its report, compare.py stops its workers (its rows are on disk already: it saves after every group).
INTERRUPT_GRACE_S = 15.0
RESERVE_S = INTERRUPT_GRACE_S + 10  # kept back from the last step: its interruption and the summary
PROBE_TIMEOUT_S = 180.0  # one framework's import and first GPU contact (CUDA's start can take a minute)
GPU_ENV = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}  # several test processes share the GPU: JAX would take 75% of it each

TORCH_PROBE = """
import json, torch
cuda = torch.cuda.is_available()
print(json.dumps({"available": cuda, "device": torch.cuda.get_device_name(0) if cuda else None, "cuda_version": torch.version.cuda}))
"""
JAX_PROBE = """
import json, jax
try:
    gpus, reason = jax.devices("gpu"), None
except RuntimeError as e:  # no GPU platform in this jaxlib, or CUDA's libraries failed to start
    gpus, reason = [], str(e).splitlines()[0][:300]
print(json.dumps({"available": bool(gpus), "device_kind": gpus[0].device_kind if gpus else None, "count": len(gpus), "reason": reason}))
"""


# ---------------------------------------------------------------- the environment
@dataclass(frozen=True)
class Requirement:
    """A distribution the project needs, with the version its pyproject.toml pins or starts from."""

    name: str
    version: str | None = None

    @property
    def module(self) -> str:
        return IMPORT_NAMES.get(self.name, self.name.replace("-", "_"))

    def how_to_bring(self) -> str:
        spec = f"{self.name}=={self.version}" if self.version else self.name
        return (f"missing dependency {self.name} (import {self.module}): where there is a network, `pip download {spec} --no-deps -d wheels/`, "
                f"then here `pip install --no-deps wheels/*.whl`")


def parse_requirement(text: str) -> Requirement:
    """'torch==2.13.0', 'jax[cuda13]>=0.10.2' -> the name and the pinned or lowest version (stdlib only: the check needs no packaging)."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(?:(?:==|>=|~=)\s*([^,;\s]+))?", text)
    if not match:
        raise UserError(f"{PYPROJECT}: cannot read the requirement {text!r}")
    return Requirement(match.group(1).lower(), match.group(2))


def required_packages(pyproject: Path | None = None) -> list[Requirement]:
    """[project].dependencies, the dev extra's test tools, and jaxlib (JAX's compiled half, which jax requires)."""
    project = tomllib.loads((pyproject or PYPROJECT).read_text())["project"]
    dev = [parse_requirement(r) for r in project.get("optional-dependencies", {}).get("dev", [])]
    required = [parse_requirement(r) for r in project["dependencies"]] + [r for r in dev if r.name in DEV_TOOLS]
    jax = next((r for r in required if r.name == "jax"), None)
    return required + ([Requirement("jaxlib", jax.version)] if jax else [])


def missing_packages(required: list[Requirement]) -> list[Requirement]:
    """Those whose module is not found (looked up, not imported: importing torch or JAX here would start CUDA in this process)."""
    return [r for r in required if importlib.util.find_spec(r.module) is None]


def installed_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def probe(code: str, timeout_s: float = PROBE_TIMEOUT_S) -> dict:
    """What a framework says in a process of its own: this one never touches the GPU, whose memory the steps' processes need."""
    try:
        proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=timeout_s,
                              env={**os.environ, **GPU_ENV})
    except subprocess.TimeoutExpired:
        return {"available": False, "error": f"no answer within {timeout_s:.0f} s"}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode == 0 and lines:
        with contextlib.suppress(ValueError):  # not the probe's JSON line: reported below as what went wrong
            return json.loads(lines[-1])
    return {"available": False, "error": (proc.stderr.strip().splitlines() or lines or [f"exit status {proc.returncode}"])[-1]}


def inspect_environment(missing: list[Requirement]) -> dict:
    """Versions, missing dependencies, and what torch and JAX see of the GPU (probed side by side, unless a dependency is missing)."""
    env = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {name: installed_version(name) for name in FRAMEWORKS},
        "missing": [r.name for r in missing],
        "torch_cuda": None,
        "jax_gpu": None,
    }
    if not missing:
        with ThreadPoolExecutor(2) as pool:
            env["torch_cuda"], env["jax_gpu"] = pool.map(probe, (TORCH_PROBE, JAX_PROBE))
    return env


def versions_line(env: dict) -> str:
    return ", ".join([f"Python {env['python']}"] + [f"{name} {version or 'MISSING'}" for name, version in env["versions"].items()])


def gpu_findings(env: dict, dry_run: bool) -> tuple[list[str], list[str]]:
    """(failed checks, what was found) of the two probes; on a dry run, a GPU's absence is a finding, not a failure."""
    failures, found = [], []
    for framework, key, describe in (("torch", "torch_cuda", lambda p: f"{p['device']} (CUDA {p['cuda_version']})"),
                                     ("JAX", "jax_gpu", lambda p: f"{p['device_kind']} ({p['count']} device(s))")):
        result = env[key]
        if result is None:
            continue
        if result.get("error"):
            failures.append(f"{framework} could not be asked for its GPU: {result['error']}")
        elif result["available"]:
            found.append(f"{framework} sees {describe(result)}")
        elif dry_run:
            found.append(f"{framework}: no GPU here (dry run)")
        else:
            why = result.get("reason") or f"a CPU build of {framework.lower()}, or no GPU on this machine"
            failures.append(f"{framework} sees no GPU: {why} (docs/gpu.md)")
    return failures, found


# ---------------------------------------------------------------- the steps' commands
def parity_workers() -> int:
    """xdist workers of the parity step: one per CPU, at most 8 (each holds a CUDA context and JAX's compilations)."""
    return min(8, len(os.sched_getaffinity(0)))


def parity_command(junit_xml: str, device: str | None = "gpu") -> list[str]:
    """The default suite's parity tests (addopts' -m 'not slow' stays), on `device` (None: the default, as --collect-only checks them)."""
    files = sorted(str(p.relative_to(ROOT)) for p in ROOT.glob(PARITY_FILES))
    return [sys.executable, "-m", "pytest", *files, *(["--device", device] if device else []), "-p", "no:cacheprovider", "-q",
            "-n", str(parity_workers()), "--junitxml", junit_xml]


def load_compare():
    from benchmarks import compare

    return compare


def benchmark_runs(compare) -> dict[str, list[str]]:
    """The benchmark's two runs, by output folder, and their modes; together every single-device mode (data-parallel ones need
    --devices N > 1). First the table: each framework's plain mode (what the training command runs). Then the compiled modes and
    the overhead-free ones with the modes they are timed against (benchmarks/report.py OVERHEAD_FREE_BASE), in one run: their
    ratios are formed round by round."""
    from benchmarks.report import OVERHEAD_FREE_BASE

    single_device = [m for m in compare.ALL_MODES if m not in compare.DATA_PARALLEL_MODES.values()]
    plain = [m for m in single_device if m in compare.FIT_MODE.values()]
    paired = {*OVERHEAD_FREE_BASE, *OVERHEAD_FREE_BASE.values()}
    return {"benchmark": plain, "benchmark-overhead-free": [m for m in single_device if m in paired or m not in plain]}


def benchmark_argv(compare, out: str, modes: list[str]) -> list[str]:
    """compare.py's arguments: on the GPU, every precision, `modes`."""
    if not hasattr(compare, "PRECISIONS"):
        raise UserError("benchmarks/compare.py has no PRECISIONS: this check needs the compare.py that takes --precision")
    return ["--device", "gpu", "--precision", *compare.PRECISIONS, "--mode", *modes, *BENCHMARK_LIMITS, "--out", out]


def benchmark_command(argv: list[str]) -> list[str]:
    """compare.py as the tree's module, from the repository root (the steps' cwd): it needs the project installed only as a file."""
    return [sys.executable, "-m", "benchmarks.compare", *argv]


def plan_benchmark(compare, argv: list[str]) -> list[dict]:
    """compare.py's own parser and plan() on `argv`, in this process (no GPU touched): its configurations, or its one-line refusal."""
    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said):
            args = compare.build_parser().parse_args(argv)
    except SystemExit:
        raise UserError(f"compare.py refuses its arguments: {said.getvalue().strip().removeprefix('error: ')}") from None
    try:
        return compare.plan(args)
    except UserError as e:
        raise UserError(f"compare.py's plan refuses: {e}") from None


def shown(cmd: list[str], env: dict[str, str] | None = None) -> str:
    """A command as a shell line, `python` for this interpreter."""
    words = ["python" if word == sys.executable else word for word in cmd]
    return " ".join([*(f"{k}={v}" for k, v in (env or {}).items()), shlex.join(words)])


def out_argument(out: Path) -> str:
    """--out as the steps (run from the source tree) are given it: relative to the tree when inside it."""
    out = out.resolve()
    return str(out.relative_to(ROOT)) if out.is_relative_to(ROOT) else str(out)


def check_writable(out: Path) -> Path:
    """The folder, or the nearest existing one above it, takes a file (tried, then removed: root ignores modes); nothing is left."""
    folder = out
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise UserError(f"--out {out}: {folder} is not a folder")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise UserError(f"--out {out}: cannot write in {folder} ({e.strerror})") from None
    return folder


# ---------------------------------------------------------------- time
@dataclass
class Budget:
    """The check's seconds, counted from its start."""

    total_s: float
    start: float = field(default_factory=time.monotonic)

    def left(self) -> float:
        return self.total_s - (time.monotonic() - self.start)


def step_timeout(left_s: float, share: float, reserve_s: float = RESERVE_S) -> float:
    """A step's seconds: its share of what is left once the reserve for the last interruption and the summary is kept back."""
    return max(0.0, (left_s - reserve_s) * share)


@dataclass
class StepResult:
    command: list[str]
    timeout_s: float
    wall_s: float = 0.0
    returncode: int | None = None  # None: not run, the budget was spent
    stopped: bool = False  # interrupted at its deadline

    def outcome(self) -> str:
        if self.returncode is None:
            return "not run: the budget was spent"
        if self.stopped:
            return f"stopped at its deadline ({self.timeout_s:.0f} s) by SIGINT, exit status {self.returncode}"
        return "finished" if self.returncode == 0 else f"exit status {self.returncode}"


def run_step(cmd: list[str], log: Path, timeout_s: float, env: dict[str, str] | None = None) -> StepResult:
    """`cmd` from the source tree, its output into `log`, until it ends or `timeout_s` passes; then SIGINT, as a Ctrl-C."""
    result = StepResult(cmd, timeout_s)
    if timeout_s <= 0:
        return result
    start = time.monotonic()
    with log.open("w") as out:
        # A session of its own: what is left of it after an interruption can be stopped at once (xdist workers, compare.py's servers).
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, start_new_session=True)
        try:
            result.returncode = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            result.returncode, result.stopped = interrupt(proc), True
        except KeyboardInterrupt:  # the user's Ctrl-C reaches this process only: pass it on, then stop
            interrupt(proc)
            raise
    result.wall_s = time.monotonic() - start
    return result


def interrupt(proc: subprocess.Popen) -> int:
    """SIGINT (compare.py saves what it measured, pytest writes its report), then SIGKILL to whatever of its session is left."""
    proc.send_signal(signal.SIGINT)
    try:
        returncode = proc.wait(timeout=INTERRUPT_GRACE_S)
    except subprocess.TimeoutExpired:
        returncode = None
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    return proc.wait() if returncode is None else returncode


# ---------------------------------------------------------------- results
def parity_counts(junit_xml: Path) -> dict | None:
    """passed / failed / errors / skipped, and the failed tests' names, from pytest's JUnit XML (None: no readable file)."""
    try:
        root = ElementTree.parse(junit_xml).getroot()
    except (OSError, ElementTree.ParseError):
        return None
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    counts = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    failed = [f"{case.get('classname')}::{case.get('name')}" for case in root.iter("testcase")
              if case.find("failure") is not None or case.find("error") is not None]
    return {"passed": counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"], "failed": counts["failures"],
            "errors": counts["errors"], "skipped": counts["skipped"], "failed_tests": failed}


def parity_line(counts: dict | None) -> str:
    if counts is None:
        return "no report (parity.xml missing: see parity.log)"
    return f"{counts['passed']} passed, {counts['failed']} failed, {counts['errors']} errors, {counts['skipped']} skipped"


def unmeasured(configs: list[dict], rows: list[dict], row_key) -> list[dict]:
    """The planned configurations that have no row in the results."""
    measured = {row_key(r) for r in rows}
    return [c for c in configs if row_key(c) not in measured]


def not_measured_lines(missing: list[dict], key: tuple[str, ...], resume_command: str) -> list[str]:
    """A Markdown table of the configurations the budget left out, and the command that measures them."""
    if not missing:
        return []
    lines = [f"Not measured: {len(missing)} configuration(s); to measure them (from the source tree): `{resume_command}`", "",
             "<details><summary>the configurations not measured</summary>", "", "| " + " | ".join(key) + " |", "|" + "---|" * len(key)]
    lines += ["| " + " | ".join(str(c[k]) for k in key) + " |" for c in missing]
    return lines + ["", "</details>"]


def measured_rows(folder: Path) -> list[dict]:
    """The rows compare.py saved in FOLDER/results.json (after every finished group, so also when interrupted)."""
    path = folder / "results.json"
    return json.loads(path.read_text())["rows"] if path.is_file() else []


def benchmark_lines(table: list[str], planned: int, missing: list[dict], key: tuple[str, ...], finished: bool, resume_command: str,
                    folder: str = "benchmark") -> list[str]:
    """The measured rows' table (benchmarks.report's, as in results.md), a pointer to the full report, what is not measured."""
    lines = [f"{planned - len(missing)} of {planned} configurations measured.", ""] + (table or ["No configuration finished."])
    if finished:
        lines += ["", f"Every table, the summary and the charts: [{folder}/results.md]({folder}/results.md), {folder}/results.png."]
    return lines + [""] + not_measured_lines(missing, key, resume_command)


def gpu_line(env: dict) -> str:
    torch_cuda, jax_gpu = env["torch_cuda"] or {}, env["jax_gpu"] or {}
    return f"torch: {torch_cuda.get('device')} (CUDA {torch_cuda.get('cuda_version')}); JAX: {jax_gpu.get('device_kind')}"


def summary_markdown(env: dict, check_command: str, wall_s: float, budget_s: float, steps: dict[str, tuple[str, StepResult | float]],
                     parity: dict | None, benchmark: list[str]) -> str:
    """summary.md: the GPU and versions, each step's command, time and outcome, the parity counts, the benchmark table."""
    lines = ["# GPU check", "", f"{env['date']}: `{check_command}`, {wall_s:.0f} s of its {budget_s:.0f} s budget.", "",
             "| | |", "|---|---|", f"| GPU | {gpu_line(env)} |", f"| versions | {versions_line(env)} |",
             f"| parity on the GPU | {parity_line(parity)} |", "", "## Steps", "",
             "| step | command | wall time | outcome |", "|---|---|---|---|"]
    for name, (command, result) in steps.items():
        if isinstance(result, StepResult):
            lines.append(f"| {name} | `{command}` | {result.wall_s:.0f} s | {result.outcome()} |")
        else:
            lines.append(f"| {name} | {command} | {result:.0f} s | finished |")
    if parity and parity["failed_tests"]:
        lines += ["", "## Parity tests that failed on the GPU", ""] + [f"- `{name}`" for name in parity["failed_tests"]]
    return "\n".join(lines + ["", *benchmark]) + "\n"


# ---------------------------------------------------------------- the two ways to run
def say(message: str) -> None:
    print(f"gpu-check: {message}", flush=True)


def stop(failures: list[str]) -> NoReturn:
    """One line per failed check, exit status 2 (as shared.errors' one-line errors)."""
    for line in failures:
        print(f"error: {line}", file=sys.stderr)
    raise SystemExit(EXIT_USER_ERROR)


def collected_tests(cmd: list[str]) -> int:
    """pytest --collect-only on the parity step's files and flags: how many tests it would run, or its refusal."""
    with tempfile.TemporaryDirectory() as tmp:
        junit = cmd.index("--junitxml") + 1
        proc = subprocess.run([*cmd[:junit], str(Path(tmp) / "parity.xml"), *cmd[junit + 1 :], "--collect-only"], cwd=ROOT,
                              capture_output=True, text=True, timeout=600)
    counted = re.search(r"(\d+)(?:/\d+)? tests? collected", proc.stdout)
    if proc.returncode != 0 or not counted:
        last = (proc.stdout.strip().splitlines() or proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"pytest would not collect the parity tests (exit status {proc.returncode}): {last}")
    return int(counted.group(1))


def output_files(out_arg: str, runs: list[str]) -> list[str]:
    names = ["environment.json", "parity.log", "parity.xml"]
    names += [f"{run}{suffix}" for run in runs for suffix in (".log", "/results.json", "/results.md", "/results.png")]
    return [f"{out_arg}/{name}" for name in [*names, "summary.md"]]


def dry_run(out: Path, budget_s: float) -> list[str]:
    """Every check of the steps, nothing run on a GPU: the failed checks' lines (none: the check would start)."""
    failures: list[str] = []

    def attempt(check, *args):
        try:
            return check(*args)
        except UserError as e:
            failures.append(str(e))
        except ImportError as e:  # compare.py without its dependencies (reported above)
            failures.append(f"{check.__name__}: {e}")

    missing = missing_packages(required_packages())
    env = inspect_environment(missing)
    say(f"environment: {versions_line(env)}")
    failures += [r.how_to_bring() for r in missing]
    gpu_failures, found = gpu_findings(env, dry_run=True)
    failures += gpu_failures
    for line in found or ["GPU: not probed (a dependency is missing)"]:
        say(f"  {line}")
    out_arg = out_argument(out)
    parity = parity_command(f"{out_arg}/parity.xml")
    say(f"parity (at most {step_timeout(budget_s, PARITY_SHARE):.0f} s): {shown(parity, GPU_ENV)}")
    count = attempt(collected_tests, parity_command(f"{out_arg}/parity.xml", device=None))
    if count is not None:
        say(f"  collected without --device gpu: {count} tests")
    compare = attempt(load_compare)
    runs = benchmark_runs(compare) if compare else {}
    for i, (run, modes) in enumerate(runs.items()):
        argv = attempt(benchmark_argv, compare, f"{out_arg}/{run}", modes)
        if argv:
            share = f"{TABLE_SHARE:.0%} of what is left then" if i < len(runs) - 1 else "the rest of the budget"
            say(f"{run} ({share}): {shown(benchmark_command(argv))}")
            configs = attempt(plan_benchmark, compare, argv)
            if configs is not None:
                say(f"  compare.py plans {len(configs)} configurations")
    folder = attempt(check_writable, out)
    if folder:
        where = "takes files" if folder == out else f"can be made (in {folder}, which takes files)"
        say(f"output: {out} {where}; would write " + ", ".join(output_files(out_arg, list(runs))))
    return failures


def check(out: Path, budget_s: float, check_command: str) -> int:
    """The check on this machine's GPU: 0 when the parity tests passed and the benchmark ended or was stopped at the budget, else 1."""
    budget = Budget(budget_s)
    say(f"environment: looking for every dependency, asking torch and JAX for their GPU (budget {budget_s:.0f} s)")
    missing = missing_packages(required_packages())
    if missing:
        stop([r.how_to_bring() for r in missing])
    from shared.trainer import prepare_out_dir

    prepare_out_dir(out)
    compare = load_compare()
    runs = {run: benchmark_argv(compare, f"{out_argument(out)}/{run}", modes) for run, modes in benchmark_runs(compare).items()}
    plans = {run: plan_benchmark(compare, argv) for run, argv in runs.items()}  # before any GPU time: a refused plan stops the check here
    env = environment_step(out)
    steps: dict[str, tuple[str, StepResult | float]] = {"environment": ("probes of torch and JAX in processes of their own", budget.total_s - budget.left())}
    parity_cmd = parity_command(f"{out_argument(out)}/parity.xml")
    (out / "parity.xml").unlink(missing_ok=True)  # an earlier check's report must not pass for this one's
    parity = run_logged("parity", parity_cmd, out / "parity.log", step_timeout(budget.left(), PARITY_SHARE), GPU_ENV)
    steps["parity"] = (shown(parity_cmd, GPU_ENV), parity)
    counts = parity_counts(out / "parity.xml")
    say(f"parity: {parity_line(counts)}")
    lines, benchmarks_ended = [], True
    for i, (run, argv) in enumerate(runs.items()):
        bench_cmd = benchmark_command(argv)
        share = TABLE_SHARE if i < len(runs) - 1 else 1.0
        benchmark = run_logged(run, bench_cmd, out / f"{run}.log", step_timeout(budget.left(), share))
        steps[run] = (shown(bench_cmd), benchmark)
        lines += [f"## {BENCHMARK_TITLES.get(run, run)}", "", *benchmark_report(out / run, compare, plans[run], argv, benchmark.returncode == 0), ""]
        benchmarks_ended &= benchmark.returncode == 0 or benchmark.stopped
    (out / "summary.md").write_text(summary_markdown(env, check_command, budget.total_s - budget.left(), budget_s, steps, counts, lines))
    say(f"summary: {out / 'summary.md'} ({budget.total_s - budget.left():.0f} s in all)")
    parity_passed = parity.returncode == 0 and counts is not None
    return 0 if parity_passed and benchmarks_ended else 1


def environment_step(out: Path) -> dict:
    """Versions and what torch and JAX see, into OUT/environment.json; a framework that sees no GPU stops the check."""
    env = inspect_environment([])
    (out / "environment.json").write_text(json.dumps(env, indent=2) + "\n")
    gpu_failures, found = gpu_findings(env, dry_run=False)
    if gpu_failures:
        stop(gpu_failures)
    say(f"environment: {versions_line(env)}; {'; '.join(found)}")
    return env


BENCHMARK_TITLES = {"benchmark": "Benchmark: every architecture, torch-eager and jax-jit, float32 and bfloat16",
                    "benchmark-overhead-free": "Benchmark: torch.compile, CUDA graphs, jax-jit and jax-scan"}


def benchmark_report(folder: Path, compare, configs: list[dict], argv: list[str], finished: bool) -> list[str]:
    """A benchmark run's section of the summary from the rows compare.py saved in `folder`; what is not measured is printed
    with its --resume command."""
    from benchmarks import report

    rows = measured_rows(folder)
    missing = unmeasured(configs, rows, compare.row_key)
    resume = shown(benchmark_command([*argv, "--resume"]))
    say(f"{folder.name}: {len(configs) - len(missing)} of {len(configs)} configurations measured")
    if missing:
        say(f"{folder.name}: the other {len(missing)} are measured by {resume}")
    return benchmark_lines(report.table(rows) if rows else [], len(configs), missing, compare.KEY, finished, resume, folder.name)


def run_logged(name: str, cmd: list[str], log: Path, timeout_s: float, env: dict[str, str] | None = None) -> StepResult:
    """run_step with a progress line as the step starts and as it ends."""
    say(f"{name}: {shown(cmd, env)} (at most {timeout_s:.0f} s; output in {log})")
    result = run_step(cmd, log, timeout_s, env)
    say(f"{name}: {result.outcome()}" + (f" in {result.wall_s:.0f} s" if result.returncode is not None else ""))
    return result


def build_parser() -> argparse.ArgumentParser:
    from shared.trainer import ArgumentParser

    p = ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})")
    p.add_argument("--budget-s", type=positive_float, default=DEFAULT_BUDGET_S, help="seconds for the whole check (default: 480)")
    p.add_argument("--dry-run", action="store_true", help="check every step without a GPU and run none of them")
    return p


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if args.dry_run:
        failures = dry_run(args.out, args.budget_s)
        if failures:
            stop(failures)
        say("dry run: every check passed")
        return
    status = check(args.out, args.budget_s, shown([sys.executable, "-m", "benchmarks.gpu_check", *argv]))
    if status:
        raise SystemExit(status)


if __name__ == "__main__":
    run_cli(main)
