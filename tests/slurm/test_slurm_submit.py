"""Submitting to the real dev cluster: one array and its throttle, MaxArraySize chunks,
sbatch failures, GPUs, one sacct call per refresh."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from slurm_helpers import (  # noqa: F401 - shim and sleep_stage are fixtures
    attempts,
    file_ends,
    final_sacct_rows,
    max_overlap,
    others_ran,
    sacct_rows,
    settle,
    shim,
    sleep_stage,
    submit,
    task_spans,
    wait_until,
    write_slurm_jobs,
)

from orchestrator import orchestration
from orchestrator.config import load_config
from orchestrator.slurm import SlurmExecutor
from tvseg import slurm_client
from tvseg.errors import ExecutorError
from tvseg.states import FileState

pytestmark = pytest.mark.slurm

SOCKET_TIMEOUT = "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation"


def arrays_of(job_ids: list[str]) -> list[str]:
    return sorted({j.split("_")[0] for j in job_ids}, key=int)


def arrays_named(name: str, logs) -> list[str]:
    """Every array job sacct knows by this name that was submitted from this logs folder."""
    out = subprocess.run([shutil.which("sacct"), "-X", "-n", "-P", "-a", "-S", "now-1hour", f"--name={name}",
                          "-o", "JobID,WorkDir"], capture_output=True, text=True, check=True).stdout
    return sorted({line.split("|")[0].split("_")[0] for line in out.splitlines() if line.endswith(f"|{logs}")})


def test_one_array_completes_within_its_throttle(slurm_cluster, sleep_stage, clip_template, tmp_path, shim):
    sacct = shim("sacct")
    jobs = write_slurm_jobs(tmp_path, 30, clip_template, sharding={"files_per_shard": 5},
                            slurm={"array-parallelism": 3}, stage_settings={"sleep": {"seconds": 1}})
    config, done = submit(jobs)
    [array] = arrays_of(done.job_ids)
    assert done.job_ids == [f"{array}_{i}" for i in range(6)]
    script = (config.workdir / "logs" / "t-s1.sbatch").read_text()
    assert "#SBATCH --job-name=t-s1" in script.splitlines() and "#SBATCH --array=0-5%3" in script.splitlines()

    counts, refreshes = settle(config)
    assert counts[FileState.DONE] == 30 and sum(counts.values()) == 30
    assert len(sacct.calls()) == refreshes  # one batched call per refresh
    assert {r["State"] for r in final_sacct_rows([array], "-X", count=6)} == {"COMPLETED"}
    wait_until(lambda: arrays_named("t-s1", config.workdir / "logs") == [array], timeout=30,
               what=f"sacct to list array {array} as the only t-s1 from {config.workdir / 'logs'}")
    assert (config.workdir / "logs" / f"{array}_5.log").is_file()
    spans = task_spans(config.workdir)
    assert len(spans) == 6  # one attempt per shard
    overlap = max_overlap(spans)
    assert overlap <= 3
    if not others_ran({array}, spans):  # 8 advertised CPUs: the throttle, not the node, is the limit
        assert overlap == 3


def test_chunked_submission_runs_every_shard_once(slurm_cluster_max_array, sleep_stage, clip_template, tmp_path,
                                                   shim):
    slurm_cluster_max_array(4)
    sacct = shim("sacct")
    jobs = write_slurm_jobs(tmp_path, 10, clip_template, sharding={"files_per_shard": 1},
                            slurm={"array-parallelism": 3})
    config, done = submit(jobs)
    arrays = arrays_of(done.job_ids)
    assert len(arrays) == 3
    assert done.job_ids == [f"{arrays[k]}_{i}" for k, n in enumerate((4, 4, 2)) for i in range(n)]
    logs = config.workdir / "logs"
    for k, (n, after) in enumerate([(4, None), (4, arrays[0]), (2, arrays[1])]):
        lines = (logs / f"t-s1.{k + 1}.sbatch").read_text().splitlines()
        assert f"#SBATCH --array=0-{n - 1}%{min(n, 3)}" in lines
        assert [line for line in lines if "--dependency" in line] == (
            [f"#SBATCH --dependency=afterany:{after}"] if after else [])

    counts, refreshes = settle(config)
    assert counts[FileState.DONE] == 10 and sum(counts.values()) == 10
    calls = sacct.calls()
    assert len(calls) == refreshes
    assert f"--jobs={','.join(arrays)}" in calls[0].split()  # all three arrays in the one call
    assert file_ends(config.workdir) == {i: ["done"] for i in range(1, 11)}
    rows = final_sacct_rows(arrays, "-X", count=len(done.job_ids))
    assert {r["State"] for r in rows} == {"COMPLETED"}
    assert sorted(r["JobID"] for r in rows) == sorted(done.job_ids)
    spans = task_spans(config.workdir)
    assert len(spans) == 10 and max_overlap(spans) <= 3


def test_a_lost_sbatch_answer_is_found_not_submitted_twice(slurm_cluster, sleep_stage, clip_template, tmp_path,
                                                           shim, monkeypatch):
    monkeypatch.setattr(slurm_client, "BACKOFF_S", 0.05)
    # sbatch submits, then the answer is lost on the way back
    sbatch = shim("sbatch", f'"$REAL" "$@" >/dev/null; echo "{SOCKET_TIMEOUT}" >&2; exit 1')
    jobs = write_slurm_jobs(tmp_path, 2, clip_template, sharding={"files_per_shard": 1})
    config, done = submit(jobs)
    assert len(sbatch.calls()) == 1
    counts, _ = settle(config)
    assert counts[FileState.DONE] == 2
    # one array with this name from this folder (sacct may list a finished job a moment late)
    wait_until(lambda: arrays_named("t-s1", config.workdir / "logs") == arrays_of(done.job_ids), timeout=30,
               what=f"sacct to list array {arrays_of(done.job_ids)} as the only t-s1 from {config.workdir / 'logs'}")


def test_transient_sbatch_failures_are_retried_with_backoff(slurm_cluster, sleep_stage, clip_template, tmp_path,
                                                            shim, monkeypatch):
    monkeypatch.setattr(slurm_client, "BACKOFF_S", 0.05)
    sbatch = shim("sbatch", f'if [ "$N" -le 2 ]; then echo "{SOCKET_TIMEOUT}" >&2; exit 1; fi; exec "$REAL" "$@"')
    jobs = write_slurm_jobs(tmp_path, 2, clip_template, sharding={"files_per_shard": 1})
    config, done = submit(jobs)
    assert len(sbatch.calls()) == 3
    assert settle(config)[0][FileState.DONE] == 2


def test_a_rejection_is_reported_with_sbatchs_message(slurm_cluster, sleep_stage, clip_template, tmp_path, shim,
                                                      cli):
    sbatch = shim("sbatch")
    jobs = write_slurm_jobs(tmp_path, 2, clip_template, sharding={"files_per_shard": 1}, slurm={"partition": "nope"})
    run = cli("submit", jobs)
    assert run.code == 1
    assert run.err == ("error: sbatch rejected array t-s1: sbatch: error: invalid partition specified: nope\n"
                       "sbatch: error: Batch job submission failed: Invalid partition name specified\n"
                       "2 shard(s) stay unsubmitted in the manifest; 'orchestrate submit' or 'orchestrate retry' "
                       "submits them again\n")
    assert len(sbatch.calls()) == 1  # not retried: it would be rejected again
    manifest = orchestration.open_manifest(load_config(jobs))
    assert manifest.created_shards() == [1, 2]
    manifest.close()


def test_no_job_id_from_sbatch_is_an_error(slurm_cluster, sleep_stage, clip_template, tmp_path, shim):
    shim("sbatch", "exit 0")
    jobs = write_slurm_jobs(tmp_path, 1, clip_template)
    with pytest.raises(ExecutorError, match=r"^sbatch gave no job id for array t-s1 \(output: ''; exit status 0 "
                                            r"and no message\)"):
        submit(jobs)


def test_a_failed_later_array_cancels_the_earlier_ones(slurm_cluster, sleep_stage, clip_template, tmp_path, shim,
                                                       monkeypatch):
    monkeypatch.setattr(SlurmExecutor, "max_array_size", lambda self: 2)
    shim("sbatch", 'if [ "$N" -eq 2 ]; then echo "sbatch: error: Batch job submission failed: Invalid account" >&2; '
                   'exit 1; fi; exec "$REAL" "$@"')
    jobs = write_slurm_jobs(tmp_path, 3, clip_template, sharding={"files_per_shard": 1})
    config = load_config(jobs)
    with pytest.raises(ExecutorError) as caught:
        orchestration.submit(config, orchestration.plan_submit(config))
    submitted = config.workdir / "logs" / "submitit"
    first = sorted({p.name.split("_")[0] for p in submitted.glob("*_submitted.pkl")})
    assert len(first) == 1
    assert str(caught.value) == (
        "sbatch rejected array t-s1.2: sbatch: error: Batch job submission failed: Invalid account\n"
        f"(array(s) {first[0]}, submitted before in this submission, have been cancelled)\n"
        "3 shard(s) stay unsubmitted in the manifest; 'orchestrate submit' or 'orchestrate retry' submits them again")
    assert not list(submitted.glob(".*.pkl"))  # no pickle of array 2 left behind
    # cancelled before it started: sacct shows the array as one range
    wait_until(lambda: sacct_rows(first, "-X") == [
        {"JobID": f"{first[0]}_[0-1]", "State": "CANCELLED by 0", "ExitCode": "0:0", "MaxRSS": "", "ReqMem": "200M"}
    ], timeout=30)
    # submitted again, whatever the cancelled tasks finished is not done twice
    monkeypatch.undo()
    config, _ = submit(jobs)
    assert settle(config)[0][FileState.DONE] == 3
    assert {file_id: ends.count("done") for file_id, ends in file_ends(config.workdir).items()} == {1: 1, 2: 1, 3: 1}


def test_gpus_asked_for_are_visible_to_the_worker(slurm_cluster, sleep_stage, clip_template, tmp_path):
    jobs = write_slurm_jobs(tmp_path, 2, clip_template, slurm={"gpus": 2})
    config, done = submit(jobs)
    assert settle(config)[0][FileState.DONE] == 2
    facts = [rec["facts"] for runs in attempts(config.workdir).values()
             for records in runs for rec in records if rec["kind"] == "file_end"]
    assert [f["cuda_visible_devices"] for f in facts] == ["0,1", "0,1"]
    final_sacct_rows([done.job_ids[0]], "-X")  # the journal ends a moment before accounting does
    alloc = subprocess.run([shutil.which("sacct"), "-X", "-n", "-P", "-o", "AllocTRES", "-j", done.job_ids[0]],
                           capture_output=True, text=True, check=True).stdout
    assert "gres/gpu=2" in alloc


def test_auto_with_sbatch_but_no_cluster_says_what_it_chose(slurm_cluster, sleep_stage, clip_template, tmp_path,
                                                            monkeypatch, cli):
    """sbatch on the PATH, no SLURM configuration: the error says why SLURM was used and how to run here."""
    monkeypatch.setenv("SLURM_CONF", str(tmp_path / "no such slurm.conf"))
    jobs = write_slurm_jobs(tmp_path, 2, clip_template, executor="auto", sharding={"files_per_shard": 1})
    run = cli("submit", jobs)
    assert run.code == 1
    assert run.err.startswith("error: ")
    assert run.err.endswith(
        "\nexecutor: auto chose SLURM because sbatch is on the PATH; to run on this machine instead, set "
        "executor: local in the jobs file\n2 shard(s) stay unsubmitted in the manifest; 'orchestrate submit' or "
        "'orchestrate retry' submits them again\n"), run.err
    manifest = orchestration.open_manifest(load_config(jobs))
    assert manifest.created_shards() == [1, 2]
    manifest.close()
