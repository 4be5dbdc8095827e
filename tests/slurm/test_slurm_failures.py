"""What SLURM does to tasks, on the real dev cluster: the time limit (signal, requeue,
resume), a memory kill and a retry with more memory, scancel of one task, `orchestrate
cancel`, and sacct being unavailable."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from slurm_helpers import (  # noqa: F401 - sleep_stage is a fixture
    attempts,
    file_ends,
    final_sacct_rows,
    sacct_rows,
    settle,
    sleep_stage,
    submit,
    wait_until,
    write_slurm_jobs,
)

from orchestrator import orchestration
from tvseg.states import FileState

pytestmark = pytest.mark.slurm


def files_of(config) -> dict[int, dict]:
    manifest = orchestration.open_manifest(config)
    try:
        return {f["id"]: f for f in manifest.files_in(list(FileState))}
    finally:
        manifest.close()


def shards_of(config) -> dict[int, dict]:
    manifest = orchestration.open_manifest(config)
    try:
        return {s["id"]: s for s in manifest.shard_progress(100)}
    finally:
        manifest.close()


def started_a_file(workdir: Path, shard_id: int) -> bool:
    runs = attempts(workdir).get(shard_id, [])
    return any(rec["kind"] == "file_start" for records in runs for rec in records)


def flat(text: str) -> str:
    """Console output without rich's line wrapping."""
    return " ".join(text.split())


@pytest.mark.slow
def test_time_limit_signals_requeues_and_resumes_at_the_next_file(slurm_cluster, sleep_stage, clip_template,
                                                                  tmp_path):
    # 5 files of 8 s against a 1-minute limit whose warning comes 30 s before it
    jobs = write_slurm_jobs(tmp_path, 5, clip_template, slurm={"time": "1", "signal-delay": 30},
                            stage_settings={"sleep": {"seconds": 8}})
    config, done = submit(jobs)
    counts, _ = settle(config, timeout=300)
    assert counts[FileState.DONE] == 5 and sum(counts.values()) == 5

    runs = attempts(config.workdir)[1]
    assert len(runs) >= 2
    ends = [[r for r in records if r["kind"] == "task_end"] for records in runs]
    for end in ends[:-1]:
        assert [(r["reason"], r["detail"]) for r in end] == [
            ("requeued", "SIGUSR2 (time limit near): the next attempt goes on")]
    assert [r["reason"] for r in ends[-1]] == ["complete"]
    for n, records in enumerate(runs):  # each attempt skips exactly what the earlier ones settled
        settled = sorted(r["file_id"] for earlier in runs[:n] for r in earlier if r["kind"] == "file_end")
        [start] = [r for r in records if r["kind"] == "task_start"]
        assert start["skipped"] == settled and start["attempt"] == n
    assert file_ends(config.workdir) == {i: ["done"] for i in range(1, 6)}  # done exactly once each
    assert {f["attempts"] for f in files_of(config).values()} == {1}
    restarts = {rec["facts"]["restarts"] for records in runs[1:] for rec in records if rec["kind"] == "file_end"}
    assert restarts and min(restarts) >= 1  # the later files ran in a requeued job
    history = [r["State"] for r in final_sacct_rows([done.job_ids[0]], "-X", "--duplicates")]
    assert history == ["REQUEUED"] * (len(runs) - 1) + ["COMPLETED"]
    assert shards_of(config)[1]["end_reason"] == "complete"


def test_memory_kill_is_recognised_and_retry_raises_the_memory(slurm_cluster, sleep_stage, clip_template, tmp_path,
                                                               cli):
    # the stage holds 300 MB on top of the worker: over 200M, under 400M
    jobs = write_slurm_jobs(tmp_path, 2, clip_template,
                            slurm={"mem": "200M", "max-mem": "1G", "grow-factor": 2},
                            stage_settings={"sleep": {"seconds": 2, "hold_mb": 300}})
    config, done = submit(jobs)
    settle(config)
    reason = shards_of(config)[1]["end_reason"]
    assert reason.startswith("OUT_OF_MEMORY: killed by signal 9 with MaxRSS ")
    assert reason.endswith(" of 200M requested (a memory kill, without cgroups)")
    first, second = files_of(config).values()
    assert (first["state"], first["error"]) == ("failed", f"the task ended while on this file: {reason}")
    assert (second["state"], second["error"]) == ("pending", f"not reached: {reason}")

    run = cli("retry", jobs, "--wait")
    assert run.code == 0, run.out + run.err
    out = flat(run.out)
    assert "OUT_OF_MEMORY: mem raised from 200M to 400M (x2, at most slurm.max-mem 1G)" in out
    assert "this retry asks for mem=400M time=5" in out
    assert {f["state"] for f in files_of(config).values()} == {"done"}
    [retried] = [s for s in shards_of(config).values() if s["id"] != 1]
    assert sacct_rows([retried["job_id"]], "-X")[0]["ReqMem"] == "400M"


def test_scancel_of_one_task_returns_its_files_and_retry_completes_them(slurm_cluster, sleep_stage, clip_template,
                                                                        tmp_path, cli):
    jobs = write_slurm_jobs(tmp_path, 9, clip_template, sharding={"files_per_shard": 3},
                            stage_settings={"sleep": {"seconds": 3}})
    config, done = submit(jobs)
    target = done.job_ids[1]  # shard 2
    wait_until(lambda: started_a_file(config.workdir, 2))
    subprocess.run([shutil.which("scancel"), target], check=True)
    counts, _ = settle(config)
    # SIGTERM: the worker finishes the file in hand (within KillWait) and stops
    stopped = "stopped: SIGTERM before every file was handled"
    assert shards_of(config)[2]["end_reason"] == stopped
    assert [(f["state"], f["error"]) for f in files_of(config).values() if f["shard_id"] == 2] == [
        ("done", None), ("pending", f"not reached: {stopped}"), ("pending", f"not reached: {stopped}")]
    assert (counts[FileState.DONE], counts[FileState.PENDING]) == (7, 2)
    assert wait_until(lambda: sacct_rows([target], "-X"), timeout=30)[0]["State"] == "CANCELLED by 0"

    run = cli("retry", jobs, "--wait")
    assert run.code == 0, run.out + run.err
    assert "2 file(s) to retry (2 pending) in 1 new shard(s)" in flat(run.out)
    assert file_ends(config.workdir) == {i: ["done"] for i in range(1, 10)}


def test_orchestrate_cancel_stops_the_run_and_retry_finishes_it(slurm_cluster, sleep_stage, clip_template, tmp_path,
                                                               cli):
    jobs = write_slurm_jobs(tmp_path, 6, clip_template, sharding={"files_per_shard": 3},
                            slurm={"array-parallelism": 1}, stage_settings={"sleep": {"seconds": 3}})
    config, done = submit(jobs)
    wait_until(lambda: started_a_file(config.workdir, 1))
    run = cli("cancel", jobs)
    assert (run.code, flat(run.out)) == (0, "t: cancelled 2 task(s); their unfinished files are pending again "
                                            "('orchestrate retry' runs them)")
    # the running task finished its file in hand and stopped; the queued one never ran
    stopped = "stopped: SIGTERM before every file was handled"
    assert {i: s["end_reason"] for i, s in shards_of(config).items()} == {1: stopped,
                                                                        2: "CANCELLED: by orchestrate cancel"}
    assert [(f["shard_id"], f["state"]) for f in files_of(config).values()] == [
        (1, "done"), (1, "pending"), (1, "pending"), (2, "pending"), (2, "pending"), (2, "pending")]
    assert {r["State"] for r in final_sacct_rows([done.job_ids[0].split("_")[0]], "-X")} == {"CANCELLED by 0"}
    assert cli("cancel", jobs).out == "t: no queued or running task to cancel\n"

    run = cli("retry", jobs, "--wait")
    assert run.code == 0, run.out + run.err
    assert {f["state"] for f in files_of(config).values()} == {"done"}
    assert {file_id: ends.count("done") for file_id, ends in file_ends(config.workdir).items()} == {
        i: 1 for i in range(1, 7)}


@pytest.mark.slow
def test_without_sacct_heartbeats_decide_and_unknown_is_never_success(slurm_cluster, sleep_stage, clip_template,
                                                                      tmp_path, cli, monkeypatch):
    jobs = write_slurm_jobs(tmp_path, 1, clip_template, stage_settings={"sleep": {"seconds": 300}})
    config, done = submit(jobs)
    wait_until(lambda: started_a_file(config.workdir, 1))
    # the same cluster, seen through a configuration without accounting: sacct really fails
    real_conf = Path(slurm_cluster["SLURM_CONF"])
    no_accounting = tmp_path / "slurm.conf"
    no_accounting.write_text("".join(
        "AccountingStorageType=accounting_storage/none\n" if line.startswith("AccountingStorageType=") else line
        for line in real_conf.read_text().splitlines(keepends=True)))
    monkeypatch.setenv("SLURM_CONF", str(no_accounting))
    warning = ("warning: the slurm executor cannot tell the state of its tasks (sacct failed: Slurm accounting "
               "storage is disabled); judging running tasks by their heartbeats\n")
    run = cli("status", "--json", jobs)
    assert run.err == warning
    assert json.loads(run.out)["shards"]["running"] == 1

    # killed outright: no task_end, and sacct cannot say; the stale heartbeat ends the shard
    subprocess.run([shutil.which("scancel"), "--full", "--signal=KILL", done.job_ids[0]], check=True,
                   env={**slurm_cluster, "SLURM_CONF": str(real_conf)})
    assert json.loads(cli("status", "--json", jobs).out)["shards"]["running"] == 1  # unknown is not success
    wait_until(lambda: json.loads(cli("status", "--json", jobs).out)["shards"]["ended"] == 1, timeout=90, every=2)
    reason = shards_of(config)[1]["end_reason"]
    assert reason.startswith("LOST: no heartbeat for ")
    [only] = files_of(config).values()
    assert (only["state"], only["error"]) == ("failed", f"the task ended while on this file: {reason}")
