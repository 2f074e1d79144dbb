"""Self-contained HTML pages: one per benchmark run (verdicts first, charts, every row, each architecture's twin files side by side)
and one per comparison of two runs. No network: the style is inline, charts are inline SVG or base64 PNG."""
from __future__ import annotations

import base64
import difflib
import html
import io
import math
import re
import tempfile
from pathlib import Path

from benchmarks import report
from shared.hparams import label

ROOT = Path(__file__).resolve().parents[1]
VERDICT_CLASS = {"JAX faster": "v-jax", "torch faster": "v-torch", "no clear difference": "v-same", "too few rounds": "v-few"}
FLAG_CLASS = {"slower": "f-slower", "faster": "f-faster", "changed": "f-changed"}
ARCH_NAME = re.compile(r"[A-Za-z0-9_]+")  # what may name a twin file pair (never a path)

STYLE = """
body {font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 72rem; margin: 1.5rem auto;
      padding: 0 1rem; color: #222; line-height: 1.45;}
h1 {font-size: 1.6rem; margin-bottom: .3rem;} h2 {font-size: 1.25rem; margin-top: 2.2rem; border-bottom: 1px solid #ccc;}
p, ul.text {max-width: 52rem;}
nav ul {columns: 3; padding-left: 1.2rem; font-size: .95rem;}
code {font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: .9em; background: #f3f3f3; padding: 0 .2em;}
table.data {border-collapse: collapse; font-size: .85rem; margin: .6rem 0;}
table.data th, table.data td {border: 1px solid #bbb; padding: .2rem .45rem; text-align: left; vertical-align: top;}
table.data td {white-space: nowrap;}
table.data th {background: #eee;} table.data td.num {text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap;}
table.data tbody tr:nth-child(even) {background: #fafafa;}
.wide {overflow-x: auto; max-width: 100%;}
td.v-jax {background: #4477aa; color: #fff;} td.v-torch {background: #bb4422; color: #fff;}
td.v-same {background: #ddd;} td.v-few {background: #f4f4f4; color: #666;}
tr.f-slower td {background: #f7d9cf;} tr.f-faster td {background: #d4e2f1;} tr.f-changed td {background: #fff2b3;}
.chart svg, .chart img {max-width: 100%; height: auto; display: block;}
.note {color: #555; font-size: .9rem;}
.code {overflow-x: auto; border: 1px solid #ccc; margin: .6rem 0 1rem; width: calc(100vw - 4rem); margin-left: calc(50% - 50vw + 2rem);}
table.diff {font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 11px; border-collapse: collapse; line-height: 1.3;
            width: 100%; min-width: 60rem;}
table.diff td {padding: 0 .35rem; vertical-align: top;}
table.diff td[nowrap] {width: 50%; white-space: pre-wrap; overflow-wrap: anywhere;}
table.diff th {padding: .2rem .4rem; font-family: system-ui, sans-serif; font-size: .8rem;}
table.diff td.diff_header {color: #777; user-select: none;} table.diff .diff_next {font-size: 10px;}
"""


# ---------------------------------------------------------------- small pieces
def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def markdown_inline(text: str) -> str:
    """Escaped text with `backticks` as <code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", esc(text))


def ratio(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def span(pair: list[float] | None, spec: str = ".2f") -> str:
    return "n/a" if pair is None else f"{pair[0]:{spec}}\u2013{pair[1]:{spec}}"


def sig3(pair: list[float] | None) -> str:
    """A low-high pair to three significant digits of its larger end, the two ends with as many decimals."""
    if pair is None:
        return "n/a"
    top = max(abs(pair[0]), abs(pair[1]))
    return span(pair, f".{max(0, 2 - math.floor(math.log10(top))) if top > 0 else 2}f")


def cell(text: object, cls: str = "") -> str:
    return f'<td class="{cls}">{esc(text)}</td>' if cls else f"<td>{esc(text)}</td>"


def num(text: object) -> str:
    return cell(text, "num")


def verdict_cell(verdict: str) -> str:
    return cell(verdict, VERDICT_CLASS.get(verdict, ""))


def table(header: list[str], body: list[str], cls: str = "data") -> str:
    """A table of header names and ready-made <tr> rows, inside a horizontally scrolling box."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    return f'<div class="wide"><table class="{cls}"><thead><tr>{head}</tr></thead><tbody>\n' + "\n".join(body) + "\n</tbody></table></div>"


def section(ident: str, title: str, body: str) -> str:
    return f'<section id="{esc(ident)}">\n<h2>{esc(title)}</h2>\n{body}\n</section>'


def page(title: str, parts: list[str]) -> str:
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{esc(title)}</title>\n<style>{STYLE}{difflib.HtmlDiff._styles}</style></head>\n<body>\n"
            + "\n".join(parts) + "\n</body></html>\n")


def toc(entries: list[tuple[str, str]]) -> str:
    return "<nav><ul>" + "".join(f'<li><a href="#{esc(i)}">{esc(t)}</a></li>' for i, t in entries) + "</ul></nav>"


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


# ---------------------------------------------------------------- charts
def svg(fig, prefix: str) -> str:
    """A matplotlib figure as inline SVG: no XML prolog, doctype or metadata, its ids prefixed so that several on a page stay apart."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none"}):  # text as <text>, not as paths: a tenth of the size
        fig.savefig(buf, format="svg", metadata={"Date": None})
    report._pyplot().close(fig)
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.S)
    text = re.sub(r'\bid="', f'id="{prefix}-', text)
    text = re.sub(r'href="#', f'href="#{prefix}-', text)
    return re.sub(r"url\(#", f"url(#{prefix}-", text)


def png(write_png, *args) -> str:
    """<img> of the PNG that `write_png(path, *args)` writes, base64-embedded."""
    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / "chart.png"
        write_png(target, *args)
        data = base64.b64encode(target.read_bytes()).decode("ascii")
    return f'<img alt="chart" src="data:image/png;base64,{data}">'


def memory_figure(rows: list[dict]):
    """Peak memory of every timed row, a horizontal bar each, training and inference side by side."""
    plt = report._pyplot()
    tasks = [t for t in ("train", "infer") if any(r["task"] == t for r in rows)] or ["train"]
    height = max(len([r for r in rows if r["task"] == t]) for t in tasks)
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 0.2 * height + 1.2), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        group = [r for r in rows if r["task"] == task]
        y = list(range(len(group)))[::-1]
        ax.barh(y, [r["peak_mem_mb"] for r in group], color=[report.MODE_COLORS.get(r["mode"], "gray") for r in group])
        ax.set_yticks(y, [f"{report.row_label(r)} {report.mode_label(r)}{report.precision_label(r)} b{r['batch_size']}" for r in group],
                      fontsize=7)
        ax.set_ylim(-0.6, len(group) - 0.4)
        ax.set_title(task, fontsize=9)
        ax.set_xlabel("peak memory above baseline, MB", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- a run's page
def run_summary(results: dict) -> dict:
    """The run's summary; recomputed from its rows when the file predates the verdicts or their present method."""
    s = results.get("summary") or {}
    return s if s.get("verdict_method") == report.verdict_method() else report.summary(results["rows"])


def how_to_read(method: dict) -> str:
    return (f"<p><b>How to read.</b> Each ratio is JAX's step time (jax-jit) over torch's best mode's, formed round by round "
            f"(both timed within seconds of each other), so below 1 JAX is faster. Shown: the {esc(method['estimate'])} and its "
            f"{method['confidence']:.0%} confidence interval ({esc(method['interval'])}). Verdict: {esc(method['rule'])}; "
            f"fewer rounds than a {method['confidence']:.0%} interval needs read &ldquo;too few rounds&rdquo;.</p>")


def interval_text(x: dict) -> str:
    if x.get("interval") is None:
        return "n/a"
    coverage = f" ({x['coverage']:.1%})" if x.get("coverage") is not None else ""
    return span(x["interval"]) + coverage


def verdicts_section(entries: list[dict]) -> str:
    if not entries:
        return section("verdicts", "Verdicts: JAX / torch", "<p>No architecture has both a jax-jit row and a torch row here.</p>")
    body = [f"<tr>{cell(label(x['arch'], x['variant']) + report.precision_label(x))}{cell(x['task'])}{num(x['batch_size'])}"
            f"{num(ratio(x['estimate']))}{num(interval_text(x))}{verdict_cell(x['verdict'])}{cell(x['torch_mode'])}</tr>" for x in entries]
    header = ["architecture", "task", "batch", "JAX / torch, estimate", "interval (coverage)", "verdict", "torch's best mode"]
    return section("verdicts", "Verdicts: JAX / torch", table(header, body, "data verdicts"))


def ratio_section(results: dict) -> str:
    figure = report.ratio_figure(results)
    body = '<div class="chart">' + svg(figure, "ratios") + "</div>" if figure is not None else "<p>No JAX/torch ratios in this run.</p>"
    return section("ratios", "The ratios", body)


def step_text(r: dict) -> str:
    """Median step, with its confidence interval [lo-hi], or the round spread (lo-hi) where the rounds were too few for one."""
    if r.get("step_ms_interval"):
        return f"{r['step_ms_median']:.3f} [{span(r['step_ms_interval'], '.3f')}]"
    return f"{r['step_ms_median']:.3f} ({span(r['step_ms_spread'], '.3f')})"


def rows_section(rows: list[dict], entries: list[dict]) -> str:
    verdicts = {report.ratio_key(x): x["verdict"] for x in entries}
    body = []
    for r in report.timed(rows):
        v, unstable = verdicts.get(report.ratio_key(r), ""), " unstable" if r.get("unstable") else ""
        numbers = [r["batch_size"], step_text(r) + unstable, f"{r['compile_s']:.2f}", f"{r['samples_per_s']:,.0f}", f"{r['peak_mem_mb']:.1f}"]
        body.append(f"<tr>{cell(report.row_label(r))}{cell(r['task'])}{cell(report.mode_label(r))}{cell(report.precision_of(r))}"
                    + "".join(map(num, numbers)) + (verdict_cell(v) if v else cell("")) + "</tr>")
    header = ["architecture", "task", "mode", "precision", "batch", "step ms: median [interval] or (min\u2013max)", "compile s", "samples/s",
              "peak MB", "JAX / torch verdict"]
    note = ('<p class="note">Step time: the median over rounds of each round\'s median step; in brackets its confidence interval, in '
            "parentheses the min\u2013max of the round medians where the rounds were too few for an interval.</p>")
    return section("rows", "Every row", note + table(header, body, "data rows"))


def machine_section(results: dict) -> str:
    lines = [f"date: {results.get('date', 'not recorded')}; commit: {results.get('commit') or 'not recorded'}"]
    lines += [line.removeprefix("- ") for line in report.machine_lines(results)]
    return section("machine", "Machine, versions, settings", '<ul class="text">' + "".join(f"<li>{markdown_inline(t)}</li>" for t in lines) + "</ul>")


def twin_lines(name: str) -> dict[str, list[str] | None]:
    """The lines of torch_impl/NAME.py and jax_impl/NAME.py, None for a file that is missing (or a name that is no file name)."""
    out = {}
    for folder in ("torch_impl", "jax_impl"):
        path = ROOT / folder / f"{name}.py"
        out[f"{folder}/{name}.py"] = path.read_text(encoding="utf-8").splitlines() if ARCH_NAME.fullmatch(name) and path.is_file() else None
    return out


def code_table(name: str) -> str:
    files = twin_lines(name)
    missing = [f for f, lines in files.items() if lines is None]
    if missing:
        return f"<p>Not found in this repository: {esc(', '.join(missing))}; no side-by-side view.</p>"
    (torch_name, torch_lines), (jax_name, jax_lines) = files.items()
    diff = difflib.HtmlDiff(tabsize=4, wrapcolumn=None).make_table(torch_lines, jax_lines, esc(torch_name), esc(jax_name), context=False)
    return f'<div class="code">{diff}</div>'


def arch_section(name: str, entries: list[dict]) -> str:
    mine = [x for x in entries if x["arch"] == name]
    lines = "".join(f"<li>{esc(label(x['arch'], x['variant']))}{esc(report.precision_label(x))} {esc(x['task'])} batch {esc(x['batch_size'])}: "
                    f"JAX / torch {esc(ratio(x['estimate']))} [{esc(interval_text(x))}], <b>{esc(x['verdict'])}</b></li>" for x in mine)
    verdicts = f'<ul class="text">{lines}</ul>' if mine else "<p>No JAX/torch verdict for this architecture in this run.</p>"
    intro = ('<p class="note">The twin files side by side, line against line (yellow: changed, green: only on the right, red: only on the '
             "left).</p>")
    return section(f"arch-{name}", f"{name}: torch_impl/{name}.py and jax_impl/{name}.py", verdicts + intro + code_table(name))


def write_run_page(path: Path, results: dict) -> None:
    """Write one self-contained HTML page of a benchmark run: verdicts, charts, every row, machine, and each architecture's twin files."""
    summary = run_summary(results)
    entries, rows = summary["jax_over_torch"], results["rows"]
    archs = list(dict.fromkeys(r["arch"] for r in rows))
    timed = report.timed(rows)
    title = f"Benchmark: {results['machine']['cpu']}, {results.get('date', 'undated')[:10]}"
    contents = [("verdicts", "Verdicts"), ("ratios", "Ratio chart"), ("rows", "Every row")]
    contents += [("scaling", "Scaling")] if summary.get("scaling") else []
    contents += [("memory", "Peak memory"), ("machine", "Machine and settings")] + [(f"arch-{a}", f"code: {a}") for a in archs]
    parts = [f"<h1>{esc(title)}</h1>", toc(contents), how_to_read(summary["verdict_method"]), verdicts_section(entries),
             ratio_section({**results, "summary": summary}), rows_section(rows, entries)]
    if summary.get("scaling"):
        parts.append(section("scaling", "Samples per second against batch size", '<div class="chart">' + png(report.plot_scaling, rows) + "</div>"))
    memory = '<div class="chart">' + svg(memory_figure(timed), "memory") + "</div>" if timed else "<p>No timed rows.</p>"
    parts += [section("memory", "Peak memory", memory), machine_section(results)]
    parts += [arch_section(a, entries) for a in archs]
    write(path, page(title, parts))


# ---------------------------------------------------------------- two runs' page
def ratio_side(x: dict) -> str:
    return f"{ratio(x['estimate'])} [{span(x.get('interval'))}]"


def diff_ratios_section(ratios: list[dict]) -> str:
    if not ratios:
        return section("ratios", "JAX / torch ratios, old and new", "<p>No JAX/torch ratio in both files.</p>")
    body = [f'<tr class="{FLAG_CLASS.get(x.get("flag"), "")}">{cell(label(x["arch"], x["variant"]) + report.precision_label(x))}'
            f"{cell(x['task'])}{num(x['batch_size'])}{num(ratio_side(x['old']))}{verdict_cell(x['old'].get('verdict', ''))}"
            f"{num(ratio_side(x['new']))}{verdict_cell(x['new'].get('verdict', ''))}{num(ratio(x['change']))}"
            f"{cell(x.get('flag') or '')}</tr>" for x in ratios]
    header = ["architecture", "task", "batch", "old: ratio [interval]", "old verdict", "new: ratio [interval]", "new verdict", "new / old", "flag"]
    return section("ratios", "JAX / torch ratios, old and new", table(header, body, "data ratios"))


def measured(x: float, task: str) -> str:
    return f"{x:.2f} s" if task == "fit" else f"{x:.3f}"


def diff_row_html(r: dict) -> str:
    numbers = [r["batch_size"], measured(r["old_ms"], r["task"]), measured(r["new_ms"], r["task"]), ratio(r["change"]),
               ratio(r.get("normalised_change")), sig3(r.get("old_interval")), sig3(r.get("new_interval"))]
    return (f'<tr class="{FLAG_CLASS.get(r.get("flag"), "")}">{cell(label(r["arch"], r["variant"]))}{cell(r["task"])}{cell(r["mode"])}'
            f"{cell(report.precision_of(r))}" + "".join(map(num, numbers)) + cell(r.get("flag") or "") + "</tr>")


def diff_rows_section(rows: list[dict]) -> str:
    body = [diff_row_html(r) for r in rows]
    header = ["architecture", "task", "mode", "precision", "batch", "old ms (fit: s)", "new ms (fit: s)", "new / old", "normalised new / old",
              "old interval", "new interval", "flag"]
    note = ('<p class="note">New / old of the step time (of the whole training command for fit rows); normalised: in units of the reference '
            "product each run timed before its rounds (n/a where a file did not record it). Intervals: each run's, in those units, or in ms "
            "where there is no reference.</p>")
    return section("rows", "Every row, old and new", note + table(header, body, "data rows") if rows else "<p>No row in both files.</p>")


def only_section(diff: dict) -> str:
    items = [(f"only in the old file ({len(diff.get('only_old', []))})", diff.get("only_old", [])),
             (f"only in the new file ({len(diff.get('only_new', []))})", diff.get("only_new", []))]
    body = "".join(f"<h3>{esc(t)}</h3>" + ('<ul class="text">' + "".join(f"<li>{esc(x)}</li>" for x in xs) + "</ul>" if xs else "<p>none</p>")
                   for t, xs in items)
    return section("only", "Rows in one file only", body)


def write_diff_page(path: Path, diff: dict, old_path: str, new_path: str) -> None:
    """Write one self-contained HTML page comparing two runs, from what report.diff_records(old, new) returns."""
    title = f"Benchmark comparison: {Path(old_path).name} against {Path(new_path).name}"
    where = (f'<ul class="text"><li>old: <code>{esc(old_path)}</code>: {esc(diff["old"]["where"])}</li>'
             f'<li>new: <code>{esc(new_path)}</code>: {esc(diff["new"]["where"])}</li></ul>')
    where += "<p>Across devices: rows are matched on all but the device.</p>" if diff.get("across_devices") else ""
    contents = [("summary", "Summary"), ("ratios", "Ratios"), ("rows", "Every row"), ("only", "Rows in one file only"), ("method", "Method")]
    summary = '<ul class="text">' + "".join(f"<li>{esc(s)}</li>" for s in diff.get("summary", [])) + "</ul>"
    parts = [f"<h1>{esc(title)}</h1>", where, toc(contents), section("summary", "Summary", summary), diff_ratios_section(diff.get("ratios", [])),
             diff_rows_section(diff.get("rows", [])), only_section(diff), section("method", "Method", f"<p>{esc(diff.get('method', ''))}</p>")]
    write(path, page(title, parts))
