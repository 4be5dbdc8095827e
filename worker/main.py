"""One array task: run a shard's files through the stages, journaling every outcome.

`run_shard` is what the executor starts (through submitit) on a compute node.  It
has explicit exits (every file handled; a stop signal; a fatal start-up error) and a
guaranteed teardown (stages closed, scratch removed, journal closed).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import tvseg
from tvseg.errors import ExecutorError, VersionMismatch
from tvseg.journal import JournalWriter, settled_in_earlier_attempts, shard_dir
from tvseg.slurm_client import requeue
from tvseg.task import REQUEUE_SIGNAL, ShardTask
from worker.memory import PeakMemory
from worker.pipeline import Pipeline
from worker.stages import Stage, stage_class
from worker.staging import ByteBudget, RsyncStager

REQUEUE_SIG = signal.Signals[f"SIG{REQUEUE_SIGNAL}"]
STOP_SIGNALS = (signal.SIGTERM, REQUEUE_SIG, signal.SIGINT)


def job_id() -> str:
    """The executor's id of this task, as the orchestrator recorded it."""
    env = os.environ
    if "SLURM_ARRAY_JOB_ID" in env:
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID") or env.get("SUBMITIT_LOCAL_JOB_ID", str(os.getpid()))


def scratch_root(configured: str | None) -> Path:
    return Path(configured or os.environ.get("TMPDIR") or tempfile.gettempdir())


class StopFlag:
    """Turns the stop signals into an event the loop checks between files."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._on_signal)

    def restore(self) -> None:
        """The shard is over: the previous handlers again, but the requeue signal ignored from now
        on.  SLURM's warning may come late (it checks limits about every 30 s): after the last
        journal record it must neither kill the process that reports success (USR2's default, also
        what Python restores while it exits) nor have submitit's handler requeue a finished task."""
        for sig, handler in self._previous.items():
            signal.signal(sig, signal.SIG_IGN if sig == REQUEUE_SIG else handler)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.signal_name = signal.Signals(signum).name
        self.event.set()


def _heartbeat(journal: JournalWriter, every: float, done: threading.Event) -> None:
    while not done.wait(every):
        try:
            journal.heartbeat()
        except OSError:
            pass  # a filesystem hiccup: the next beat may succeed; staleness is judged by the reader


def _requeue() -> str:
    """Have SLURM run this task again (scontrol requeue, with a timeout and retries); why not, or ''."""
    try:
        requeue(job_id())
    except ExecutorError as exc:
        return f"SIG{REQUEUE_SIGNAL} before every file was handled; the requeue failed: {exc}"
    return ""


def check_version(task: ShardTask) -> None:
    """The pickled task and the journal format are a contract between two installs of tvseg:
    a worker of another version than the orchestrator's stops before it takes a file."""
    if task.tvseg_version != tvseg.__version__:
        theirs = task.tvseg_version or "(not said: an older one)"
        raise VersionMismatch(f"the worker's environment ({sys.executable}) holds tvseg {tvseg.__version__}, the "
                              f"orchestrator that submitted this task tvseg {theirs}: install the same version in "
                              "both (its files stay pending for 'orchestrate retry')")


def run_shard(task: ShardTask) -> dict[str, Any]:
    """Process one shard; returns a summary of outcomes (also in the journal)."""
    journal = JournalWriter(shard_dir(Path(task.workdir), task.shard_id))
    stop = StopFlag()
    stop.install()
    beat_done = threading.Event()
    scratch = scratch_root(task.worker.scratch_dir) / f"tvseg-shard{task.shard_id}-{os.getpid()}"
    stages: list[Stage] = []
    memory = PeakMemory()
    reason, detail = "error", ""
    try:
        check_version(task)
        journal.heartbeat()
        threading.Thread(target=_heartbeat, args=(journal, task.worker.heartbeat_seconds, beat_done),
                         name="tvseg-heartbeat", daemon=True).start()
        settled = settled_in_earlier_attempts(journal.directory) if journal.attempt else set()
        todo = [f for f in task.files if f.file_id not in settled]
        journal.write("task_start", shard=task.shard_id, attempt=journal.attempt, host=socket.gethostname(),
                      pid=os.getpid(), job_id=job_id(), skipped=sorted(settled), python=sys.executable,
                      tvseg=tvseg.__version__)
        for name in task.worker.stages:
            stage = stage_class(name)(task.worker.stage_settings[name])
            stages.append(stage)
            stage.setup()
        summary = Pipeline(
            files=todo, stages=stages, stager=RsyncStager(scratch, task.ssh, stop.event), journal=journal,
            outputs_root=task.outputs_root, queue_depth=task.worker.queue_depth,
            budget=ByteBudget(task.worker.scratch_budget), stop=stop.event, memory=memory,
        ).run()
        if summary.stopped:
            reason, detail = "stopped", f"{stop.signal_name or 'stop'} before every file was handled"
            # Near the time limit (or preempted with the same warning) a task that got on requeues
            # itself: the next attempt skips the files settled here.  One that finished no file
            # would only come back to the same point.
            if stop.signal_name == f"SIG{REQUEUE_SIGNAL}" and os.environ.get("SUBMITIT_EXECUTOR") == "slurm":
                if sum(summary.outcomes.values()):
                    reason, detail = "requeued", f"SIG{REQUEUE_SIGNAL} (time limit near): the next attempt goes on"
                else:
                    detail += "; not requeued: no file was finished in this attempt"
        else:
            reason = "complete"
        return {"shard": task.shard_id, "reason": reason, **summary.outcomes}
    except BaseException as exc:  # recorded as the task's end, then re-raised to the executor
        detail = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        beat_done.set()
        for stage in reversed(stages):
            try:
                stage.close()
            except Exception:  # noqa: BLE001 - teardown must go on
                pass
        shutil.rmtree(scratch, ignore_errors=True)
        memory.peak()  # the stages' setup (models loaded) counts too
        journal.write("task_end", reason=reason, detail=detail, peak_rss=memory.highest)
        if reason == "requeued":
            failure = _requeue()
            if failure:  # this end replaces the one above
                journal.write("task_end", reason="stopped", detail=failure, peak_rss=memory.highest)
        journal.close()
        stop.restore()
