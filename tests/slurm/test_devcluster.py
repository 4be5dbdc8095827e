"""The dev SLURM cluster (scripts/slurm-devcluster) behaves like the real thing we rely on:
GPU gres, accounting (sacct), array throttles, requeue, MaxArraySize, and submitit."""

from __future__ import annotations

import os
import subprocess
import time
from datetime import datetime

import pytest
import slurm_cluster as devcluster

pytestmark = pytest.mark.slurm


def run(*cmd: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return proc


def config_value(key: str) -> str:
    for line in run("scontrol", "show", "config").stdout.splitlines():
        name, _, value = line.partition("=")
        if name.strip() == key:
            return value.strip()
    raise KeyError(key)


def sacct_rows(job_id: str) -> list[dict]:
    out = run("sacct", "-j", job_id, "-X", "-n", "-P", "-D", "-o", "JobID,State,ExitCode,Start,End").stdout
    keys = ["JobID", "State", "ExitCode", "Start", "End"]
    return [dict(zip(keys, line.split("|"))) for line in out.splitlines() if line]


def wait_sacct_final(job_id: str, n: int, timeout: float = 60) -> list[dict]:
    """sacct rows once n records reached a final state (accounting lags job end a bit)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = sacct_rows(job_id)
        done = [r for r in rows if r["State"] not in ("PENDING", "RUNNING", "REQUEUED") and r["End"] != "Unknown"]
        if len(done) >= n:
            return rows
        assert time.monotonic() < deadline, f"waited {timeout} s for {n} final sacct rows of job {job_id}: {rows}"
        time.sleep(0.5)


def pids() -> dict[str, str]:
    out = run(str(devcluster.SCRIPT), "status", "--dir", devcluster.cluster_dir()).stdout
    return {line.split()[0]: line.split()[1] for line in out.splitlines()}


def test_cluster_is_up(slurm_cluster):
    assert os.environ["SLURM_CONF"] == slurm_cluster["SLURM_CONF"]
    assert set(pids()) == {"munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd"}
    node = run("sinfo", "-h", "-N", "-o", "%N|%T|%c|%G|%P").stdout.split()
    assert len(node) == 1
    _, state, cpus, gres, partition = node[0].split("|")
    assert state in ("idle", "mixed", "allocated")
    assert (cpus, gres, partition) == ("8", "gpu:2", "debug*")
    assert "tvseg" in run("sacctmgr", "-n", "-P", "list", "cluster", "format=cluster").stdout.split()
    assert config_value("MaxArraySize") == "10001"
    assert "gres/gpu" in config_value("AccountingStorageTRES")
    assert config_value("JobRequeue") == "1"


def test_second_start_is_fast_and_idempotent(slurm_cluster):
    before = pids()
    t0 = time.monotonic()
    env = devcluster.ensure_cluster()
    elapsed = time.monotonic() - t0
    assert env["SLURM_CONF"] == slurm_cluster["SLURM_CONF"]
    assert pids() == before, "a warm start must not restart any daemon"
    assert elapsed < 2.0, f"warm start took {elapsed:.2f}s"


def test_gpu_job_completes_and_is_accounted(slurm_cluster, tmp_path):
    out = tmp_path / "gpu.out"
    job_id = run(
        "sbatch", "--parsable", "--wait", "--gres=gpu:1", f"--output={out}",
        "--wrap", 'echo "CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES"', timeout=120,
    ).stdout.strip()
    assert "CUDA_VISIBLE_DEVICES=0" in out.read_text().splitlines()
    rows = wait_sacct_final(job_id, 1)
    assert [(r["State"], r["ExitCode"]) for r in rows] == [("COMPLETED", "0:0")]
    alloc = run("sacct", "-j", job_id, "-X", "-n", "-P", "-o", "AllocTRES").stdout
    assert "gres/gpu=1" in alloc
    # more GPUs than the node has is rejected at submission
    assert run("sbatch", "--gres=gpu:3", "--wrap", "true", check=False).returncode != 0


def test_array_throttle_is_respected(slurm_cluster, tmp_path):
    job_id = run(
        "sbatch", "--parsable", "--array=0-9%3", f"--output={tmp_path}/a_%a.out", "--wrap", "sleep 3",
    ).stdout.strip()
    # poll squeue while the array runs ...
    max_running = 0
    deadline = time.monotonic() + 180
    while True:
        out = run("squeue", "-h", "-r", "-j", job_id, "-o", "%T").stdout.split()
        max_running = max(max_running, out.count("RUNNING"))
        if not out:
            break
        assert time.monotonic() < deadline, f"waited 180 s for array {job_id} to leave the queue: {out}"
        time.sleep(0.3)
    assert max_running <= 3
    # ... and check the accounting records: never more than 3 tasks overlapping
    rows = wait_sacct_final(job_id, 10)
    assert len(rows) == 10 and {r["State"] for r in rows} == {"COMPLETED"}, rows
    spans = [(datetime.fromisoformat(r["Start"]), datetime.fromisoformat(r["End"])) for r in rows]
    overlap = max(sum(s <= t < e for s, e in spans) for t, _ in spans)
    assert overlap <= 3, spans
    # 8 advertised CPUs make the throttle (not the 2 real cores) the limit: exactly 3 ran
    # at once, unless other users' jobs shared the node meanwhile (the cluster is shared)
    first, last = min(s for s, _ in spans), max(e for _, e in spans)
    others = run(
        "sacct", "-a", "-X", "-n", "-P", "-s", "R", "-o", "JobID",
        "-S", first.isoformat(), "-E", last.isoformat(),
    ).stdout.split()
    if all(j.split("_")[0] == job_id for j in others):
        assert overlap == 3, spans


def test_requeue_runs_job_again(slurm_cluster):
    job_id = run("sbatch", "--parsable", "--output=/dev/null", "--wrap", "sleep 120").stdout.strip()
    try:
        def state() -> str:
            return run("squeue", "-h", "-j", job_id, "-o", "%T").stdout.strip()

        deadline = time.monotonic() + 60
        while state() != "RUNNING":
            assert time.monotonic() < deadline, "job never started"
            time.sleep(0.3)
        run("scontrol", "requeue", job_id)
        # cred_expire=10 keeps the requeue delay at ~12 s (120 s default would be ~2.5 min)
        deadline = time.monotonic() + 60
        while True:
            info = run("scontrol", "show", "job", job_id).stdout
            if "JobState=RUNNING" in info and "Restarts=1" in info:
                break
            assert time.monotonic() < deadline, info
            time.sleep(0.5)
    finally:
        run("scancel", job_id, check=False)


def test_submitit_map_array(slurm_cluster, tmp_path):
    import submitit  # noqa: PLC0415 - a dependency of tvseg

    executor = submitit.AutoExecutor(folder=tmp_path / "submitit")
    assert executor.cluster == "slurm"
    executor.update_parameters(timeout_min=5, slurm_partition="debug", slurm_array_parallelism=3, cpus_per_task=1)
    # builtins pickle by reference, so the job needs no test module on its sys.path
    jobs = executor.map_array(pow, range(10), [2] * 10)
    array_ids = {job.job_id.split("_")[0] for job in jobs}
    assert len(array_ids) == 1 and all("_" in job.job_id for job in jobs)
    deadline = time.monotonic() + 180
    while not all(job.done() for job in jobs):
        assert time.monotonic() < deadline, [job.state for job in jobs]
        time.sleep(1)
    assert [job.result() for job in jobs] == [i**2 for i in range(10)]


def test_restart_with_small_max_array_size(slurm_cluster, slurm_cluster_max_array):
    env = slurm_cluster_max_array(4)
    assert env["SLURM_CONF"] == slurm_cluster["SLURM_CONF"]
    assert config_value("MaxArraySize") == "4"
    rejected = run("sbatch", "--array=0-9", "--output=/dev/null", "--wrap", "true", check=False)
    assert rejected.returncode != 0 and "Invalid job array specification" in rejected.stderr
    ok = run("sbatch", "--parsable", "--array=0-3", "--output=/dev/null", "--wrap", "true", check=False)
    assert ok.returncode == 0, ok.stderr
