"""The local executor: array tasks as processes on this machine, through submitit.

The processes outlive the command that started them; a task's job id is the pid of
submitit's controller process, and its state is read from /proc and submitit's
result pickle under ``<workdir>/logs/<job id>/``.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
from typing import Any, Sequence

from orchestrator.environment import interpreter, local_runtime, local_scratch, shell_join
from orchestrator.task_state import TaskState
from tvseg.config import JobConfig
from tvseg.errors import ExecutorError
from tvseg.task import ShardTask

LOCAL_TIMEOUT_MIN = 60 * 24 * 30  # the local executor has no time limit worth the name


class LocalExecutor:
    """Runs each array task as a process on this machine, through submitit's local executor."""

    name = "local"

    def __init__(self, config: JobConfig) -> None:
        self.config = config
        self.folder = config.logs_dir / "%j"

    def submit(self, tasks: Sequence[ShardTask], label: str) -> list[str]:
        import submitit  # noqa: PLC0415 - keep `status` free of this import
        from worker.main import run_shard  # noqa: PLC0415

        config = self.config
        runtime = local_runtime(config) if config.container is not None else None
        python = interpreter(config, sys.executable, runtime=runtime, scratch=local_scratch(config))
        executor = submitit.LocalExecutor(folder=self.folder, python=shell_join(python))
        executor.update_parameters(timeout_min=LOCAL_TIMEOUT_MIN, signal_delay_s=30)
        try:
            jobs = executor.map_array(run_shard, list(tasks))
        except Exception as exc:  # noqa: BLE001 - submitit raises plain exceptions
            raise ExecutorError(f"local submission failed: {exc}") from exc
        return [str(job.job_id) for job in jobs]

    def states(self, job_ids: Sequence[str]) -> dict[str, TaskState]:
        return {job_id: self._state(job_id) for job_id in job_ids}

    def _state(self, job_id: str) -> TaskState:
        pid = int(job_id)
        if _alive(pid):
            return TaskState(job_id, "RUNNING", terminal=False)
        result = self.config.logs_dir / job_id / f"{job_id}_0_result.pkl"
        try:
            with open(result, "rb") as fh:
                outcome, value = pickle.load(fh)
        except (OSError, EOFError, pickle.UnpicklingError, ValueError):
            return TaskState(job_id, "FAILED", terminal=True, reason="the worker process died without a result")
        if outcome == "success":
            return TaskState(job_id, "COMPLETED", terminal=True)
        return TaskState(job_id, "FAILED", terminal=True, reason=str(value).strip().splitlines()[-1][:300])

    def cancel(self, job_ids: Sequence[str]) -> None:
        for job_id in job_ids:
            if _alive(int(job_id)):
                try:
                    os.kill(int(job_id), signal.SIGTERM)  # the controller forwards it to the worker
                except ProcessLookupError:
                    pass

    def resources(self) -> dict[str, Any]:
        return {"executor": "local"}


def _alive(pid: int) -> bool:
    """True while the process runs; reaps it if it is our own finished child."""
    try:
        if os.waitpid(pid, os.WNOHANG) != (0, 0):
            return False
    except ChildProcessError:
        pass  # not our child: started by an earlier orchestrate command
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            cmdline = fh.read()
    except OSError:
        return False
    return fields[0] != b"Z" and b"submitit" in cmdline  # a reused pid is not our worker
