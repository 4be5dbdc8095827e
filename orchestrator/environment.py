"""The worker's environment: which Python runs an array task, and inside which container.

jobs.yaml chooses one of: the orchestrator's own interpreter (the default), a worker
venv's (``worker.python``), or an Apptainer/Singularity image (``container:``).
``interpreter`` turns that choice into the words that start Python (a pure function:
the executors append ``-u -m submitit.core._submit <folder>``); ``check_environment``
checks at submit what the login node can see.  The image is started with the
workdir and the scratch folder bound, as every task reads and writes both.
"""

from __future__ import annotations

import os
import shlex
import shutil
import tempfile
from dataclasses import dataclass
from typing import Sequence, Union

from tvseg.config import RUNTIMES, JobConfig
from tvseg.errors import ConfigError, ExecutorError


@dataclass(frozen=True)
class Shell:
    """A word the batch shell expands on the node (written here, never built from a path)."""

    text: str


Word = Union[str, Shell]
RUNTIME_WORD = Shell('"$tvseg_runtime"')
NODE_SCRATCH = Shell('"${TMPDIR:-/tmp}"')
# The node decides which runtime it has; with neither the task stops before Python starts.
DETECT_RUNTIME = [
    "if command -v apptainer >/dev/null 2>&1; then tvseg_runtime=apptainer",
    "elif command -v singularity >/dev/null 2>&1; then tvseg_runtime=singularity",
    'else echo "tvseg: neither apptainer nor singularity is on the PATH of $(hostname): load its module in '
    'slurm.setup or set container.runtime" >&2; exit 127',
    "fi",
]


def shell_join(words: Sequence[Word]) -> str:
    """One shell command line: every literal word quoted, Shell words as written."""
    return " ".join(w.text if isinstance(w, Shell) else shlex.quote(w) for w in words)


def interpreter(config: JobConfig, default_python: str, runtime: Word | None = None,
                scratch: Word | None = None) -> list[Word]:
    """The words that start the worker's Python.  In a container: ``runtime`` (default: the
    configured one, else the node's, found by DETECT_RUNTIME) and ``scratch`` (default:
    worker.scratch_dir, else the node's $TMPDIR) are bound with the workdir."""
    container = config.container
    if container is None:
        return [config.worker.python or default_python]
    if runtime is None:
        runtime = container.runtime or RUNTIME_WORD
    if scratch is None:
        scratch = config.worker.scratch_dir or NODE_SCRATCH
    words: list[Word] = [runtime, "exec"]
    if container.gpu:
        words.append("--nv")
    for bind in (str(config.workdir), scratch, *container.binds):
        words += ["--bind", bind]
    return [*words, *container.options, container.image, container.python]


def needs_runtime_detection(config: JobConfig) -> bool:
    return config.container is not None and config.container.runtime is None


def local_runtime(config: JobConfig) -> str:
    """The runtime a local executor uses: the configured one or the first on this machine's PATH."""
    assert config.container is not None
    wanted = [config.container.runtime] if config.container.runtime else list(RUNTIMES)
    for name in wanted:
        if shutil.which(name):
            return name
    missing = f"neither {' nor '.join(wanted)} is" if len(wanted) > 1 else f"{wanted[0]} is not"
    raise ExecutorError(f"container: {missing} on this machine's PATH, where the local executor runs the image")


def local_scratch(config: JobConfig) -> str:
    """The scratch folder a local worker uses (worker.main.scratch_root, resolved here)."""
    return config.worker.scratch_dir or os.environ.get("TMPDIR") or tempfile.gettempdir()


def check_environment(config: JobConfig) -> None:
    """What the login node can check before anything is queued: the worker's python and the image
    exist (they must be on a filesystem the nodes share), and the paths to bind can be bound."""
    python = config.worker.python
    if python is not None and not (os.path.isfile(python) and os.access(python, os.X_OK)):
        raise ConfigError(f"{config.source}: worker.python: {python} is not an executable file here (the "
                          "worker's venv must be on a filesystem this machine and the compute nodes share)")
    container = config.container
    if container is None:
        return
    if not os.path.isfile(container.image):
        raise ConfigError(f"{config.source}: container.image: no such file: {container.image} (build it as "
                          "containers/README.md says, onto a filesystem the compute nodes share)")
    for what, path in (("workdir", str(config.workdir)), ("worker.scratch_dir", config.worker.scratch_dir)):
        if path is not None and ("," in path or ":" in path):
            raise ConfigError(f"{config.source}: {what}: {path!r} holds ',' or ':', which an Apptainer bind "
                              "cannot hold; choose a path without them to run in a container")
