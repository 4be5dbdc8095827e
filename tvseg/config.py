"""The typed configuration of a job (jobs.yaml), shared by orchestrator and worker.

orchestrator/config.py fills these from YAML; the worker receives WorkerConfig
inside its pickled task.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

EXECUTORS = ("auto", "local", "slurm")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)i?B?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4, "P": 1024**5}


def parse_size(text: str | int) -> int:
    """'20G' -> bytes (binary units, as SLURM's --mem).  Raises ValueError."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    m = _SIZE.match(str(text))
    if not m:
        raise ValueError(f"not a size: {text!r} (use bytes or a number with K, M, G or T)")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


@dataclass(frozen=True)
class ShardingConfig:
    files_per_shard: int | None = 50
    bytes_per_shard: int | None = None


@dataclass(frozen=True)
class SlurmConfig:
    """SLURM resources, by their sbatch names in jobs.yaml (``cpus-per-task``...)."""

    partition: str | None = None
    time: str = "04:00:00"
    mem: str = "16G"
    cpus_per_task: int = 4
    gpus: int = 0
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    array_parallelism: int | None = None
    extra_sbatch: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class WorkerConfig:
    queue_depth: int = 8
    scratch_dir: str | None = None  # None: $TMPDIR on the node, else /tmp
    scratch_budget: int | None = None  # bytes; None: the queue depth alone bounds it
    stages: tuple[str, ...] = ("probe",)
    max_attempts: int = 3
    heartbeat_seconds: float = 10.0
    stage_settings: Mapping[str, Any] = field(default_factory=dict)  # name -> Settings


@dataclass(frozen=True)
class JobConfig:
    name: str
    workdir: Path
    source: Path  # the jobs.yaml this came from
    inputs: tuple[str, ...] = ()
    inputs_from: Path | None = None
    executor: str = "auto"
    sharding: ShardingConfig = field(default_factory=ShardingConfig)
    slurm: SlurmConfig = field(default_factory=SlurmConfig)
    worker: WorkerConfig = field(default_factory=WorkerConfig)

    @property
    def manifest_path(self) -> Path:
        return self.workdir / "manifest.sqlite"
