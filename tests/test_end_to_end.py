"""The spine end to end on the local executor: real worker processes, real SQLite, real ffprobe."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
from collections import Counter
from pathlib import Path

from tests.helpers import journal_records, wait_for, write_jobs
from orchestrator.config import load_config
from orchestrator.manifest import Manifest
from orchestrator.orchestration import fold_journals
from tvseg.states import FileState


def _outputs(workdir: Path) -> list[str]:
    return sorted(str(p.relative_to(workdir / "outputs")) for p in (workdir / "outputs").rglob("probe.json"))


def test_twenty_files_with_bad_inputs_in_awkward_paths(weird_tmp_path, cli, make_clips):
    root = weird_tmp_path
    make_clips(root / "media" / "day one", 10)
    make_clips(root / "media" / "day two", 10)  # same basenames as day one
    (root / "media" / "corrupt.mp4").write_bytes((root / "media" / "day one" / "rec 00.mp4").read_bytes()[:3000])
    (root / "media" / "empty.mp4").write_bytes(b"")
    (root / "media" / "notes.mp4").write_text("this is a text file, not a recording\n")
    missing = root / "media" / "gone; rm -rf 'x'.mp4"
    (root / "more.txt").write_text(f"# listed by hand\n{missing}\n\n")
    jobs = write_jobs(root, inputs_from="more.txt")

    run = cli("submit", jobs, "--wait")
    assert run.code == 3, run.err  # settled, some quarantined
    assert "submitted 5 array task(s)" in run.out

    status = cli("status", jobs, "--json")
    assert status.code == 0
    snap = status.json()
    assert snap["total"] == 24
    assert snap["files"] == {"pending": 0, "running": 0, "done": 20, "failed": 0, "quarantined": 4}

    manifest = Manifest(root / "work" / "manifest.sqlite")
    bad = {Path(f["path"]).name: f["error"] for f in manifest.files_in([FileState.QUARANTINED])}
    manifest.close()
    assert bad[missing.name] == f"{missing}: input not found"
    assert bad["empty.mp4"].startswith(f"{root}/media/empty.mp4: ffprobe cannot read it: ")
    assert bad["notes.mp4"].startswith(f"{root}/media/notes.mp4: ffprobe cannot read it: ")
    assert bad["corrupt.mp4"].startswith(f"{root}/media/corrupt.mp4: ")

    outputs = _outputs(root / "work")
    assert len(outputs) == 20 and len(set(outputs)) == 20  # equal basenames, distinct folders
    probe = json.loads((root / "work" / "outputs" / outputs[0]).read_text())
    assert probe["duration_s"] > 1.9 and {s["codec_type"] for s in probe["streams"]} == {"audio", "video"}
    assert not list((root / "work" / "outputs").glob("empty-*"))  # no empty folders for bad inputs


def test_submit_twice_is_idempotent_and_new_inputs_get_new_shards(tmp_path, cli, make_clips):
    make_clips(tmp_path / "media", 6)
    jobs = write_jobs(tmp_path)
    assert cli("submit", jobs, "--wait").code == 0
    again = cli("submit", jobs, "--wait")
    assert again.code == 0
    assert "0 new file(s), 0.00 GB, in 0 new shard(s); 6 already in the manifest" in again.out
    assert "nothing to submit" in again.out

    make_clips(tmp_path / "media" / "later", 3)
    third = cli("submit", jobs, "--wait")
    assert third.code == 0
    assert "3 new file(s)" in third.out and "in 1 new shard(s); 6 already in the manifest" in third.out
    ends = Counter(r["file_id"] for r in journal_records(tmp_path / "work") if r["kind"] == "file_end")
    assert len(ends) == 9 and set(ends.values()) == {1}  # nothing ran twice
    assert cli("status", jobs, "--json").json()["files"]["done"] == 9


def test_dry_run_writes_nothing(tmp_path, cli, make_clips):
    make_clips(tmp_path / "media", 12)
    jobs = write_jobs(tmp_path)
    run = cli("submit", jobs, "--dry-run")
    assert run.code == 0
    assert "12 new file(s)" in run.out and "in 3 new shard(s)" in run.out
    assert "dry run: nothing written, nothing submitted" in run.out
    assert not (tmp_path / "work").exists()


def _worker_pid(workdir: Path) -> int:
    starts = [r for r in journal_records(workdir) if r["kind"] == "task_start"]
    return starts[-1]["pid"]


def _one_shard_running(tmp_path: Path, cli, make_clips, ended: int, **overrides) -> tuple[Path, Path]:
    """Submit 40 clips as one shard and return (jobs.yaml, workdir) once ``ended`` files have ended."""
    make_clips(tmp_path / "media", 40)
    jobs = write_jobs(tmp_path, sharding={"files_per_shard": 40}, **overrides)
    workdir = tmp_path / "work"
    assert cli("submit", jobs).code == 0
    wait_for(lambda: (workdir / "journals").exists()
             and sum(r["kind"] == "file_end" for r in journal_records(workdir)) >= ended)
    return jobs, workdir


def test_sigkill_mid_shard_then_retry_finishes_only_the_rest(tmp_path, cli, make_clips):
    jobs, workdir = _one_shard_running(tmp_path, cli, make_clips, ended=5)
    os.kill(_worker_pid(workdir), signal.SIGKILL)

    def settled() -> bool:
        return cli("status", jobs, "--json").json()["shards"]["ended"] == 1

    wait_for(settled, timeout=30, every=0.2)
    snap = cli("status", jobs, "--json").json()
    done_before = snap["files"]["done"]
    assert 5 <= done_before < 40
    assert snap["files"]["running"] == 0
    assert snap["files"]["failed"] + snap["files"]["pending"] == 40 - done_before
    assert snap["shard_progress"][0]["end_reason"] == "FAILED: the worker process died without a result"

    plan = cli("retry", jobs, "--dry-run")
    assert f"{40 - done_before} file(s) to retry" in plan.out
    run = cli("retry", jobs, "--wait")
    assert run.code == 0, run.out + run.err
    assert cli("status", jobs, "--json").json()["files"]["done"] == 40
    done = Counter(r["file_id"] for r in journal_records(workdir) if r["kind"] == "file_end" and r["state"] == "done")
    assert len(done) == 40 and set(done.values()) == {1}  # none lost, none done twice
    assert len(_outputs(workdir)) == 40


def test_sigterm_stops_after_the_file_in_hand_and_leaves_the_rest_pending(tmp_path, cli, make_clips):
    scratch = tmp_path / "scratch"
    jobs, workdir = _one_shard_running(tmp_path, cli, make_clips, ended=3, worker={"scratch_dir": str(scratch)})
    os.kill(_worker_pid(workdir), signal.SIGTERM)
    wait_for(lambda: any(r["kind"] == "task_end" for r in journal_records(workdir)), timeout=30)

    end = [r for r in journal_records(workdir) if r["kind"] == "task_end"][0]
    assert end["reason"] == "stopped" and end["detail"] == "SIGTERM before every file was handled"
    snap = cli("status", jobs, "--json").json()
    assert snap["files"]["running"] == snap["files"]["failed"] == 0  # the file in hand was finished
    assert snap["files"]["pending"] == 40 - snap["files"]["done"] > 0
    assert list(scratch.iterdir()) == []  # scratch cleaned on the way out
    assert cli("retry", jobs, "--wait").code == 0
    assert cli("status", jobs, "--json").json()["files"]["done"] == 40


def test_status_while_workers_write_never_locks_and_adds_up(tmp_path, cli, make_clips):
    make_clips(tmp_path / "media", 30)
    jobs = write_jobs(tmp_path, sharding={"files_per_shard": 5})
    assert cli("submit", jobs).code == 0
    seen = []

    def all_ended() -> bool:
        run = cli("status", jobs, "--json")
        assert run.code == 0, run.err
        snap = run.json()
        assert sum(snap["files"].values()) == snap["total"] == 30
        seen.append(snap["files"]["done"])
        return snap["shards"]["ended"] == 6

    wait_for(all_ended, timeout=120, every=0.05, what="status to show the 6 shards ended")
    assert seen[-1] == 30 and len(seen) > 1


def test_scratch_budget_is_never_exceeded(tmp_path, cli, make_clips, monkeypatch):
    clips = make_clips(tmp_path / "media", 16, pad=200_000)  # 0.2 to 3.2 MB each
    budget = 4_000_000
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    jobs = write_jobs(tmp_path, sharding={"files_per_shard": 16},
                      worker={"scratch_dir": str(scratch), "scratch_budget": budget, "queue_depth": 8})
    peak = [0]
    done = threading.Event()

    def measure() -> None:
        while not done.is_set():
            used = 0
            for folder, _dirs, names in os.walk(scratch):  # os.walk skips folders removed meanwhile
                for name in names:
                    try:
                        used += os.stat(os.path.join(folder, name)).st_size
                    except FileNotFoundError:
                        pass
            peak[0] = max(peak[0], used)

    sampler = threading.Thread(target=measure)
    sampler.start()
    try:
        run = cli("submit", jobs, "--wait")
    finally:
        done.set()
        sampler.join()
    assert run.code == 0, run.out + run.err
    assert max(c.stat().st_size for c in clips) < budget
    assert 0 < peak[0] <= budget
    assert peak[0] > max(c.stat().st_size for c in clips[:8])  # more than one file was staged at once
    assert list(scratch.iterdir()) == []


def test_file_larger_than_budget_fails_retryably(tmp_path, cli, make_clips):
    make_clips(tmp_path / "media", 2, pad=1_000_000)
    jobs = write_jobs(tmp_path, worker={"scratch_budget": 1_500_000})
    assert cli("submit", jobs, "--wait").code == 3
    manifest = Manifest(load_config(jobs).manifest_path)
    failed = manifest.files_in([FileState.FAILED])
    manifest.close()
    assert len(failed) == 1
    assert failed[0]["error"].endswith("bytes do not fit the scratch budget of 1500000 bytes")
    assert failed[0]["error_class"] == "RetryableError"


def test_folding_journals_again_changes_nothing(tmp_path, cli, make_clips):
    """Journals folded twice give the same counts (idempotent)."""
    make_clips(tmp_path / "media", 5)
    jobs = write_jobs(tmp_path)
    assert cli("submit", jobs, "--wait").code == 0
    manifest_path = tmp_path / "work" / "manifest.sqlite"
    manifest = Manifest(manifest_path)
    before = manifest.counts()
    with manifest.engine.begin() as c:  # forget the offsets: every record is folded again
        c.exec_driver_sql("DELETE FROM journal_offsets")
    assert fold_journals(tmp_path / "work", manifest) > 0
    assert manifest.counts() == before
    manifest.close()
    shutil.rmtree(tmp_path / "work" / "journals")
    assert cli("status", jobs, "--json").json()["files"]["done"] == 5


def test_cancel_on_the_local_executor_returns_unfinished_files_to_pending(tmp_path, cli, make_clips):
    jobs, workdir = _one_shard_running(tmp_path, cli, make_clips, ended=3)
    run = cli("cancel", jobs)
    assert run.code == 0, run.err
    assert run.out.replace("\n", " ").startswith("test: cancelled 1 task(s); their unfinished files are pending again")
    snap = cli("status", jobs, "--json").json()
    assert snap["files"]["running"] == snap["files"]["failed"] == 0
    assert snap["files"]["pending"] == 40 - snap["files"]["done"] > 0
    assert snap["shards"] == {"created": 0, "submitted": 0, "running": 0, "ended": 1}
    assert cli("retry", jobs, "--wait").code == 0
    done = Counter(r["file_id"] for r in journal_records(workdir) if r["kind"] == "file_end" and r["state"] == "done")
    assert len(done) == 40 and set(done.values()) == {1}
