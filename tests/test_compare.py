"""benchmarks/compare.py end to end on a few steps, and what benchmarks/report.py makes of rows.

Each configuration is a process that imports its framework and compiles, so
runs are what costs: one sweep of the MLP (batch 8 and 1000, train and
infer, torch-eager and jax-jit, two rounds) serves most tests; torch.compile,
the interruption and the RNN's two forms have small runs of their own. The
report's arithmetic is checked on rows made up here.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from benchmarks import report
from benchmarks.compare import COLUMNS, build_parser, plan
from shared import machine
from tests.conftest import REPO_ROOT, unwritable_folder

MLP_LAYERS = [(784, 500), (500, 200), (200, 100), (100, 10)]
MLP_PARAMETERS = sum(i * o + o for i, o in MLP_LAYERS)  # 513,810
MLP_MACS = sum(i * o for i, o in MLP_LAYERS)  # forward multiply-adds per image
SWEEP = (8, 1000)


def compare(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "benchmarks/compare.py", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)


def run_compare(out, *args: str) -> tuple[dict, str]:
    proc = compare(*args, "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "results.json").read_text()), proc.stdout


def one_line_error(proc: subprocess.CompletedProcess, *words: str) -> str:
    """Exit status 2, no traceback, and one line starting "error:" that holds the words (after any progress lines)."""
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert "Traceback" not in proc.stderr and len(errors) == 1 and proc.stderr.strip().endswith(errors[0]), proc.stderr
    for word in words:
        assert word in errors[0], proc.stderr
    return errors[0]


SWEEP_ARGS = ("--arch", "mlp", "--mode", "torch-eager", "jax-jit", "--batch-size", *map(str, SWEEP),
              "--repeats", "2", "--steps", "10", "--max-time", "0.2", "--warmup", "1", "--malloc", "retain")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """(results, stdout, out folder) of the MLP sweep."""
    out = tmp_path_factory.mktemp("sweep")
    results, stdout = run_compare(out, *SWEEP_ARGS)
    return results, stdout, out


def row(results: dict, task: str, mode: str, batch: int) -> dict:
    (match,) = [r for r in results["rows"] if (r["task"], r["mode"], r["batch_size"]) == (task, mode, batch)]
    return match


# ---------------------------------------------------------------- the sweep
def test_every_configuration_is_a_row_with_the_documented_columns(sweep):
    results = sweep[0]
    assert [(r["task"], r["mode"], r["batch_size"]) for r in results["rows"]] == [
        (task, mode, batch) for batch in SWEEP for task in ("train", "infer") for mode in ("torch-eager", "jax-jit")
    ]
    for r in results["rows"]:
        assert set(COLUMNS) <= set(r), set(COLUMNS) - set(r)
        assert r["repeats"] == len(r["step_ms_rounds"]) == 2
        assert r["processes"] == len(set(r["worker_pids"])) == 1
        assert r["step_ms_spread"] == [min(r["step_ms_rounds"]), max(r["step_ms_rounds"])]
        assert r["step_ms_median"] == pytest.approx(float(np.median(r["step_ms_rounds"])))
        assert r["unstable"] == (r["step_ms_spread"][1] - r["step_ms_spread"][0] > 0.10 * r["step_ms_median"])
        assert r["samples_per_s"] == pytest.approx(r["batch_size"] / (r["step_ms_median"] / 1e3))
        assert r["timed_steps"] >= 2 * 3  # at least 3 a round
    assert results["schema_version"] == 2 and results["command"].startswith("python benchmarks/compare.py --arch mlp")
    assert results["machine"]["cpu"] and {"torch", "jax", "flax", "optax"} <= set(results["versions"])


def test_flops_are_the_analytic_counts(sweep):
    """Forward 2 FLOPs per multiply-add; training adds the weight gradients and every input gradient but the first layer's."""
    for batch in SWEEP:
        assert {row(sweep[0], "infer", m, batch)["flops_per_step"] for m in ("torch-eager", "jax-jit")} == {batch * 2 * MLP_MACS}
        train = batch * 2 * (2 * MLP_MACS + MLP_MACS - 784 * 500)
        assert {row(sweep[0], "train", m, batch)["flops_per_step"] for m in ("torch-eager", "jax-jit")} == {train}


def test_training_memory_holds_parameters_gradients_adam_and_an_activation(sweep):
    """At batch 1000 a step holds at least the parameters, their gradients and Adam's two moments (4 x 4 bytes each)
    and, while the first layer's weight gradient is formed, the gradient of its 1000 x 500 output."""
    bound_mb = (4 * 4 * MLP_PARAMETERS + 4 * 1000 * 500) / 2**20
    for mode in ("torch-eager", "jax-jit"):
        r = row(sweep[0], "train", mode, 1000)
        assert r["peak_mem_method"] == "VmHWM"
        assert r["peak_mem_mb"] >= bound_mb, (mode, r["peak_mem_mb"], bound_mb)
    for r in sweep[0]["rows"]:
        assert r["peak_mem_mb"] > 0
    for mode in ("torch-eager", "jax-jit"):  # inference keeps no gradients nor moments: less than training
        assert row(sweep[0], "infer", mode, 1000)["peak_mem_mb"] < row(sweep[0], "train", mode, 1000)["peak_mem_mb"]


def test_the_modes_compute_the_same_losses_and_outputs(sweep):
    for batch in SWEEP:
        eager, jit = row(sweep[0], "train", "torch-eager", batch), row(sweep[0], "train", "jax-jit", batch)
        assert jit["loss_agrees"] and abs(jit["first_loss"] - eager["first_loss"]) <= 1e-4 * eager["first_loss"]
        assert 2.0 < eager["first_loss"] < 2.6  # ln 10 = 2.30: ten classes, untrained
        infer = row(sweep[0], "infer", "jax-jit", batch)
        assert infer["outputs_agree"] and 0 <= infer["output_rel_diff"] <= 1e-4


def test_settings_that_change_speed_are_on_every_row(sweep):
    for r in sweep[0]["rows"]:
        if r["framework"] == "torch":
            assert r["settings"]["threads"] == r["threads"] and r["settings"]["float32_matmul_precision"] == "highest"
        else:
            assert "xla_flags" in r["settings"] and r["settings"]["default_matmul_precision"] in (None, "highest", "float32")


def test_summary_ratios_are_formed_round_by_round(sweep):
    results = sweep[0]
    for x in results["summary"]["jax_over_torch"]:
        jax, torch = row(results, x["task"], "jax-jit", x["batch_size"]), row(results, x["task"], "torch-eager", x["batch_size"])
        ratios = [j / t for j, t in zip(jax["step_ms_rounds"], torch["step_ms_rounds"])]
        assert x["estimate"] == pytest.approx(float(np.median(ratios))) and x["spread"] == pytest.approx([min(ratios), max(ratios)])
    assert len(results["summary"]["jax_over_torch"]) == 2 * len(SWEEP)


def test_scaling_says_where_throughput_stops_growing(sweep):
    results = sweep[0]
    curves = {(x["task"], x["mode"]): x for x in results["summary"]["scaling"]}
    assert set(curves) == {(t, m) for t in ("train", "infer") for m in ("torch-eager", "jax-jit")}
    for (task, mode), x in curves.items():
        rates = {b: row(results, task, mode, b)["samples_per_s"] for b in SWEEP}
        best = max(rates.values())
        assert x["saturates_at"] == min(b for b, s in rates.items() if s >= 0.9 * best)
        assert rates[1000] > rates[8]  # a batch of 8 leaves the cores idle: dispatch dominates


def test_table_markdown_and_charts_are_written(sweep):
    _, stdout, out = sweep
    assert "| mlp | train | jax-jit | float32 | 1000 |" in stdout and "jax-jit / best torch step time" in stdout
    assert "stops growing at batch" in stdout or "still growing at the largest batch, 1000" in stdout
    md = (out / "results.md").read_text()
    assert "versions:" in md and "torch 2.13.0" in md and "peak MB" in md
    for chart in ("results.png", "scaling.png"):
        assert (out / chart).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- resume and diff
def test_resume_of_a_finished_run_measures_nothing_again(sweep, tmp_path):
    results, _, out = sweep
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "results.json").write_text(json.dumps(results))
    again, _ = run_compare(copy, *SWEEP_ARGS, "--resume")
    assert [r["step_ms_rounds"] for r in again["rows"]] == [r["step_ms_rounds"] for r in results["rows"]]


def test_resume_refuses_other_settings_and_folders_without_results(sweep, tmp_path):
    _, _, out = sweep
    one_line_error(compare(*SWEEP_ARGS, "--repeats", "3", "--out", str(out), "--resume"), "--resume", "repeats")
    one_line_error(compare("--arch", "mlp", "--out", str(tmp_path), "--resume"), "--resume", "does not exist")


def test_diff_marks_changes_beyond_both_intervals_and_lists_unmatched_rows(sweep, tmp_path):
    """The sweep's rows (old), and the same with JAX's steps 3x slower in every round and one row gone (new): a change
    beyond both runs' round ranges (2 rounds: too few for an interval), and no change, in the same reference units."""
    old = json.loads(json.dumps(sweep[0]))
    new = json.loads(json.dumps(old))
    for r in new["rows"]:
        if r["framework"] == "jax":
            r["step_ms_median"] *= 3
            r["step_ms_rounds"] = [3 * v for v in r["step_ms_rounds"]]
    dropped = new["rows"].pop(0)
    (tmp_path / "old.json").write_text(json.dumps(old))
    (tmp_path / "new.json").write_text(json.dumps(new))
    proc = compare("--diff", str(tmp_path / "old.json"), str(tmp_path / "new.json"), "--out", str(tmp_path / "diff"))
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("| mlp |")]
    jax_lines = [line for line in lines if "| jax-jit |" in line]
    torch_lines = [line for line in lines if "| torch-eager |" in line]
    assert len(jax_lines) == 4 and all("| 3.00 | 3.00 | yes: slower |" in line for line in jax_lines), jax_lines
    assert len(torch_lines) == 3 and all("| 1.00 | 1.00 | no |" in line for line in torch_lines), torch_lines
    assert f"only in the old file: mlp {dropped['task']} {dropped['mode']} batch {dropped['batch_size']}" in proc.stdout
    assert "4 of 7 matched rows (57%) changed beyond the noise" in proc.stdout
    assert (tmp_path / "diff" / "diff.html").read_text().count("slower") >= 4


def test_a_worker_takes_its_configuration_as_its_first_json_line():
    """One channel: the configuration and then the commands, JSON lines on stdin; anything else first is an error event, exit 2."""
    worker = [sys.executable, "-m", "benchmarks.worker"]
    wrong = subprocess.run(worker, cwd=REPO_ROOT, input='{"cmd": "warmup"}\n', capture_output=True, text=True, timeout=60)
    assert wrong.returncode == 2 and json.loads(wrong.stdout)["event"] == "error" and "configure" in wrong.stdout
    config = {"job": "peak", "framework": "torch", "arch": "mlp", "variant": "default", "device": "cpu", "threads": 1}
    peak = subprocess.run(worker, cwd=REPO_ROOT, input=json.dumps({"cmd": "configure", "config": config}) + "\n",
                          capture_output=True, text=True, timeout=120)
    done = json.loads(peak.stdout.strip().splitlines()[-1])
    assert peak.returncode == 0 and done["event"] == "done" and done["matmul_n"] == 2048 and done["peak_gflops_per_s"] > 0


def test_diff_of_what_is_not_a_results_file_is_a_one_line_error(sweep, tmp_path):
    good = sweep[2] / "results.json"
    one_line_error(compare("--diff", str(good), str(tmp_path / "missing.json")), "missing.json", "no such file")
    (tmp_path / "bad.json").write_text("[1, 2")
    one_line_error(compare("--diff", str(tmp_path / "bad.json"), str(good)), "bad.json", "not a results file")
    (tmp_path / "list.json").write_text("[]")
    one_line_error(compare("--diff", str(good), str(tmp_path / "list.json")), "list.json", "schema_version")
    locked = unwritable_folder(tmp_path)
    one_line_error(compare("--diff", str(good), str(good), "--out", str(locked)), "--diff: cannot write", "diff.html")


def test_the_results_file_says_when_where_and_at_which_commit(sweep):
    results = sweep[0]
    git = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True)
    if git.returncode == 0:
        assert results["commit"].removesuffix("-dirty") == git.stdout.strip()
    else:  # a copy outside git: no commit rather than a made-up one
        assert results["commit"] is None
    assert results["date"][:4].isdigit() and results["date"][10] == "T"
    details = results["machine"]["cpu_details"]
    assert details["model_name"] == results["machine"]["cpu"] and set(details["flags"]) <= set(machine.SPEED_FLAGS)


def test_malloc_retain_reaches_every_process_and_the_summary(sweep):
    """--malloc retain reaches every row's process (each records what its own environment set) and the summary."""
    results, stdout, _ = sweep
    expected = machine.malloc_setting(machine.malloc_env("retain", {}))  # default away from glibc
    assert results["settings"]["malloc"] == "retain"
    assert {r["settings"]["malloc"] for r in results["rows"]} == {expected}
    assert f"glibc malloc of every row's process: {expected}" in stdout


def test_report_writes_the_results_page_and_the_readme_headline(sweep, tmp_path):
    """The page names machine, versions, date, commit and command, and its ratios are the summary's; --headline replaces only
    the README's generated block."""
    results, _, out = sweep
    readme = tmp_path / "README.md"
    readme.write_text("# A project\n\n<!-- headline: old -->\nold table\n<!-- /headline -->\n\n## After\n")
    proc = compare("--report", str(out / "results.json"), "--report-dir", str(tmp_path / "pages"), "--headline", str(readme))
    assert proc.returncode == 0, proc.stderr
    stem = report.page_stem(results)
    page = (tmp_path / "pages" / f"{stem}.md").read_text()
    assert json.loads((tmp_path / "pages" / f"{stem}.json").read_text()) == {**results, "summary": report.summary(results["rows"])}
    assert stem.endswith(results["date"][:10]) and results["machine"]["cpu"] in page and (results["commit"] or "not recorded") in page
    assert results["command"] in page and f"jax {results['versions']['jax']}" in page and f"torch {results['versions']['torch']}" in page
    for x in results["summary"]["jax_over_torch"]:
        column = 1 if x["task"] == "train" else 2
        (line,) = [line for line in page.splitlines() if line.startswith(f"| `mlp` batch {x['batch_size']} |")]
        cell = f"{x['estimate']:.2f} [{x['spread'][0]:.2f}-{x['spread'][1]:.2f}] too few rounds"  # 2 rounds: the min-max, no verdict
        assert [cell.strip() for cell in line.strip("|").split("|")][column] == cell
    text = readme.read_text()
    assert text.startswith("# A project\n\n<!-- headline: generated from pages/") and text.endswith("<!-- /headline -->\n\n## After\n")
    assert "old table" not in text and f"[results page](pages/{stem}.md)" in text and "| `mlp` batch 8 |" in text


def test_report_of_what_is_not_a_results_file_or_where_it_cannot_write_is_a_one_line_error(sweep, tmp_path):
    (tmp_path / "list.json").write_text("[]")
    one_line_error(compare("--report", str(tmp_path / "list.json")), "--report", "list.json", "schema_version")
    locked = unwritable_folder(tmp_path)
    one_line_error(compare("--report", str(sweep[2] / "results.json"), "--report-dir", str(locked / "pages")), "--report", "cannot write")
    (tmp_path / "README.md").write_text("no block here\n")
    proc = compare("--report", str(sweep[2] / "results.json"), "--report-dir", str(tmp_path), "--headline", str(tmp_path / "README.md"))
    one_line_error(proc, "--headline", "README.md", "no generated headline block")


def test_committed_results_pages_are_what_their_results_files_generate():
    """Each docs/results/*.json's page is the report of that file as it stands, and the README's headline is the one it names."""
    pages = REPO_ROOT / "docs" / "results"
    generated = sorted(pages.glob("*.json"))
    assert generated, "no generated results page in docs/results"
    for path in generated:
        results = json.loads(path.read_text())
        assert (pages / f"{path.stem}.md").read_text() == report.results_page(results, path.name), f"{path.stem}.md is stale or edited"
    readme = (REPO_ROOT / "README.md").read_text()
    start = readme.index("<!-- headline: generated from ") + len("<!-- headline: generated from ")
    link = readme[start:].split(" ", 1)[0]
    block = readme[readme.index("<!-- headline:"):readme.index(report.HEADLINE_END)]
    expected = "\n".join([report.HEADLINE_START.format(link), *report.headline(json.loads((REPO_ROOT / link).read_text()), link)])
    assert block == expected + "\n", "the README's headline is not the report of " + link


@pytest.mark.slow
def test_an_interrupted_run_keeps_its_rows_and_resume_measures_the_rest(tmp_path):
    args = ["--arch", "mlp", "--framework", "torch", "--mode", "torch-eager", "--task", "infer", "--batch-size", "8", "64", "512",
            "--repeats", "1", "--steps", "3", "--out", str(tmp_path)]
    proc = subprocess.Popen([sys.executable, "benchmarks/compare.py", *args], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (tmp_path / "results.json").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr and "--resume" in stderr.strip().splitlines()[-1]
    kept = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert 1 <= len(kept) < 3 and kept[0]["batch_size"] == 8
    resumed, _ = run_compare(tmp_path, *args[:-2], "--resume")
    assert [r["batch_size"] for r in resumed["rows"]] == [8, 64, 512]
    assert resumed["rows"][0]["step_ms_rounds"] == kept[0]["step_ms_rounds"]


# ---------------------------------------------------------------- other runs
@pytest.mark.slow
def test_torch_compile_rows_report_their_compile_time_apart(tmp_path):
    """Also --processes 2: each row's two rounds come from two processes, and compile_s from the first, which compiles."""
    results, _ = run_compare(tmp_path, "--arch", "vae_mlp", "--framework", "torch", "--repeats", "2", "--processes", "2", "--steps", "6", "--warmup", "2")
    assert all(r["processes"] == len(set(r["worker_pids"])) == 2 and len(r["step_ms_rounds"]) == 2 for r in results["rows"])
    eager, compiled = (row(results, "train", m, 100) for m in ("torch-eager", "torch-compile"))
    assert compiled["compile_s"] > 1 and eager["compile_s"] < compiled["compile_s"] / 10
    assert compiled["loss_agrees"] and row(results, "infer", "torch-compile", 100)["outputs_agree"]
    forward_macs = 784 * 500 + 2 * 500 * 5 + 5 * 500 + 500 * 784
    assert eager["flops_per_step"] == 100 * 2 * (2 * forward_macs + forward_macs - 784 * 500)


@pytest.mark.slow
def test_both_rnn_forms_and_their_speed_up(tmp_path):
    from benchmarks.inputs import benchmark_batches

    results, stdout = run_compare(tmp_path, "--arch", "rnn", "--mode", "torch-eager", "jax-jit", "jax-scan", "--repeats", "2", "--steps", "12")
    per_name = [r for r in results["rows"] if r["variant"] == "per-name" and r["mode"] != "jax-scan"]  # jax-scan: names of one length a call
    assert {r["batch_size"] for r in per_name} == {1} and all(r.get("loss_agrees", r.get("outputs_agree")) for r in results["rows"])
    warm, _ = benchmark_batches("rnn", "per-name", "train", 1, 3, 0)
    assert {r["warmup_steps"] for r in per_name if r["task"] == "train"} == {len(warm)}
    speedups = results["summary"]["batched_over_per_name"]
    for framework in ("torch", "jax"):
        names_per_s = {}
        for r in results["rows"]:
            if (r["framework"], r["task"]) == (framework, "train"):
                names_per_s[r["variant"]] = max(names_per_s.get(r["variant"], 0), r["samples_per_s"])
        assert speedups[framework] == pytest.approx(names_per_s["batched"] / names_per_s["per-name"])
    assert "rnn, torch: batched / per-name training names per second" in stdout


@pytest.mark.slow
def test_fit_trains_both_frameworks_from_one_initial_file(tmp_path):
    results, stdout = run_compare(tmp_path, "--task", "fit", "--arch", "mlp", "--fit-epochs", "2")
    fits = results["rows"]
    assert [r["framework"] for r in fits] == ["torch", "jax"]
    for r in fits:
        metrics = json.loads((tmp_path / "fit" / f"mlp-{r['framework']}-float32" / "metrics.json").read_text())
        assert r["quality_metric"] == "test_accuracy" and r["quality"] == metrics["final"]["test_accuracy"] > 0.5  # 2 epochs: 63%
        assert r["epochs"] == 2 and len(r["curve"]) == 2 and r["curve"][-1][0] <= r["wall_s"]
    assert abs(fits[0]["quality"] - fits[1]["quality"]) < 0.02  # the same initial weights, the same data order
    assert (tmp_path / "fit.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "| mlp | torch | float32 | 1000 | 2 |" in stdout


# ---------------------------------------------------------------- the plan and bad input
def test_the_default_run_covers_every_architecture_task_and_mode():
    from shared.hparams import HPARAMS, variants

    configs = plan(build_parser().parse_args([]))
    expected = {(a, v, t, m) for a in HPARAMS for v in variants(a) for t in ("train", "infer")
                for m in ("torch-eager", "torch-compile", "jax-jit", *(["jax-scan"] if t == "train" else []))}
    assert {(c["arch"], c["variant"], c["task"], c["mode"]) for c in configs} == expected
    assert len(configs) == len(expected) == 84 and {c["precision"] for c in configs} == {"float32"}  # CUDA graphs: GPU only
    on_gpu = plan(build_parser().parse_args(["--device", "gpu", "--arch", "mlp", "--precision", "float32", "bfloat16"]))
    assert {(c["task"], c["mode"], c["precision"]) for c in on_gpu} == {
        (t, m, p) for t in ("train", "infer") for p in ("float32", "bfloat16")
        for m in ("torch-eager", "torch-compile", "torch-compile-cudagraphs", "jax-jit", *(["jax-scan"] if t == "train" else []))}


def test_the_per_name_warm_up_compiles_every_name_length():
    """No timed step may compile: the warm-up holds one name of every length among the timed names."""
    from benchmarks.inputs import benchmark_batches

    for kind in ("train", "infer"):
        warm, timed = benchmark_batches("rnn", "per-name", kind, 1, 3, 0)
        lengths = {batch[0].shape for batch in timed}
        assert len(lengths) > 1 and lengths <= {batch[0].shape for batch in warm}


@pytest.mark.parametrize(
    "args, words",
    [
        (["--arch", "resnet"], ["resnet"]),
        (["--framework", "jax", "--mode", "torch-eager"], ["belongs to no framework"]),
        (["--arch", "mlp", "--batch-size", "0"], ["--batch-size", "positive"]),
        (["--arch", "mlp", "--batch-size", "64", "100000"], ["--batch-size 100000", "examples"]),
        (["--repeats", "0"], ["--repeats", "positive"]),
        (["--arch", "cnn", "--batch-size", "1", "64"], ["--batch-size 1", "cnn trains on batches of 2 or more"]),
        (["--task", "predict"], ["--task", "predict"]),
        (["--threads", "99"], ["--threads 99"]),
        (["--seed", "-1"], ["--seed", "from 0 to 2^63 - 1", "got -1"]),
        (["--seed", str(2**63)], ["--seed", "from 0 to 2^63 - 1"]),
        (["--seed", str(2**64)], ["--seed", "from 0 to 2^63 - 1"]),
        (["--arch", "mlp", "--devices", "500"], ["--devices 500: this machine has"]),
        (["--arch", "mlp", "--devices", "2", "--batch-size", "999"], ["--batch-size 999 is not divisible by --devices 2"]),
        (["--arch", "mlp", "--mode", "torch-ddp", "jax-sharded"], ["data-parallel modes run with --devices N"]),
        (["--arch", "mlp", "--mode", "torch-compile-cudagraphs"], ["--mode torch-compile-cudagraphs: CUDA graphs need a GPU (--device gpu)"]),
        (["--arch", "mlp", "--precision", "float16"], ["--precision", "float16"]),
        (["--arch", "mlp", "--compile-mode", "fastest"], ["--compile-mode", "fastest"]),
    ],
)
def test_bad_flags_are_one_line_errors(args, words, tmp_path):
    one_line_error(compare(*args, "--out", str(tmp_path), timeout=120), *words)


def test_an_unwritable_out_is_a_one_line_error_before_anything_runs(tmp_path):
    (tmp_path / "file").write_text("")
    one_line_error(compare("--arch", "mlp", "--out", str(tmp_path / "file"), timeout=120), "--out", "not a folder")
    one_line_error(compare("--arch", "mlp", "--out", str(tmp_path / "file" / "under"), timeout=120), "--out", "cannot write")
    locked = unwritable_folder(tmp_path)
    one_line_error(compare("--arch", "mlp", "--out", str(locked), timeout=120), "--out", "cannot write there")


@pytest.mark.slow
def test_gpu_without_a_gpu_is_a_one_line_error(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    proc = compare("--arch", "mlp", "--device", "gpu", "--out", str(tmp_path), timeout=120)
    assert one_line_error(proc) == "error: torch matmul peak on gpu: --device gpu: torch sees no CUDA device"


# ---------------------------------------------------------------- the report, on made-up rows
def made_up(mode: str, batch: int, rounds: list[float], task: str = "train") -> dict:
    framework = mode.split("-")[0]
    median = float(np.median(rounds))
    return {"arch": "mlp", "variant": "default", "task": task, "framework": framework, "mode": mode, "batch_size": batch,
            "device": "cpu", "step_ms_rounds": rounds, "step_ms_median": median, "step_ms_spread": [min(rounds), max(rounds)],
            "samples_per_s": batch / median * 1e3, "unstable": max(rounds) - min(rounds) > 0.1 * median, "loss_agrees": True}


def test_jax_over_torch_takes_the_best_torch_mode_in_each_round():
    rows = [made_up("torch-eager", 64, [10.0, 20.0, 10.0]), made_up("torch-compile", 64, [12.0, 8.0, 12.0]),
            made_up("jax-jit", 64, [5.0, 4.0, 6.0])]
    (x,) = report.jax_over_torch(rows)
    assert x["estimate"] == pytest.approx(0.5) and x["spread"] == pytest.approx([0.5, 0.6])  # 5/10, 4/8, 6/10


def test_data_parallel_rows_are_scaled_against_their_framework_on_one_device_round_by_round():
    rows = [made_up("torch-eager", 64, [10.0, 20.0, 10.0]), made_up("torch-compile", 64, [1.0, 1.0, 1.0]),
            {**made_up("torch-ddp", 64, [8.0, 10.0, 6.0]), "devices": 2}, made_up("jax-jit", 64, [5.0, 4.0, 6.0]),
            {**made_up("jax-sharded", 64, [5.0, 5.0, 6.0]), "devices": 2}]
    torch_ddp, jax_sharded = report.data_parallel(rows)
    assert torch_ddp["single_device_mode"] == "torch-eager"  # DDP's step is eager: torch.compile is not its yardstick
    assert torch_ddp["overhead"] == pytest.approx(0.6) and torch_ddp["overhead_spread"] == pytest.approx([0.5, 0.8])  # 8/10, 10/20, 6/10
    assert torch_ddp["scaling_efficiency"] == pytest.approx(1 / 1.2)
    assert jax_sharded["overhead"] == pytest.approx(1.0) and jax_sharded["scaling_efficiency"] == pytest.approx(0.5)
    (ratio,) = report.jax_over_torch(rows)  # single-device modes only
    assert ratio["estimate"] == pytest.approx(5.0)


@pytest.mark.slow
def test_data_parallel_rows_train_on_two_devices_and_agree(tmp_path):
    results, stdout = run_compare(tmp_path, "--arch", "mlp", "--task", "train", "--mode", "torch-eager", "jax-jit", "torch-ddp",
                                  "jax-sharded", "--devices", "2", "--repeats", "2", "--steps", "10", "--warmup", "1")
    assert [(r["mode"], r["devices"]) for r in results["rows"]] == [("torch-eager", 1), ("jax-jit", 1), ("torch-ddp", 2), ("jax-sharded", 2)]
    assert all(r["loss_agrees"] for r in results["rows"])  # the same first-step loss on one device and on two
    assert "processes" in row(results, "train", "torch-ddp", 1000)["device_name"] and "x 2 devices" in row(results, "train", "jax-sharded", 1000)["device_name"]
    assert [x["mode"] for x in results["summary"]["data_parallel"]] == ["torch-ddp", "jax-sharded"]
    assert "torch-ddp on 2 devices / torch-eager on one" in stdout


def test_saturation_is_the_smallest_batch_within_ten_percent_of_the_best():
    rows = [made_up("jax-jit", b, [b / s * 1e3]) for b, s in [(1, 100.0), (8, 700.0), (64, 950.0), (512, 1000.0)]]
    (x,) = report.scaling(rows)
    assert x["saturates_at"] == 64 and x["samples_per_s"]["8"] == pytest.approx(700.0)
    assert report.saturation(x) == "stops growing at batch 64 (within 10% of its best)"
    (y,) = report.scaling(rows[:3])  # 1, 8, 64: the best is the largest
    assert report.saturation(y) == "still growing at the largest batch, 64"


def test_diff_matches_across_devices_when_each_file_has_one():
    cpu = {"machine": {"cpu": "a CPU"}, "versions": {}, "rows": [{**made_up("jax-jit", 64, [10.0]), "device_name": "cpu"}]}
    gpu = {"machine": {"cpu": "a CPU"}, "versions": {},
           "rows": [{**made_up("jax-jit", 64, [1.0]), "device": "gpu", "device_name": "a GPU"}]}
    lines = report.diff_lines(cpu, gpu, "cpu.json", "gpu.json")
    assert any("| 0.10 | n/a | yes: faster |" in line for line in lines) and not any("only in" in line for line in lines)


@pytest.mark.slow
def test_bfloat16_and_scan_rows_agree_and_are_timed_against_their_float32_and_jit_rows(tmp_path):
    """The MLP autoencoder (a 2 ms step): torch eager, jax-jit and jax-scan (8 steps a call), in float32 and bfloat16."""
    results, stdout = run_compare(tmp_path, "--arch", "autoencoder", "--variant", "mlp", "--task", "train", "--precision", "float32", "bfloat16",
                                  "--mode", "torch-eager", "jax-jit", "jax-scan", "--repeats", "2", "--steps", "32", "--warmup", "1")
    rows = {(r["mode"], r["precision"]): r for r in results["rows"]}
    assert len(rows) == 6 and all(r["loss_agrees"] for r in rows.values())
    for precision in ("float32", "bfloat16"):  # the first of 8 scanned steps is jit's first step, and compilation is timed apart
        scan, jit = rows["jax-scan", precision], rows["jax-jit", precision]
        assert scan["first_loss"] == pytest.approx(jit["first_loss"], rel=1e-6) and scan["compile_s"] > 0 and scan["warmup_steps"] == 8
    for mode in ("torch-eager", "jax-jit", "jax-scan"):  # bfloat16 rounds: near float32's first loss, not equal to it
        assert 0 < rows[mode, "bfloat16"]["first_loss_vs_float32"] < 1e-2
    summary = results["summary"]
    assert {(x["mode"], x["base_mode"], x["precision"]) for x in summary["overhead_free"]} == {("jax-scan", "jax-jit", p) for p in ("float32", "bfloat16")}
    assert {(x["mode"], x["base_precision"]) for x in summary["bfloat16_over_float32"]} == {(m, "float32") for m in ("torch-eager", "jax-jit", "jax-scan")}
    assert "jax-scan / jax-jit step time" in stdout and "bfloat16 / float32 step time" in stdout and "| bfloat16 |" in stdout


def test_scan_stacks_batches_of_one_shape_in_order_of_first_appearance():
    from benchmarks.worker import stacked

    batches = [(np.full((n, 3), i, np.float32), np.array([i])) for i, n in enumerate([5, 7, 5, 5, 7])]
    calls = stacked(batches, 2)
    assert [(b[0].shape, steps) for b, steps in calls] == [((2, 5, 3), 2), ((1, 5, 3), 1), ((2, 7, 3), 2)]
    assert [b[1].ravel().tolist() for b, _ in calls] == [[0, 2], [3], [1, 4]]  # the first call starts with the first batch


def test_bfloat16_and_overhead_free_rows_are_timed_against_their_base_round_by_round():
    rows = [made_up("jax-jit", 64, [10.0, 20.0, 10.0]), made_up("jax-scan", 64, [5.0, 4.0, 6.0]),
            {**made_up("jax-jit", 64, [5.0, 10.0, 4.0]), "precision": "bfloat16"}, made_up("torch-eager", 64, [10.0, 10.0, 10.0])]
    (scan,) = report.overhead_free(rows)
    assert scan["base_mode"] == "jax-jit" and scan["estimate"] == pytest.approx(0.5) and scan["spread"] == pytest.approx([0.2, 0.6])
    (bf16,) = report.bfloat16_over_float32(rows)
    assert bf16["mode"] == "jax-jit" and bf16["estimate"] == pytest.approx(0.5) and bf16["spread"] == pytest.approx([0.4, 0.5])
    ratios = {x.get("precision"): x["estimate"] for x in report.jax_over_torch(rows)}  # jax-jit's, per precision, never jax-scan's
    assert ratios == {"float32": pytest.approx(1.0)}


def test_the_summary_says_when_bfloat16_rows_ran_without_bfloat16_arithmetic():
    """The CPU's recorded flags decide: no avx512_bf16, amx_bf16 (x86) or bf16 (Arm), a warning naming the rows; with one, or
    without bfloat16 rows, or with no recorded flags (an older results file), none."""
    rows = [made_up("torch-eager", 64, [10.0, 10.0, 10.0]), {**made_up("torch-eager", 64, [12.0, 12.0, 12.0]), "precision": "bfloat16"}]

    def warning(flags, rows=rows):
        results = {"rows": rows, "summary": report.summary(rows), "machine": {"cpu_details": None if flags is None else {"flags": flags}}}
        return [line for line in report.summary_lines(results) if "without bfloat16 arithmetic" in line]

    assert len(warning(["avx2", "fma", "avx512f"])) == 1 and "its 1 bfloat16 rows" in warning(["avx2"])[0]
    for flags in (["avx2", "avx512_bf16"], ["amx_bf16"], ["asimd", "bf16"], None):
        assert warning(flags) == [], flags
    assert warning(["avx2"], rows=rows[:1]) == []


@pytest.mark.slow
def test_the_compile_mode_is_chosen_recorded_per_row_and_kept_by_a_resume(tmp_path):
    """--compile-mode reaches torch.compile (a mode it does not know would fail the run) and each torch row's settings; the summary
    names it; a resume with another mode refuses in one line."""
    args = ("--arch", "mlp", "--task", "infer", "--mode", "torch-eager", "torch-compile", "--repeats", "1", "--steps", "3", "--warmup", "1")
    results, stdout = run_compare(tmp_path, *args, "--compile-mode", "reduce-overhead")
    assert {r["mode"]: r["settings"]["compile_mode"] for r in results["rows"]} == {"torch-eager": "reduce-overhead", "torch-compile": "reduce-overhead"}
    assert results["settings"]["compile_mode"] == "reduce-overhead"
    assert "torch.compile mode of the torch-compile rows: reduce-overhead" in stdout
    assert {r["settings"]["malloc"] for r in results["rows"]} == {"default"} == {results["settings"]["malloc"]}  # glibc's own unless asked
    one_line_error(compare(*args, "--compile-mode", "max-autotune", "--resume", "--out", str(tmp_path)), "compile_mode", "reduce-overhead")
    one_line_error(compare(*args, "--compile-mode", "reduce-overhead", "--malloc", "retain", "--resume", "--out", str(tmp_path)), "malloc")
    one_line_error(compare("--compile-mode", "fastest"), "--compile-mode")


# ---------------------------------------------------------------- verdicts and the diff's judgement, on made-up rounds
def test_the_median_interval_is_scipys_sign_test_interval_and_covers_the_median_as_often_as_it_says():
    from scipy import stats

    rng = np.random.default_rng(0)
    for n in (6, 7, 10, 12, 15, 24):
        x = rng.lognormal(size=n)
        low, high, coverage = report.median_interval(x)
        expected = stats.quantile_test(x, q=float(np.median(x)), p=0.5).confidence_interval(report.CONFIDENCE)
        assert (low, high) == (expected.low, expected.high)
        assert coverage >= report.CONFIDENCE
    assert report.median_interval(np.ones(5)) is None  # 2 x 1/32 > 5%: no interval from 5 values
    samples = rng.lognormal(size=(4000, 12))  # true median 1: the interval holds it in its coverage of the draws, 96.1%
    covered = np.mean([low <= 1 <= high for low, high, _ in map(report.median_interval, samples)])
    assert abs(covered - report.median_interval(samples[0])[2]) < 0.015


def test_the_ratio_interval_is_where_scipys_exact_signed_rank_test_stops_rejecting():
    from scipy import stats

    rng = np.random.default_rng(1)
    for n in (6, 7, 10, 12, 20):
        ratios = rng.lognormal(0.2, 0.1, size=n)
        estimate, low, high, coverage = report.ratio_interval(ratios)
        alpha = 1 - coverage

        for end in (low, high):  # just outside an end the exact two-sided test rejects at 1 - coverage; just inside it does not
            outside, inside = (end * (1 - 1e-9), end * (1 + 1e-9)) if end == low else (end * (1 + 1e-9), end * (1 - 1e-9))
            p_outside, p_inside = (stats.wilcoxon(np.log(ratios) - np.log(c), method="exact").pvalue for c in (outside, inside))
            assert p_outside <= alpha + 1e-12 < p_inside
        assert coverage >= report.CONFIDENCE and low < estimate < high
        statistic = stats.wilcoxon(np.log(ratios) - np.log(estimate), method="exact").statistic  # min(T+, T-): balanced at the estimate
        assert statistic >= n * (n + 1) / 4 - 1
    assert report.ratio_interval(np.ones(5)) is None  # 2 x 1/32 > 5%: no interval from 5 rounds
    samples = rng.lognormal(0, 0.1, size=(4000, 12))  # symmetric about log 1: the interval holds 1 in its coverage of the draws
    covered = np.mean([low <= 1 <= high for _, low, high, _ in map(report.ratio_interval, samples)])
    assert abs(covered - report.ratio_interval(samples[0])[3]) < 0.015


def rounds_of(ratio: float, noise: float, n: int = 12, seed: int = 0) -> list[float]:
    return list(ratio * np.exp(np.random.default_rng(seed).normal(0, noise, n)))


def test_the_verdict_needs_the_whole_interval_beyond_the_margin():
    def verdict(jax_rounds):
        rows = [made_up("torch-eager", 64, [10.0] * len(jax_rounds)), made_up("jax-jit", 64, [10 * r for r in jax_rounds])]
        (x,) = report.jax_over_torch(rows)
        return x["verdict"]

    assert verdict(rounds_of(0.8, 0.02)) == "JAX faster" and verdict(rounds_of(1.25, 0.02)) == "torch faster"
    assert verdict(rounds_of(1.02, 0.01)) == "no clear difference"  # sure, but within the 5% margin
    assert verdict(rounds_of(1.3, 0.5)) == "no clear difference"  # beyond it, but the rounds are too noisy to say
    assert verdict([0.5, 0.5, 0.5]) == "too few rounds"


def with_reference(row: dict, reference: list[float]) -> dict:
    return {**row, "reference_ms_rounds": reference, "device_name": "cpu"}


def two_runs(old_rounds, new_rounds, old_reference, new_reference) -> dict:
    runs = [{"machine": {"cpu": "a CPU"}, "versions": {},
             "rows": [with_reference(made_up(mode, 64, [r * scale for r in rounds]), reference) for mode, scale in
                      (("torch-eager", 1.0), ("jax-jit", 0.5))]}
            for rounds, reference in ((old_rounds, old_reference), (new_rounds, new_reference))]
    return report.diff_records(*runs)


def test_the_diff_cancels_a_slower_machine_and_flags_a_slower_configuration():
    """A machine 40% slower in the new run (the reference product too) flags nothing; the steps 1.8x slower with the
    machine as it was (what --threads 1 does to a 2-core step) flags every row."""
    old, reference = rounds_of(10.0, 0.03), rounds_of(1.0, 0.03, seed=1)
    loaded = two_runs(old, [1.4 * t for t in rounds_of(10.0, 0.03, seed=2)], reference, [1.4 * r for r in rounds_of(1.0, 0.03, seed=3)])
    assert [r["flag"] for r in loaded["rows"]] == [None, None] and all(r["change"] > 1.3 for r in loaded["rows"])
    slower = two_runs(old, [1.8 * t for t in rounds_of(10.0, 0.03, seed=2)], reference, rounds_of(1.0, 0.03, seed=3))
    assert [r["flag"] for r in slower["rows"]] == ["slower", "slower"]
    assert slower["summary"][0].startswith("2 of 2 matched rows (100%)")
