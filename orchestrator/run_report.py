"""`orchestrate report`: one self-contained HTML page about a run, from the manifest.

Plots are PNGs drawn with matplotlib (imported here, when a report is made: the other commands
stay light) and embedded as data URIs, so the page opens anywhere without a network.  Sections:
progress over time, throughput per shard, stage seconds per media hour, failures by reason with
example paths, the slowest files, peak memory per shard, resources asked vs used (with the plan
for a next run), and a link to every recording's timeline picture.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import quote

from orchestrator import planning
from orchestrator.executor import executor_kind
from orchestrator.manifest import Manifest, error_key
from tvseg.config import JobConfig, parse_slurm_mem
from tvseg.journal import atomic_write_text
from tvseg.states import FileState

SLOWEST = 20
EXAMPLES = 3
REASONS = 30
MAX_POINTS = 2000  # points of the progress curve
BARS = 60  # up to this many shards: one bar each; more: a histogram
TIMELINE = "timeline.png"
GIB = 1024**3


@dataclass(frozen=True)
class Built:
    path: Path
    files: int
    timelines: int
    bytes: int
    seconds: float


def build_report(config: JobConfig, manifest: Manifest, out: Path) -> Built:
    """Write the report to ``out`` (atomically) and say what went in."""
    t0 = time.perf_counter()
    files = manifest.report_files()
    shards = manifest.report_shards()
    measured = planning.measure(manifest)
    folder = out.resolve().parent
    outputs_root = config.workdir.resolve() / "outputs"
    link_root = os.path.relpath(outputs_root, folder)

    counts = Counter(f[2] for f in files)
    done = [f for f in files if f[2] == FileState.DONE.value]
    media_done = sum(f[8] or 0.0 for f in done)
    sections = [
        _summary(config, files, counts, media_done, shards),
        _progress(done),
        _throughput(shards, files),
        _stages(measured),
        _failures(files),
        _slowest(done, link_root),
        _memory(shards),
        _resources(config, manifest, shards, measured),
    ]
    timelines, links = _timelines(done, link_root)
    sections.append(links)
    page = _page(config.name, sections)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, page)
    return Built(out, len(files), timelines, len(page.encode("utf-8")), time.perf_counter() - t0)


# --- sections ----------------------------------------------------------------------------------


def _summary(config: JobConfig, files: list[tuple], counts: Counter, media_done: float, shards: list[dict]) -> str:
    starts = [s["started_at"] for s in shards if s["started_at"]]
    ends = [f[6] for f in files if f[6]]
    span = (max(ends) - min(starts)) if starts and ends else 0.0
    cells = "".join(f"<td>{counts.get(s.value, 0)}</td>" for s in FileState)
    head = "".join(f"<th>{s.value}</th>" for s in FileState)
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f"<p>{len(files)} file(s) in {len(shards)} shard(s); {media_done / 3600:.2f} media hours done"
            + (f" over {span / 3600:.2f} h of wall-clock time" if span else "")
            + f". Made {when} from <code>{_e(str(config.manifest_path))}</code>.</p>"
            f"<table><tr>{head}<th>total</th></tr><tr>{cells}<td>{len(files)}</td></tr></table>")


def _progress(done: list[tuple]) -> str:
    finished = sorted((f[6], f[8] or 0.0) for f in done if f[6])
    if not finished:
        return _section("Progress", "<p>No file is done yet.</p>")
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter  # noqa: PLC0415

    step = max(1, len(finished) // MAX_POINTS)
    xs, files_n, hours = [], [], []
    media = 0.0
    for i, (t, m) in enumerate(finished, 1):
        media += m
        if i % step == 0 or i == len(finished):
            xs.append(datetime.fromtimestamp(t, timezone.utc))
            files_n.append(i)
            hours.append(media / 3600)
    fig, ax = _figure()
    ax.plot(xs, files_n, color="#1f77b4", linewidth=3.5, label="files done")
    ax.set_ylabel("files done", color="#1f77b4")
    right = ax.twinx()
    right.plot(xs, hours, color="#ff7f0e", linewidth=1.5, linestyle=(0, (4, 4)), label="media hours done")
    right.set_ylabel("media hours done", color="#ff7f0e")
    locator = AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    ax.set_title("Files and media hours done over time (UTC)")
    return _section("Progress", _img(fig, "files and media hours done over time"))


def _shard_spans(shards: list[dict], files: list[tuple]) -> dict[int, tuple[float, int, float]]:
    """shard id -> (wall seconds, files done, media seconds done)."""
    last: dict[int, float] = {}
    n: dict[int, int] = defaultdict(int)
    media: dict[int, float] = defaultdict(float)
    for f in files:
        if f[2] == FileState.DONE.value and f[3] is not None:
            n[f[3]] += 1
            media[f[3]] += f[8] or 0.0
            if f[6]:
                last[f[3]] = max(last.get(f[3], 0.0), f[6])
    out = {}
    for s in shards:
        if s["started_at"] and n.get(s["id"]):
            end = s["ended_at"] or last.get(s["id"]) or s["started_at"]
            out[s["id"]] = (max(end - s["started_at"], 1e-9), n[s["id"]], media[s["id"]])
    return out


def _throughput(shards: list[dict], files: list[tuple]) -> str:
    spans = _shard_spans(shards, files)
    if not spans:
        return _section("Throughput per shard", "<p>No shard has finished a file yet.</p>")
    rates = {sid: media / wall for sid, (wall, _n, media) in spans.items()}  # media hours per hour
    fig, ax = _figure()
    if len(rates) <= BARS:
        ids = sorted(rates)
        ax.bar([str(i) for i in ids], [rates[i] for i in ids], color="#2ca02c")
        ax.set_xlabel("shard")
        ax.tick_params(axis="x", labelsize=7, rotation=90)
    else:
        ax.hist(list(rates.values()), bins=40, color="#2ca02c")
        ax.set_xlabel("media hours per hour of the task's wall-clock time")
        ax.set_ylabel("shards")
    ax.set_title(f"Throughput per shard: media hours per wall-clock hour ({len(rates)} shards)")
    slow = sorted(rates, key=rates.get)[:5]
    rows = "".join(f"<tr><td>{i}</td><td>{rates[i]:.2f}</td><td>{spans[i][1]}</td><td>{spans[i][0] / 3600:.2f}</td></tr>"
                   for i in slow)
    table = ("<table><tr><th>slowest shards</th><th>media h / h</th><th>files done</th><th>wall h</th></tr>"
             f"{rows}</table>")
    return _section("Throughput per shard", _img(fig, "throughput per shard") + table)


def _stages(measured: planning.Measured | None) -> str:
    if measured is None:
        return _section("Stage seconds per media hour", "<p>No done file has per-stage times yet.</p>")
    stages = [s for s in measured.stages if s.stage != "staging"] + [s for s in measured.stages if s.stage == "staging"]
    fig, ax = _figure()
    names = [s.stage for s in stages]
    ax.barh(names, [s.seconds_per_media_hour for s in stages], color="#9467bd", label="all files")
    ax.scatter([s.p90_seconds_per_media_hour for s in stages], names, color="#d62728", zorder=3, label="90th percentile")
    ax.invert_yaxis()
    ax.set_xlabel("seconds per media hour")
    ax.legend(loc="lower right")
    ax.set_title(f"Stage seconds per media hour ({measured.files} files, {measured.media_hours:.1f} media h)")
    rows = "".join(f"<tr><td>{_e(s.stage)}</td><td>{s.files}</td><td>{_rate(s.seconds_per_media_hour)}</td>"
                   f"<td>{_rate(s.p90_seconds_per_media_hour)}</td><td>{_gib(s.peak_rss)}</td></tr>" for s in stages)
    table = ("<table><tr><th>stage</th><th>files</th><th>s per media h</th><th>p90</th><th>peak memory</th></tr>"
             f"{rows}</table>")
    return _section("Stage seconds per media hour", _img(fig, "stage seconds per media hour") + table)


def _failures(files: list[tuple]) -> str:
    by: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    n: Counter = Counter()
    for f in files:
        if f[2] in (FileState.FAILED.value, FileState.QUARANTINED.value):
            key = (f[2], f[4] or "", error_key(f[5]))
            n[key] += 1
            if len(by[key]) < EXAMPLES:
                by[key].append(f[0])
    if not n:
        return _section("Failures and quarantines", "<p>None.</p>")
    rows = "".join(
        f"<tr><td>{n[k]}</td><td>{_e(k[0])}</td><td>{_e(k[1])}</td><td>{_e(k[2])}</td>"
        f"<td>{'<br>'.join(_e(p) for p in by[k])}</td></tr>" for k, _ in n.most_common(REASONS))
    more = f"<p>{len(n) - REASONS} more reason(s) not shown.</p>" if len(n) > REASONS else ""
    return _section("Failures and quarantines", "<table><tr><th>files</th><th>state</th><th>error</th><th>reason</th>"
                    f"<th>example paths</th></tr>{rows}</table>{more}")


def _slowest(done: list[tuple], link_root: str) -> str:
    top = sorted((f for f in done if f[7]), key=lambda f: f[7], reverse=True)[:SLOWEST]
    if not top:
        return _section("Slowest files", "<p>No file is done yet.</p>")
    rows = []
    for f in top:
        rate = f"{f[7] / f[8] * 3600:.0f}" if f[8] else "-"
        link = f' <a href="{_e(_href(link_root, f[12]))}">timeline</a>' if _has_timeline(f) else ""
        rows.append(f"<tr><td>{_e(f[0])}{link}</td><td>{(f[8] or 0) / 60:.1f}</td><td>{f[7]:.1f}</td><td>{rate}</td>"
                    f"<td>{_gib(f[10])}</td></tr>")
    return _section("Slowest files", "<table><tr><th>file</th><th>media min</th><th>seconds</th><th>s per media h</th>"
                    f"<th>peak memory</th></tr>{''.join(rows)}</table>")


def _memory(shards: list[dict]) -> str:
    peaks = {s["id"]: s["peak_rss"] for s in shards if s["peak_rss"]}
    if not peaks:
        return _section("Peak memory per shard", "<p>No task has reported its peak memory yet.</p>")
    asked = sorted({parse_slurm_mem(r["mem"]) for s in shards if (r := _resources_of(s)).get("mem")})
    fig, ax = _figure()
    if len(peaks) <= BARS:
        ids = sorted(peaks)
        ax.bar([str(i) for i in ids], [peaks[i] / GIB for i in ids], color="#8c564b")
        ax.set_xlabel("shard")
        ax.set_ylabel("GiB")
        ax.tick_params(axis="x", labelsize=7, rotation=90)
        for mem in asked:
            ax.axhline(mem / GIB, color="#d62728", linestyle="--", label=f"asked {mem / GIB:.1f} GiB")
    else:
        ax.hist([p / GIB for p in peaks.values()], bins=40, color="#8c564b")
        ax.set_xlabel("GiB")
        ax.set_ylabel("shards")
        for mem in asked:
            ax.axvline(mem / GIB, color="#d62728", linestyle="--", label=f"asked {mem / GIB:.1f} GiB")
    if asked:
        ax.legend()
    ax.set_title(f"Peak memory per shard (the worker process; highest {max(peaks.values()) / GIB:.2f} GiB)")
    return _section("Peak memory per shard", _img(fig, "peak memory per shard"))


def _resources(config: JobConfig, manifest: Manifest, shards: list[dict], measured: planning.Measured | None) -> str:
    by_sub: dict[Any, list[dict]] = defaultdict(list)
    for s in shards:
        by_sub[s["submission_id"]].append(s)
    rows = []
    for sub, group in sorted(by_sub.items(), key=lambda kv: (kv[0] is None, kv[0] or 0)):
        res = _resources_of(group[0])
        walls = [s["ended_at"] - s["started_at"] for s in group if s["ended_at"] and s["started_at"]]
        peaks = [s["peak_rss"] for s in group if s["peak_rss"]]
        ends = Counter((s["end_reason"] or s["state"]).split(":")[0] for s in group)
        rows.append(
            f"<tr><td>{sub if sub is not None else '-'}</td><td>{_e(group[0]['kind'] or 'unsubmitted')}</td>"
            f"<td>{_e(res.get('executor', '-'))}</td><td>{len(group)}</td>"
            f"<td>{_e(res.get('time', '-'))}</td><td>{_clock(max(walls)) if walls else '-'}</td>"
            f"<td>{_e(res.get('mem', '-'))}</td><td>{_gib(max(peaks)) if peaks else '-'}</td>"
            f"<td>{_e(', '.join(f'{n} {k}' for k, n in ends.most_common()))}</td></tr>")
    table = ("<table><tr><th>submission</th><th>kind</th><th>executor</th><th>shards</th><th>time asked</th>"
             "<th>longest task</th><th>memory asked</th><th>highest peak</th><th>ends</th></tr>"
             f"{''.join(rows)}</table>")
    advice_html = "<p>No measured file yet: no plan.</p>"
    if measured is not None:
        sizes = manifest.shard_sizes([s["id"] for s in shards])
        advice = planning.advise(config, measured, sizes, slurm=executor_kind(config) == "slurm")
        if advice is not None:
            lines = planning.describe(advice) + [f"warning: {w}" for w in advice.warnings]
            advice_html = ("<p>For a next run of shards like these (jobs.yaml now: slurm.time "
                           f"{_e(config.slurm.time)}, slurm.mem {_e(config.slurm.mem)}, files_per_shard "
                           f"{config.sharding.files_per_shard}):</p><pre>{_e(chr(10).join(lines))}</pre>")
    return _section("Resources asked vs used", table + advice_html)


def _timelines(done: list[tuple], link_root: str) -> tuple[int, str]:
    items = [f'<li><a href="{_e(_href(link_root, f[12]))}">{_e(f[0])}</a></li>' for f in done if _has_timeline(f)]
    if not items:
        return 0, _section("Timelines", "<p>No timeline picture (the boundaries stage draws them).</p>")
    body = (f"<details><summary>{len(items)} recording(s) with a timeline picture (click to list)</summary>"
            f"<ol>{''.join(items)}</ol></details>")
    return len(items), _section("Timelines", body)


# --- helpers ------------------------------------------------------------------------------------


def _has_timeline(f: tuple) -> bool:
    return bool(f[11]) and f'/{TIMELINE}"' in f[11]


def _href(link_root: str, output_name: str) -> str:
    return quote(f"{link_root}/{output_name}/{TIMELINE}")


def _resources_of(shard: dict) -> dict:
    try:
        return json.loads(shard["resources"]) if shard["resources"] else {}
    except ValueError:
        return {}


def _figure():
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415 - only when a report is made
    from matplotlib.figure import Figure  # noqa: PLC0415

    fig = Figure(figsize=(10, 3.6), dpi=90, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _img(fig: Any, alt: str) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _section(title: str, body: str) -> str:
    return f"<section><h2>{_e(title)}</h2>{body}</section>"


def _page(name: str, sections: Iterable[str]) -> str:
    style = ("body{font-family:sans-serif;margin:2em;max-width:1100px;color:#222}"
             "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.2em .5em;"
             "font-size:.9em;text-align:left;vertical-align:top}th{background:#eee}img{max-width:100%}"
             "pre{background:#f6f6f6;padding:.5em;white-space:pre-wrap}section{margin-bottom:1.5em}")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>tvseg run report: {_e(name)}</title>'
            f"<style>{style}</style></head><body><h1>tvseg run report: {_e(name)}</h1>{''.join(sections)}"
            "</body></html>\n")


def _e(text: str) -> str:
    return html.escape(str(text), quote=True)


def _rate(seconds_per_media_hour: float) -> str:
    return f"{seconds_per_media_hour:.0f}" if seconds_per_media_hour >= 10 else f"{seconds_per_media_hour:.2f}"


def _gib(n: int | None) -> str:
    return f"{n / GIB:.2f} GiB" if n else "-"


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
