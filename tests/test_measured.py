"""What the worker measures (peak memory per stage and task, seconds per stage), how the manifest
keeps it (columns added to older manifests on open), and the plan `--dry-run` makes from it."""

from __future__ import annotations

import json
import sqlite3

from tests.helpers import journal_records, write_jobs
from tests.slurm.slurm_helpers import sleep_stage  # noqa: F401 - a fixture: the test-only `sleep` stage
from orchestrator.manifest import Manifest
from tvseg.states import FileState

HOLD_MB = 150


def test_peak_memory_per_stage_and_task_reaches_the_manifest(tmp_path, cli, make_clips, sleep_stage):  # noqa: F811
    make_clips(tmp_path / "media", 3)
    jobs = write_jobs(tmp_path, worker={"stages": ["probe", "sleep"], "heartbeat_seconds": 1},
                      stage_settings={"sleep": {"seconds": 0.2, "hold_mb": HOLD_MB}}, sharding={"files_per_shard": 3})
    assert cli("submit", jobs, "--wait").code == 0
    records = journal_records(tmp_path / "work")
    ends = [r for r in records if r["kind"] == "file_end"]
    assert len(ends) == 3 and all(set(r["peak_rss"]) == {"probe", "sleep"} for r in ends)
    for r in ends:
        assert r["peak_rss"]["sleep"] - r["peak_rss"]["probe"] > (HOLD_MB - 20) * 2**20, r["peak_rss"]
    # The peak is reset between stages: probe after the first file does not carry sleep's 150 MB.
    assert all(r["peak_rss"]["probe"] < ends[0]["peak_rss"]["sleep"] - 100 * 2**20 for r in ends[1:])
    [task_end] = [r for r in records if r["kind"] == "task_end"]
    assert task_end["peak_rss"] >= max(r["peak_rss"]["sleep"] for r in ends)

    cli("status", jobs)
    manifest = Manifest(tmp_path / "work" / "manifest.sqlite")
    done = manifest.files_in([FileState.DONE])
    manifest.close()
    for row, end in zip(done, sorted(ends, key=lambda r: r["file_id"])):
        assert row["peak_rss"] == end["peak_rss"]["sleep"]
        assert json.loads(row["stage_rss"]) == end["peak_rss"]
        assert json.loads(row["stage_seconds"]) == end["seconds"] and end["seconds"]["sleep"] >= 0.2
    with sqlite3.connect(tmp_path / "work" / "manifest.sqlite") as db:
        assert db.execute("SELECT peak_rss FROM shards").fetchone()[0] == task_end["peak_rss"]


def test_an_older_manifest_gets_the_new_columns_and_keeps_its_rows(tmp_path, cli, make_clips):
    make_clips(tmp_path / "media", 2)
    jobs = write_jobs(tmp_path)
    assert cli("submit", jobs, "--wait").code == 0
    path = tmp_path / "work" / "manifest.sqlite"
    with sqlite3.connect(path) as db:  # as a manifest made before these columns existed
        for table, column in [("files", "stage_seconds"), ("files", "stage_rss"), ("files", "peak_rss"),
                              ("shards", "peak_rss")]:
            db.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    snap = cli("status", jobs, "--json").json()
    assert snap["files"]["done"] == 2
    with sqlite3.connect(path) as db:
        columns = {row[1] for row in db.execute("PRAGMA table_info(files)")}
        assert {"stage_seconds", "stage_rss", "peak_rss"} <= columns
        assert db.execute("SELECT count(*) FROM files WHERE state = 'done'").fetchone()[0] == 2


def test_dry_runs_plan_from_what_was_measured(tmp_path, cli, make_clips, sleep_stage):  # noqa: F811
    make_clips(tmp_path / "media", 4)
    stages = {"worker": {"stages": ["probe", "sleep"], "heartbeat_seconds": 1},
              "stage_settings": {"sleep": {"seconds": 0.5, "hold_mb": HOLD_MB}}}
    jobs = write_jobs(tmp_path, **stages)
    before = cli("submit", jobs, "--dry-run")
    assert "measured" not in before.out  # nothing has run: no rate
    assert cli("submit", jobs, "--wait").code == 0

    # Four more recordings, each ~2,000 times the bytes (sparse): ~67 media minutes expected apiece.
    for i in range(4):
        with open(tmp_path / "media" / f"long {i}.mp4", "wb") as fh:
            fh.truncate((tmp_path / "media" / "rec 00.mp4").stat().st_size * 2000)
    (tmp_path / "media" / "broken.mp4").write_bytes(b"not a recording")
    jobs = write_jobs(tmp_path, executor="slurm", slurm={"time": "00:10:00", "mem": "100M"},
                      sharding={"files_per_shard": 5}, **stages)
    plan = cli("submit", jobs, "--dry-run")
    assert plan.code == 0, plan.err
    assert "measured on 4 done file(s)" in plan.out
    [sleep_line] = [line for line in plan.out.splitlines() if line.strip().startswith("sleep")]
    rate = float(sleep_line.split()[1])
    ends = [r for r in journal_records(tmp_path / "work") if r["kind"] == "file_end"]
    want = sum(r["seconds"]["sleep"] for r in ends) / sum(r["facts"]["duration_s"] for r in ends) * 3600
    assert abs(rate - want) <= 0.5 and rate >= 0.5 / 2.05 * 3600, (sleep_line, want)  # at least 0.5 s per ~2 s
    rates = sorted(r["seconds"]["sleep"] / r["facts"]["duration_s"] * 3600 for r in ends)
    p90 = float(sleep_line.split("(p90 ")[1].split(")")[0])
    assert abs(p90 - rates[min(len(rates) - 1, int(0.9 * len(rates)))]) <= 0.5, (sleep_line, rates)
    assert "peak" in sleep_line
    assert "expected for these 5 file(s) in 1 shard(s)" in plan.out and "suggested" in plan.out
    err = " ".join(plan.err.split())
    assert "slurm.time 00:10:00 looks too small" in err
    assert "slurm.mem 100M looks too small" in err
    assert "slurm.signal-delay (300 s) is shorter than the longest file's expected time" in err
    assert "finishes the file in hand only if it ends within signal-delay" in err

    # The same plan, local: the figures, no warnings (no limits there).
    local = cli("submit", write_jobs(tmp_path, sharding={"files_per_shard": 5}, **stages), "--dry-run")
    assert "measured on 4 done file(s)" in local.out and "looks too small" not in local.err


def test_retry_dry_run_plans_for_what_it_retries(tmp_path, cli, make_clips, sleep_stage):  # noqa: F811
    make_clips(tmp_path / "media", 3)
    (tmp_path / "media" / "broken.mp4").write_bytes(b"not a recording")
    stages = {"worker": {"stages": ["probe", "sleep"], "heartbeat_seconds": 1},
              "stage_settings": {"sleep": {"seconds": 0.2}}}
    assert cli("submit", write_jobs(tmp_path, **stages), "--wait").code == 3  # one quarantined
    jobs = write_jobs(tmp_path, executor="slurm", slurm={"time": "00:10:00", "signal-delay": 60}, **stages)
    run = cli("retry", jobs, "--include-quarantined", "--dry-run", "--time", "00:30:00")
    assert run.code == 0, run.err
    assert "measured on 3 done file(s)" in run.out and "expected for these 1 file(s) in 1 shard(s)" in run.out
    assert "to fit slurm.time 00:30:00" in run.out
    assert "looks too small" not in run.err and "signal-delay" not in run.err
