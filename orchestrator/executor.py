"""Executors: the protocol every way of starting array tasks follows, and the choice of one.

An executor submits a list of ShardTasks (tvseg/task.py) as one array (through
submitit), returns one job id per task in order, answers batched state queries, and
cancels.  The rest of the orchestrator never sees submitit, sbatch or process ids: those live in
orchestrator/local.py (processes on this machine) and orchestrator/slurm.py.
"""

from __future__ import annotations

import shutil
from typing import Any, Protocol, Sequence

from orchestrator.task_state import TaskState
from tvseg.config import JobConfig
from tvseg.task import ShardTask


class Executor(Protocol):
    name: str

    def submit(self, tasks: Sequence[ShardTask], label: str) -> list[str]:
        """Start the tasks as one array (or as few as the scheduler allows) named after ``label``;
        one job id per task, in order.  All or nothing: on ExecutorError no task was left queued."""

    def states(self, job_ids: Sequence[str]) -> dict[str, TaskState]:
        """The state of each task, in one batched query; unknown ids are left out.

        Raises ExecutorError when the executor cannot answer (the caller falls back to heartbeats).
        """

    def cancel(self, job_ids: Sequence[str]) -> None:
        """Stop these tasks (they get the stop signal and record what they have)."""

    def resources(self) -> dict[str, Any]:
        """What a submission asks for, recorded with it."""


def executor_kind(config: JobConfig) -> str:
    """'local' or 'slurm': what ``executor: auto`` resolves to here (SLURM when sbatch is on PATH)."""
    if config.executor == "auto":
        return "slurm" if shutil.which("sbatch") else "local"
    return config.executor


def auto_choice(config: JobConfig, executor: Executor) -> str:
    """For an error of ``executor``: why ``executor: auto`` chose it, and how to choose otherwise
    ('' when it was not chosen by auto, or was this machine)."""
    if config.executor != "auto" or executor.name != "slurm":
        return ""
    return ("executor: auto chose SLURM because sbatch is on the PATH; to run on this machine instead, "
            "set executor: local in the jobs file")


def make_executor(config: JobConfig) -> Executor:
    # Each executor's module is imported only when chosen: a command pays for one, not both.
    kind = executor_kind(config)
    if kind == "local":
        from orchestrator.local import LocalExecutor  # noqa: PLC0415

        return LocalExecutor(config)
    from orchestrator.slurm import SlurmExecutor  # noqa: PLC0415

    return SlurmExecutor(config)
