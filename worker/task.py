"""What the orchestrator hands one array task: a frozen, picklable description of a shard."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tvseg.config import WorkerConfig


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

    @property
    def outputs_root(self) -> Path:
        return Path(self.workdir) / "outputs"
