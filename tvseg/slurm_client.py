"""Running SLURM's client commands: a timeout on every call, transient failures retried.

The orchestrator (orchestrator/slurm.py: sbatch, sacct, scontrol, scancel, squeue) and
the worker (``scontrol requeue`` of itself) both call SLURM's clients; this is how.  A
client that does not answer within COMMAND_TIMEOUT_S counts as a transient failure, as
do the messages SLURM's clients print when slurmctld or slurmdbd is busy or briefly
unreachable.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from tvseg.errors import ExecutorError

COMMAND_TIMEOUT_S = 120.0
BACKOFF_S = 2.0  # the wait after a first transient failure; doubles after each one
QUERY_ATTEMPTS = 3  # sacct, scontrol, scancel, squeue
TRANSIENT = (
    "socket timed out",
    "unable to contact slurm controller",
    "connection refused",
    "connection timed out",
    "resource temporarily unavailable",
    "temporarily unable to accept job",
    "did not answer within",  # our own timeout of a client command
)
REQUEUE_TIMEOUT_S = 20.0  # per try: 3 tries and their backoff fit well within slurm.signal-delay
ALREADY_REQUEUED = "pending execution"  # scontrol requeue of a job that is back in the queue


def call(args: list[str], cwd: Path | None = None, timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run a client once, within ``timeout`` (default COMMAND_TIMEOUT_S); a timeout reads as
    a transient failure."""
    timeout = COMMAND_TIMEOUT_S if timeout is None else timeout
    try:
        return subprocess.run(args, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              errors="replace", timeout=timeout)
    except FileNotFoundError:
        raise ExecutorError(f"{args[0]} is not on PATH: SLURM's client commands are needed on this machine") from None
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(args, -1, "", f"{args[0]} did not answer within {timeout:g} s")


def message(proc: subprocess.CompletedProcess) -> str:
    """The last lines a failed client printed (stderr, else stdout)."""
    lines = [line for line in (proc.stderr.strip() or proc.stdout.strip()).splitlines() if line.strip()]
    return "\n".join(lines[-5:]) or f"exit status {proc.returncode} and no message"


def is_transient(text: str) -> bool:
    return any(marker in text.lower() for marker in TRANSIENT)


def backoff(attempt: int) -> None:
    """Sleep before retry number ``attempt`` (1, 2, ...)."""
    time.sleep(BACKOFF_S * 2 ** (attempt - 1))


def query(args: list[str], attempts: int = QUERY_ATTEMPTS, done_before: str | None = None,
          timeout: float | None = None) -> str:
    """Run a SLURM client; transient failures are retried with backoff.  Returns stdout.

    A transient failure may hide a command that took effect (the answer was lost):
    ``done_before`` is what the client says, when tried again, if the earlier try
    did; then that counts as success.  Raises ExecutorError with the client's own
    message.
    """
    last = ""
    for attempt in range(attempts):
        if attempt:
            backoff(attempt)
        proc = call(args, timeout=timeout)
        if proc.returncode == 0:
            return proc.stdout
        last = message(proc)
        if attempt and done_before and done_before in last.lower():
            return proc.stdout
        if not is_transient(last):
            raise ExecutorError(f"{args[0]} failed: {last}")
    raise ExecutorError(f"{args[0]} failed {attempts} times; the last time: {last}")


def requeue(job_id: str) -> None:
    """Have SLURM run this job (or array task, ``<array id>_<index>``) again: ``scontrol requeue``.

    Retried like a query, with a shorter timeout: the caller is near its time limit.  A
    second try that finds the job already back in the queue ("pending execution") means
    the first went through.  Raises ExecutorError.
    """
    query(["scontrol", "requeue", job_id], done_before=ALREADY_REQUEUED, timeout=REQUEUE_TIMEOUT_S)
