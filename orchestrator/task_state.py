"""What an executor knows of one array task: the answer to its state queries.

Its own module so that the executors (local.py, slurm.py) and the protocol that
chooses between them (executor.py) import it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TaskState:
    """What an executor knows of one array task."""

    job_id: str
    state: str  # the executor's own word: RUNNING, COMPLETED, FAILED, TIMEOUT, ...
    terminal: bool  # the task will not run (again) by itself
    reason: str = ""  # why it ended, in the executor's terms
