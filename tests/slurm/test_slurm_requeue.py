"""The worker's `scontrol requeue` of itself (worker.main._requeue) goes through the project's
client-call helper (tvseg/slurm_client.py): a timeout on each try, transient failures retried,
a lost answer recognised.  Against the dev cluster's real scontrol and a real running job; the
faults (a timed-out answer, a client that hangs) come from a PATH shim around the real command,
as the single-node cluster does not produce them on demand."""

from __future__ import annotations

import shutil
import subprocess

from slurm_helpers import shim, wait_until  # noqa: F401 - shim is a fixture

from tvseg import slurm_client
from tvseg.task import REQUEUE_SIGNAL
from worker.main import _requeue

SOCKET_TIMEOUT = "scontrol: error: slurm_requeue error: Socket timed out on send/recv operation"


def _slurm(*args: str) -> str:
    return subprocess.run([shutil.which(args[0]), *args[1:]], capture_output=True, text=True, check=True,
                          timeout=60).stdout.strip()


def _as_job(monkeypatch, job_id: str) -> None:
    """This process plays the worker of ``job_id`` (worker.main.job_id reads these)."""
    monkeypatch.setenv("SLURM_JOB_ID", job_id)
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)


def test_requeue_retries_a_transient_failure_and_a_lost_answer(slurm_cluster, shim, monkeypatch):  # noqa: F811
    monkeypatch.setattr(slurm_client, "BACKOFF_S", 0.05)
    job = _slurm("sbatch", "--parsable", "--requeue", "--output=/dev/null", "--wrap", "sleep 300")
    try:
        wait_until(lambda: _slurm("squeue", "-h", "-j", job, "-o", "%T") == "RUNNING", timeout=60,
                   what=f"job {job} to run")
        _as_job(monkeypatch, job)
        # 1st try: slurmctld does not answer; 2nd: it requeues, but the answer is lost; 3rd: "pending execution"
        scontrol = shim("scontrol", f'if [ "$N" -eq 1 ]; then echo "{SOCKET_TIMEOUT}" >&2; exit 1; fi\n'
                                    f'if [ "$N" -eq 2 ]; then "$REAL" "$@"; echo "{SOCKET_TIMEOUT}" >&2; exit 1; fi\n'
                                    'exec "$REAL" "$@"')
        assert _requeue() == ""
        assert scontrol.calls() == [f"requeue {job}"] * 3
        wait_until(lambda: "Restarts=1" in _slurm("scontrol", "show", "job", job), timeout=60,
                   what=f"job {job} to show one restart")
    finally:
        subprocess.run([shutil.which("scancel"), job], timeout=60)


def test_requeue_of_an_unknown_job_fails_at_once_with_scontrols_message(slurm_cluster, shim, monkeypatch):  # noqa: F811
    _as_job(monkeypatch, "999999")
    scontrol = shim("scontrol")
    failure = _requeue()
    assert failure.startswith(f"SIG{REQUEUE_SIGNAL} before every file was handled; the requeue failed: "
                              "scontrol failed: "), failure
    assert "Invalid job id" in failure and len(scontrol.calls()) == 1


def test_a_hung_scontrol_is_given_up_on_after_its_timeout_and_retries(slurm_cluster, shim, monkeypatch):  # noqa: F811
    monkeypatch.setattr(slurm_client, "BACKOFF_S", 0.05)
    monkeypatch.setattr(slurm_client, "REQUEUE_TIMEOUT_S", 0.5)
    _as_job(monkeypatch, "999999")
    scontrol = shim("scontrol", "exec sleep 30")
    assert _requeue() == (f"SIG{REQUEUE_SIGNAL} before every file was handled; the requeue failed: "
                          "scontrol failed 3 times; the last time: scontrol did not answer within 0.5 s")
    assert len(scontrol.calls()) == 3
