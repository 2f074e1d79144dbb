"""benchmarks/html_report.py: the self-contained HTML pages of a run and of two runs compared, on results made up here (no benchmark runs)."""
from __future__ import annotations

import copy
from html.parser import HTMLParser
from pathlib import Path

import pytest

from benchmarks import html_report, report
from shared.hparams import label

ROOT = Path(__file__).resolve().parents[1]
MODES = {"torch-eager": ("torch", 1.0), "torch-compile": ("torch", 1.1), "jax-jit": ("jax", None)}
# JAX's step over torch's best, per (arch, task, batch): clearly below 1, clearly above, and around 1 (ratios wobbling 0.97-1.03).
JAX_FACTOR = {("mlp", "train", 64): 0.7, ("mlp", "train", 128): 1.0, ("mlp", "infer", 64): 1.4, ("mlp", "infer", 128): 0.75,
              ("rnn", "train", 64): 1.5, ("rnn", "infer", 64): 1.0}
ROUNDS = 12


class Page(HTMLParser):
    """The page as the tests read it: sections by id in order, each section's tables (rows of cell texts), every tag's attributes."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.order: list[str] = []
        self.tables: dict[str, list[list[list[str]]]] = {}
        self.row_classes: dict[str, list[list[str]]] = {}
        self.section: str | None = None
        self.cell: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "section":
            self.section = attrs.get("id")
            self.order.append(self.section)
        elif tag == "table" and self.section:
            self.tables.setdefault(self.section, []).append([])
            self.row_classes.setdefault(self.section, []).append([])
        elif tag == "tr" and self.section in self.tables:
            self.tables[self.section][-1].append([])
            self.row_classes[self.section][-1].append(attrs.get("class") or "")
        elif tag in ("td", "th"):
            self.cell = []

    def handle_endtag(self, tag):
        if tag == "section":
            self.section = None
        elif tag in ("td", "th") and self.cell is not None:
            if self.section in self.tables:
                self.tables[self.section][-1][-1].append("".join(self.cell).replace("\xa0", " ").strip())
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)


def row(arch: str, variant: str, task: str, mode: str, batch: int, rounds: list[float]) -> dict:
    framework = MODES[mode][0]
    return {"arch": arch, "variant": variant, "task": task, "framework": framework, "mode": mode, "precision": "float32", "device": "cpu",
            "batch_size": batch, "threads": 2, "devices": 1, "repeats": len(rounds), "step_ms_median": sorted(rounds)[len(rounds) // 2],
            "step_ms_spread": [min(rounds), max(rounds)], "step_ms_rounds": rounds,
            "step_ms_interval": list(report.median_interval(rounds)[:2]), "unstable": False, "compile_s": 0.5,
            "samples_per_s": batch / (sorted(rounds)[len(rounds) // 2] / 1e3), "peak_mem_mb": 50.0 + 10 * len(mode),
            "device_name": "Made-up CPU (2 threads)", "settings": {"threads": 2, "xla_flags": ""} if framework == "jax" else {"threads": 2},
            "loss_agrees": True, "outputs_agree": True, "first_loss_rel_diff": 0.0, "output_rel_diff": 0.0}


def made_up_results() -> dict:
    rows = []
    for (arch, task, batch), factor in JAX_FACTOR.items():
        variant = "batched" if arch == "rnn" else "default"
        torch_base = [10.0 + (i % 3) * 0.1 for i in range(ROUNDS)]
        for mode, (_, slower) in MODES.items():
            if slower is None:
                wobble = [1.03 if i % 2 else 0.97 for i in range(ROUNDS)] if factor == 1.0 else [1.0] * ROUNDS
                rounds = [t * factor * w for t, w in zip(torch_base, wobble)]
            else:
                rounds = [t * slower for t in torch_base]
            rows.append(row(arch, variant, task, mode, batch, rounds))
    results = {"schema_version": 2, "date": "2026-12-07T01:00:00+00:00", "commit": "0" * 40, "command": "python benchmarks/compare.py",
               "machine": {"cpu": "Made-up CPU", "cpus_available": 2, "platform": "Linux", "python": "3.11.7"},
               "versions": {"torch": "2.13.0+cpu", "jax": "0.10.2"},
               "settings": {"repeats": ROUNDS, "steps": 100, "max_time": 2.0, "warmup": 3}, "rows": rows}
    results["summary"] = report.summary(rows)
    return results


@pytest.fixture(scope="module")
def run_page(tmp_path_factory) -> tuple[dict, str, Page]:
    results = made_up_results()
    path = tmp_path_factory.mktemp("html") / "sub" / "report.html"  # the parent folder does not exist yet
    html_report.write_run_page(path, results)
    text = path.read_text(encoding="utf-8")
    return results, text, Page(text)


def first_class_line(path: Path) -> str:
    return next(line for line in path.read_text(encoding="utf-8").splitlines() if line.startswith("class "))


def test_made_up_rounds_give_every_verdict(run_page):
    results, _, _ = run_page
    assert {x["verdict"] for x in results["summary"]["jax_over_torch"]} == set(report.VERDICTS)


@pytest.mark.parametrize("arch", ["mlp", "rnn"])
def test_each_architecture_has_its_twin_files_side_by_side(run_page, arch):
    _, _, page = run_page
    section = f"arch-{arch}"
    assert section in page.order
    cells = {c for table in page.tables[section] for r in table for c in r}
    for folder in ("torch_impl", "jax_impl"):
        assert first_class_line(ROOT / folder / f"{arch}.py") in cells, f"{folder}/{arch}.py's first class line not in {section}"
    assert {f"torch_impl/{arch}.py", f"jax_impl/{arch}.py"} <= cells  # the two columns' headers


def test_verdicts_table_has_one_row_per_ratio_with_its_verdict(run_page):
    results, _, page = run_page
    (table,) = page.tables["verdicts"]
    header, body = table[0], table[1:]
    entries = results["summary"]["jax_over_torch"]
    assert len(body) == len(entries)
    column = {name: header.index(name) for name in ("architecture", "task", "batch", "verdict")}
    shown = {(r[column["architecture"]], r[column["task"]], r[column["batch"]]): r[column["verdict"]] for r in body}
    for x in entries:
        assert shown[(label(x["arch"], x["variant"]), x["task"], str(x["batch_size"]))] == x["verdict"]


def test_verdicts_come_first(run_page):
    _, _, page = run_page
    order = page.order
    first_code = min(i for i, ident in enumerate(order) if ident.startswith("arch-"))
    assert order.index("verdicts") < order.index("rows") < first_code
    assert order.index("verdicts") < order.index("ratios")


def test_run_page_is_self_contained(run_page):
    _, text, page = run_page
    assert not [a for tag, a in page.tags if tag == "script" and "src" in a]
    assert not [tag for tag, _ in page.tags if tag == "link"]
    for _, attrs in page.tags:
        for name in ("src", "href"):
            assert not (attrs.get(name) or "").startswith(("http://", "https://", "//")), attrs
    images = [a.get("src", "") for tag, a in page.tags if tag == "img"]
    assert images and all(src.startswith("data:") for src in images)  # the scaling chart: two batch sizes per architecture
    assert text.count("<svg") >= 2  # the ratio and memory charts


def test_a_missing_twin_file_is_said_not_failed():
    text = html_report.arch_section("no_such_arch", [])
    assert "Not found" in text and "torch_impl/no_such_arch.py" in text
    assert "Not found" in html_report.arch_section("../README", [])  # never a path outside the twin folders


def made_up_diff() -> dict:
    def diff_row(arch, task, mode, change, normalised, flag, interval=True):
        return {"arch": arch, "variant": "batched" if arch == "rnn" else "default", "task": task, "mode": mode, "precision": "float32",
                "batch_size": 64, "old_ms": 10.0, "new_ms": 10.0 * change, "change": change, "normalised_change": normalised,
                "old_interval": [0.9, 1.1] if interval else None, "new_interval": [0.9 * change, 1.1 * change] if interval else None, "flag": flag}

    side = {"estimate": 0.9, "interval": None, "verdict": "too few rounds"}
    return {"old": {"where": "old.json: Made-up CPU; torch 2.13.0"}, "new": {"where": "new.json: Made-up CPU; torch 2.13.0"},
            "across_devices": False, "method": "A row is flagged when <its> change exceeds both intervals.",
            "rows": [diff_row("mlp", "train", "torch-eager", 1.5, 1.45, "slower"), diff_row("mlp", "train", "jax-jit", 1.01, None, None, False),
                     diff_row("rnn", "infer", "jax-jit", 0.6, 0.62, "faster"), diff_row("rnn", "train", "torch-compile", 0.98, 0.99, None)],
            "only_old": ["mlp infer jax-scan batch 64"], "only_new": [],
            "ratios": [{"arch": "mlp", "variant": "default", "task": "train", "batch_size": 64, "precision": "float32", "old": side,
                        "new": {**side, "estimate": 1.3, "interval": [1.2, 1.4], "verdict": "torch faster"}, "change": 1.44, "flag": "changed"}],
            "summary": ["2 of 4 matched rows (50%) changed beyond the noise", "the verdicts of 0 of 1 rows (0%) are the same"]}


def test_diff_page_flags_exactly_the_flagged_rows(tmp_path):
    diff = made_up_diff()
    path = tmp_path / "new" / "diff.html"
    html_report.write_diff_page(path, copy.deepcopy(diff), "old.json", "new.json")
    text = path.read_text(encoding="utf-8")
    page = Page(text)
    (table,) = page.tables["rows"]
    header, body = table[0], table[1:]
    assert len(body) == len(diff["rows"])
    flag, arch, mode = header.index("flag"), header.index("architecture"), header.index("mode")
    assert {(r[arch], r[mode], r[flag]) for r in body if r[flag]} == {
        (label(x["arch"], x["variant"]), x["mode"], x["flag"]) for x in diff["rows"] if x["flag"]}
    assert "n/a" in {c for r in body for c in r}  # normalised change and intervals of None
    assert "&lt;its&gt;" in text and "<its>" not in text  # escaped
    assert page.order.index("summary") < page.order.index("ratios") < page.order.index("rows")
    ((ratio_header, *ratio_rows),) = page.tables["ratios"]
    verdicts = [(r[ratio_header.index("old verdict")], r[ratio_header.index("new verdict")]) for r in ratio_rows]
    assert verdicts == [(x["old"]["verdict"], x["new"]["verdict"]) for x in diff["ratios"]]
    assert not [a for _, a in page.tags if any((a.get(k) or "").startswith(("http://", "https://")) for k in ("src", "href"))]


def test_diff_page_of_two_made_up_runs(tmp_path):
    """On what report.diff_records makes of two runs: one row made 1.5 times slower is the one flagged, and a row only in one file is listed."""
    old = made_up_results()
    new = copy.deepcopy(old)
    slowed = next(r for r in new["rows"] if (r["arch"], r["task"], r["mode"], r["batch_size"]) == ("mlp", "train", "torch-eager", 64))
    slowed["step_ms_rounds"] = [1.5 * t for t in slowed["step_ms_rounds"]]
    slowed["step_ms_median"] *= 1.5
    new["rows"] = [r for r in new["rows"] if (r["arch"], r["task"], r["mode"]) != ("rnn", "infer", "torch-compile")]
    diff = report.diff_records(old, new)
    path = tmp_path / "diff.html"
    html_report.write_diff_page(path, diff, "old/results.json", "new/results.json")
    page = Page(path.read_text(encoding="utf-8"))
    (table,) = page.tables["rows"]
    header, body = table[0], table[1:]
    flag, arch, mode = header.index("flag"), header.index("architecture"), header.index("mode")
    flagged = {(r[arch], r[mode], r[flag]) for r in body if r[flag]}
    assert flagged == {(label(x["arch"], x["variant"]), x["mode"], x["flag"]) for x in diff["rows"] if x["flag"]}
    assert ("mlp", "torch-eager", "slower") in flagged
    assert diff["only_old"] and "only" in page.order
