"""Helpers to drive the project's dev SLURM cluster (scripts/slurm-devcluster) from tests.

The cluster is a real single-node SLURM (munge, MariaDB, slurmdbd, slurmctld, slurmd)
whose whole state lives under ``TVSEG_SLURM_DIR`` (default ``/tmp/tvseg-slurm``).
``ensure_cluster`` is idempotent and cheap (~0.3 s) when it is already up with the
same parameters; with other parameters it restarts slurmctld/slurmd (~3 s).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "scripts" / "slurm-devcluster"
DEFAULT_MAX_ARRAY_SIZE = 10001
DEFAULT_CPUS = 8
# Cold start with a fresh MariaDB takes ~3 s; leave room for slow CI machines.
START_TIMEOUT_S = 300


def cluster_dir() -> str:
    return os.environ.get("TVSEG_SLURM_DIR", "/tmp/tvseg-slurm")


def slurm_conf() -> str:
    return str(Path(cluster_dir()).resolve() / "slurm.conf")


def in_ci() -> bool:
    """True under CI (``CI=true``, as CI services and .ci/run set it)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def skip_reason() -> str | None:
    """Why the cluster cannot run here, or None if it can."""
    if os.geteuid() != 0:
        return "the dev SLURM cluster runs its daemons as root (not root here)"
    if not (shutil.which("slurmctld") or Path("/usr/sbin/slurmctld").exists()):
        return "slurmctld is not installed (apt-get install slurm-wlm slurmctld slurmd munge slurmdbd mariadb-server)"
    return None


def _run(command: str, *args: str, timeout: float = START_TIMEOUT_S) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [str(SCRIPT), command, "--dir", cluster_dir(), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return proc


def is_up() -> bool:
    return _run("status", timeout=30).returncode == 0


def ensure_cluster(max_array_size: int = DEFAULT_MAX_ARRAY_SIZE, cpus: int = DEFAULT_CPUS) -> dict:
    """Start (or reconfigure) the cluster; return a copy of os.environ with SLURM_CONF set."""
    proc = _run("start", "--max-array-size", str(max_array_size), "--cpus", str(cpus))
    if proc.returncode != 0:
        raise RuntimeError(
            f"{SCRIPT} start failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}"
        )
    env = os.environ.copy()
    env["SLURM_CONF"] = slurm_conf()
    return env


def stop_cluster() -> None:
    proc = _run("stop", timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"{SCRIPT} stop failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}")
