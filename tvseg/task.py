"""What the orchestrator hands one array task, and how the scheduler warns it of its end.

A ShardTask is a frozen, picklable description of a shard: the executor pickles it
on the login node and the worker (``worker.main.run_shard``) unpickles it on the
compute node.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tvseg.config import WorkerConfig
from tvseg.remote import SshConfig

# The signal SLURM sends a task ``slurm.signal-delay`` seconds before its time limit
# (sbatch --signal=B:USR2@delay): the worker stops after the file in hand and requeues.
REQUEUE_SIGNAL = "USR2"


@dataclass(frozen=True)
class TaskFile:
    file_id: int
    path: str
    size: int
    output_name: str  # the file's folder under <workdir>/outputs/


@dataclass(frozen=True)
class ShardTask:
    shard_id: int
    workdir: str
    files: tuple[TaskFile, ...]
    worker: WorkerConfig
    ssh: SshConfig = SshConfig()  # for inputs written host:/path
    tvseg_version: str = ""  # the orchestrator's; a worker of another version stops before any file

    @property
    def outputs_root(self) -> Path:
        return Path(self.workdir) / "outputs"
