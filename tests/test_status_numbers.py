"""What `status` computes from the journals: throughput, ETA, unknown record kinds.

The journals are written here with times the test chooses (JournalWriter with an
explicit ``time``), folded into a real manifest on disk, and read back through
report.snapshot at a chosen ``now``.  Rates are compared with a tolerance of
0.01 files/h (the snapshot rounds to 2 decimals).
"""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from orchestrator import report
from orchestrator.manifest import InputFile, Manifest
from orchestrator.orchestration import fold_journals
from tvseg.journal import JournalWriter, shard_dir

T0 = 1_700_000_000.0  # an arbitrary start of the run
HOUR = 3600.0


class Run:
    """One shard of ``n`` files in a manifest, and the journal its worker writes."""

    def __init__(self, tmp_path, n: int) -> None:
        self.workdir = tmp_path
        self.manifest = Manifest(tmp_path / "manifest.sqlite", create=True)
        [self.shard] = self.manifest.add_shards([[InputFile(f"/media/rec {i}.mp4", 1000, 0.0) for i in range(n)]])
        self.manifest.record_submission("submit", "local", [self.shard], ["4242"], {})
        self.ids = [f.id for f in self.manifest.shard_files(self.shard)]
        self.journal = JournalWriter(shard_dir(tmp_path, self.shard))

    def start(self, at: float) -> None:
        self.journal.write("task_start", time=at, shard=self.shard, attempt=0, host="node1", pid=1, job_id="4242",
                           skipped=[])

    def file(self, index: int, start: float, end: float | None, media_s: float = 600.0) -> None:
        self.journal.write("file_start", time=start, file_id=self.ids[index])
        if end is not None:
            self.journal.write("file_end", time=end, file_id=self.ids[index], state="done", error_class=None,
                               error=None, outputs=[], facts={"duration_s": media_s}, seconds={"total": end - start})

    def end(self, at: float, reason: str = "complete", detail: str = "") -> None:
        self.journal.write("task_end", time=at, reason=reason, detail=detail)

    def snapshot(self, now: float) -> dict:
        fold_journals(self.workdir, self.manifest)
        return report.snapshot(self.manifest, now=now)


@pytest.fixture
def run(tmp_path):
    made = []

    def make(n: int) -> Run:
        made.append(Run(tmp_path, n))
        return made[-1]

    yield make
    for r in made:
        r.journal.close()
        r.manifest.close()


def rates(snap: dict) -> tuple[float, float]:
    return snap["throughput"]["files_per_hour"], snap["throughput"]["media_hours_per_hour"]


def test_one_long_file_just_finished(run):
    """A 2-hour recording done in 4 min 48 s, 12 s ago: 1 file in the 300 s since work began."""
    r = run(5)
    r.start(T0)
    r.file(0, T0, T0 + 288, media_s=2 * HOUR)
    r.file(1, T0 + 288, None)
    files_h, media_h = rates(snap := r.snapshot(now=T0 + 300))
    assert files_h == pytest.approx(12.0, abs=0.01)  # was 300 files/h: divided by the 12 s since the first end
    assert media_h == pytest.approx(24.0, abs=0.001)
    assert snap["throughput"]["seconds"] == 300
    assert snap["eta_seconds"] == 4 * 300  # 4 files left at 12 files/h
    text = io.StringIO()
    Console(file=text, width=120).print(report.render(snap, "t"))
    assert "12.0 files/h" in text.getvalue() and "24.00 media h/h" in text.getvalue()
    assert "over 5m00s of work" in text.getvalue()


def test_one_file_run_that_ended(run):
    """Once the task has ended, the rate is over the time work ran (to the last end), and no ETA."""
    r = run(1)
    r.start(T0)
    r.file(0, T0, T0 + 288, media_s=2 * HOUR)
    r.end(T0 + 289)
    snap = r.snapshot(now=T0 + 900)
    assert rates(snap) == (pytest.approx(12.5, abs=0.01), pytest.approx(25.0, abs=0.001))
    assert snap["eta_seconds"] is None


def test_steady_run(run):
    """One 10-minute file every 2 minutes for three hours, still running: 30 files/h, 5 media h/h."""
    r = run(150)
    r.start(T0)
    for k in range(90):
        r.file(k, T0 + 120 * k, T0 + 120 * (k + 1))
    r.file(90, T0 + 3 * HOUR, None)
    snap = r.snapshot(now=T0 + 3 * HOUR + 30)
    assert rates(snap) == (pytest.approx(30.0, abs=0.01), pytest.approx(5.0, abs=0.001))
    assert snap["throughput"]["seconds"] == HOUR  # the window, not the three hours
    assert snap["eta_seconds"] == round(60 / 30 * HOUR)  # 59 pending + the one running


def test_stalled_run(run):
    """Thirty files in the first half hour, then one file that hangs: the rate over the hour halves,
    and keeps falling while nothing finishes."""
    r = run(100)
    r.start(T0)
    for k in range(30):
        r.file(k, T0 + 60 * k, T0 + 60 * (k + 1))
    r.file(30, T0 + 1800, None)  # hangs
    assert rates(r.snapshot(now=T0 + 1800))[0] == pytest.approx(60.0, abs=0.01)
    snap = r.snapshot(now=T0 + HOUR)
    assert rates(snap) == (pytest.approx(30.0, abs=0.01), pytest.approx(5.0, abs=0.001))
    assert snap["eta_seconds"] == round(70 / 30 * HOUR)  # a stalled run is still running work
    assert rates(r.snapshot(now=T0 + HOUR + 900))[0] == pytest.approx(16.0, abs=0.01)  # ends in the last hour


def test_run_that_ended_an_hour_ago(run):
    r = run(10)
    r.start(T0)
    for k in range(10):
        r.file(k, T0 + 60 * k, T0 + 60 * (k + 1))
    r.end(T0 + 601)
    snap = r.snapshot(now=T0 + 601 + HOUR)
    assert rates(snap) == (0.0, 0.0) and snap["throughput"]["seconds"] == 0
    assert snap["eta_seconds"] is None


def test_no_eta_once_the_only_shard_died(run):
    """Files done a moment ago give a rate, but with no worker left to go on there is no ETA."""
    r = run(8)
    r.start(T0)
    for k in range(3):
        r.file(k, T0 + 10 * k, T0 + 10 * (k + 1))
    r.end(T0 + 31, reason="error", detail="MemoryError: ")
    snap = r.snapshot(now=T0 + 32)
    assert snap["files"]["pending"] == 5 and rates(snap)[0] == pytest.approx(360.0, abs=0.01)  # 3 files in 30 s
    assert snap["eta_seconds"] is None


def test_unknown_record_kinds_are_skipped_with_one_warning_per_journal(run):
    r = run(3)
    r.start(T0)
    r.journal.write("file_progress", time=T0 + 1, file_id=r.ids[0], fraction=0.5)  # a newer worker's kind
    r.file(0, T0, T0 + 10)
    r.journal.write("file_progress", time=T0 + 11, file_id=r.ids[1], fraction=0.1)
    with open(r.journal.path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(["not", "a", "record"]) + "\n")
    r.file(1, T0 + 10, T0 + 20)
    warnings: list[str] = []
    assert fold_journals(r.workdir, r.manifest, warnings.append) == 5  # task_start, 2 starts, 2 ends
    assert warnings == [f"{r.journal.path}: skipped 3 record(s) of unknown kind 'file_progress', no kind "
                        "(written by a newer worker?)"]
    assert report.snapshot(r.manifest, now=T0 + 21)["files"] == {
        "pending": 1, "running": 0, "done": 2, "failed": 0, "quarantined": 0}
    warnings.clear()
    assert fold_journals(r.workdir, r.manifest, warnings.append) == 0 and warnings == []  # folded once


def test_staging_and_compute_rates_from_the_journal(run):
    """Two files: 1000 bytes each (the Run's size), staged in 0.5 s and 2 s, computed in 4 s and 6 s."""
    r = run(2)
    r.start(T0)
    for i, (staging, compute) in enumerate([(0.5, 4.0), (2.0, 6.0)]):
        start = T0 + 100 * i
        r.journal.write("file_start", time=start, file_id=r.ids[i])
        r.journal.write("file_end", time=start + staging + compute, file_id=r.ids[i], state="done", error_class=None,
                        error=None, outputs=[], facts={},
                        seconds={"staging": staging + 0.25, "probe": compute, "total": staging + 0.25 + compute},
                        staging={"bytes": 1000, "seconds": staging, "tries": 1})
    r.end(T0 + 300)
    snap = r.snapshot(T0 + 400)
    assert snap["staging"] == {"files": 2, "bytes": 2000, "seconds": 2.5, "bytes_per_s": 800.0}
    assert snap["compute"] == {"files": 2, "bytes": 2000, "seconds": 10.0, "bytes_per_s": 200.0}
    text = io.StringIO()
    Console(file=text, width=200).print(report.render(snap, "t"))
    assert "staging" in text.getvalue() and "800 B/s per task (2 transfers)" in text.getvalue()
    assert "200 B/s per task (2 files)" in text.getvalue()


def test_a_manifest_without_the_staging_columns_gets_them_when_opened(tmp_path):
    """A schema-1 manifest written before the staging columns existed (they are dropped here as an
    older tvseg never made them) opens, gains them, and folds file_end records with staging."""
    import sqlite3  # noqa: PLC0415

    path = tmp_path / "manifest.sqlite"
    Manifest(path, create=True).close()
    with sqlite3.connect(path) as db:
        for column in ("staged_bytes", "staging_seconds", "compute_seconds"):
            db.execute(f"ALTER TABLE files DROP COLUMN {column}")
    manifest = Manifest(path)
    try:
        with sqlite3.connect(path) as db:
            columns = {row[1] for row in db.execute("PRAGMA table_info(files)")}
        assert {"staged_bytes", "staging_seconds", "compute_seconds"} <= columns
    finally:
        manifest.close()
