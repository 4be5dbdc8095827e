"""Fixtures for tests that need a real SLURM cluster (scripts/slurm-devcluster).

``slurm_cluster`` (session): starts the dev cluster (idempotent, ~0.3 s when already up),
exports SLURM_CONF in os.environ for the session (restored afterwards) and yields an env
dict for subprocesses. The cluster is left running afterwards: other sessions (or
xdist workers) may share it, and the next run starts warm. TVSEG_SLURM_STOP=1 stops it
at session end if this session started it. State dir: TVSEG_SLURM_DIR (/tmp/tvseg-slurm).

``slurm_cluster_max_array`` (function): a factory; ``slurm_cluster_max_array(4)``
restarts slurmctld/slurmd with MaxArraySize=4 and returns the env dict; the default
(10001) is restored after the test.

Skipped only when not root or SLURM is not installed, and never in CI (``CI`` set, as CI
services do): there they are the proof that the real thing works, so they fail instead.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

_TESTS_DIR = str(Path(__file__).resolve().parents[1])  # tests/, home of slurm_cluster.py
if _TESTS_DIR not in sys.path:
    sys.path.append(_TESTS_DIR)
import slurm_cluster as devcluster  # noqa: E402


@pytest.fixture(scope="session")
def slurm_cluster():
    reason = devcluster.skip_reason()
    if reason and devcluster.in_ci():
        pytest.fail(f"CI={os.environ['CI']}: the SLURM tests must run here, and cannot: {reason}", pytrace=False)
    if reason:
        pytest.skip(reason)
    was_up = devcluster.is_up()
    env = devcluster.ensure_cluster()
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = env["SLURM_CONF"]
    try:
        yield env
    finally:
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old
        if not was_up and os.environ.get("TVSEG_SLURM_STOP") == "1":
            devcluster.stop_cluster()


@pytest.fixture
def slurm_cluster_max_array(slurm_cluster):
    changed = False

    def restart(max_array_size: int) -> dict:
        nonlocal changed
        changed = True
        return devcluster.ensure_cluster(max_array_size=max_array_size)

    yield restart
    if changed:
        devcluster.ensure_cluster()  # back to the default MaxArraySize
