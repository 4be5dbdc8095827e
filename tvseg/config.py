"""The typed configuration of a job (jobs.yaml), shared by orchestrator and worker.

orchestrator/config.py fills these from YAML; the worker receives WorkerConfig
inside its pickled task.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from tvseg.remote import SshConfig

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


_SLURM_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")
_SLURM_MEM = re.compile(r"^(\d+)([KMGT]?)$", re.IGNORECASE)


def parse_slurm_time(text: str) -> int:
    """A SLURM time limit ('90', '1:30:00', '2-12', '2-12:00:00') -> seconds.  Raises ValueError."""
    m = _SLURM_TIME.match(str(text).strip())
    if not m:
        raise ValueError(f"not a SLURM time: {text!r} (use minutes, HH:MM:SS or D-HH:MM:SS)")
    days, a, b, c = m.groups()
    if days is not None:  # D-HH, D-HH:MM, D-HH:MM:SS
        seconds = int(days) * 86400 + int(a) * 3600 + int(b or 0) * 60 + int(c or 0)
    elif c is not None:  # HH:MM:SS
        seconds = int(a) * 3600 + int(b) * 60 + int(c)
    elif b is not None:  # MM:SS
        seconds = int(a) * 60 + int(b)
    else:  # minutes
        seconds = int(a) * 60
    if seconds < 1:
        raise ValueError(f"not a usable time limit: {text!r}")
    return seconds


def format_slurm_time(seconds: int) -> str:
    """Seconds -> 'HH:MM:SS', or 'D-HH:MM:SS' from a day on."""
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    clock = f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"
    return f"{days}-{clock}" if days else clock


def parse_slurm_mem(text: str | int) -> int:
    """A SLURM --mem value ('16G', '500M', '2000': megabytes without a unit) -> bytes.  Raises ValueError."""
    m = _SLURM_MEM.match(str(text).strip())
    if not m or int(m.group(1)) < 1:
        raise ValueError(f"not a SLURM memory size: {text!r} (use a number with K, M, G or T; no unit means M)")
    return parse_size(m.group(1) + (m.group(2) or "M"))


def format_slurm_mem(n_bytes: int) -> str:
    """Bytes -> a --mem value, in whole megabytes (rounded up), or gigabytes when exact."""
    mb = -(-int(n_bytes) // _UNITS["M"])
    return f"{mb // 1024}G" if mb % 1024 == 0 else f"{mb}M"


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
    # `retry` after OUT_OF_MEMORY / TIMEOUT multiplies mem / time by grow_factor, up to
    # these caps (None: no automatic raise; `retry --mem/--time` still can).
    max_mem: str | None = None
    max_time: str | None = None
    grow_factor: float = 2.0
    signal_delay: int = 300  # seconds before the time limit that SLURM sends USR2 (stop and requeue)
    setup: tuple[str, ...] = ()  # shell lines the sbatch script runs before the worker (module load ...)


@dataclass(frozen=True)
class WorkerConfig:
    queue_depth: int = 8
    scratch_dir: str | None = None  # None: $TMPDIR on the node, else /tmp
    scratch_budget: int | None = None  # bytes; None: the queue depth alone bounds it
    stages: tuple[str, ...] = ("probe",)
    max_attempts: int = 3
    heartbeat_seconds: float = 10.0
    stage_settings: Mapping[str, Any] = field(default_factory=dict)  # name -> Settings
    python: str | None = None  # the worker's interpreter (a venv's bin/python); None: the orchestrator's


RUNTIMES = ("apptainer", "singularity")
CONTAINER_PYTHON = "/opt/tvseg/venv/bin/python"  # where containers/tvseg.def installs tvseg


@dataclass(frozen=True)
class ContainerConfig:
    """jobs.yaml ``container:``: the worker runs inside an Apptainer/Singularity image."""

    image: str  # a .sif, absolute
    runtime: str | None = None  # apptainer | singularity; None: whichever the node has
    binds: tuple[str, ...] = ()  # besides the workdir and the scratch folder, always bound
    gpu: bool = False  # --nv
    options: tuple[str, ...] = ()  # more arguments of `<runtime> exec`
    python: str = CONTAINER_PYTHON  # the interpreter inside the image


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
    ssh: SshConfig = field(default_factory=SshConfig)  # how to reach the hosts of host:/path inputs
    container: ContainerConfig | None = None

    @property
    def manifest_path(self) -> Path:
        return self.workdir / "manifest.sqlite"

    @property
    def logs_dir(self) -> Path:
        """Where the executors keep their scripts, task logs and submitit's pickles."""
        return self.workdir / "logs"
