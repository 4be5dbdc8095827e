"""Helpers shared by the test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import inspect
import json
import os
import time
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from tests.slurm_cluster import in_ci


def cannot_run(reason: str) -> None:
    """A test whose real component cannot run here: skipped on a developer's machine,
    failed in CI (``CI=true``), where every real component must run."""
    if in_ci():
        pytest.fail(f"CI={os.environ['CI']}: this test must run here, and cannot: {reason}", pytrace=False)
    pytest.skip(reason)


def write_jobs(folder: Path, **overrides: Any) -> Path:
    """A jobs.yaml for the local executor, with fast heartbeats, overridable key by key."""
    data: dict[str, Any] = {
        "name": "test",
        "workdir": "work",
        "inputs": ["media/**/*.mp4"],
        "executor": "local",
        "sharding": {"files_per_shard": 5},
        "worker": {"stages": ["probe"], "heartbeat_seconds": 1},
    }
    path = folder / "jobs.yaml"
    path.write_text(yaml.safe_dump(merge(data, overrides), allow_unicode=True), encoding="utf-8")
    return path


def merge(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``data`` with ``overrides``: a section given as a dict is merged key by key, None drops a key."""
    out = dict(data)
    for key, value in overrides.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def journal_records(workdir: Path) -> list[dict[str, Any]]:
    records = []
    for path in sorted((workdir / "journals").glob("shard-*/attempt-*.jsonl")):
        records += [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return records


def wait_for(predicate: Callable[[], Any], timeout: float = 60.0, every: float = 0.02, what: str | None = None) -> Any:
    """Poll ``predicate`` until it returns something true (returned), for at most ``timeout``
    seconds; then fail naming what was waited for (``what``, else the predicate's source)."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:g} s for {what or _describe(predicate)}")
        time.sleep(every)
    return value


def _describe(predicate: Callable[[], Any]) -> str:
    try:
        return " ".join(inspect.getsource(predicate).split())
    except (OSError, TypeError):
        return getattr(predicate, "__qualname__", repr(predicate))
