"""Helpers of the SLURM tests: the test stage, jobs.yaml for SLURM, waiting, journals,
overlap of tasks, and wrappers that log calls to SLURM's clients (PATH shims)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from orchestrator import orchestration
from orchestrator.config import load_config
from tests.helpers import merge, wait_for, write_jobs
from tvseg.config import JobConfig
from tvseg.states import FileState
from worker import stages

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def sleep_stage(tmp_path_factory: pytest.TempPathFactory):
    """Register tests/slurm/sleep_stage.py as stage `sleep`, here and in every job
    (a .dist-info with the entry point, on PYTHONPATH, which sbatch passes on)."""
    root = tmp_path_factory.mktemp("plugin")
    dist = root / "tvseg_test_stages-0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: tvseg-test-stages\nVersion: 0\n")
    (dist / "entry_points.txt").write_text("[tvseg.stages]\nsleep = sleep_stage:SleepStage\n")
    paths = [str(root), str(HERE)]
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([*paths, *([old] if old else [])])
    sys.path[:0] = paths
    stages._entry_points.cache_clear()
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old
        for p in paths:
            sys.path.remove(p)
        stages._entry_points.cache_clear()


def write_slurm_jobs(folder: Path, n_files: int, clip: Path, **overrides: Any) -> Path:
    """A SLURM jobs.yaml over ``n_files`` copies of ``clip`` (under ``folder/media``) with the
    `sleep` stage; each section given in ``overrides`` is merged key by key."""
    media = folder / "media"
    media.mkdir(parents=True, exist_ok=True)
    for i in range(n_files):
        shutil.copyfile(clip, media / f"rec {i:02d}.mp4")
    slurm = {"time": "5", "mem": "200M", "cpus-per-task": 1, "signal-delay": 30}
    return write_jobs(folder, **merge({"name": "t", "inputs": ["media/*.mp4"], "executor": "slurm", "slurm": slurm,
                                       "worker": {"stages": ["sleep"], "heartbeat_seconds": 1},
                                       "stage_settings": {"sleep": {"seconds": 1}}}, overrides))


def submit(jobs: Path) -> tuple[JobConfig, orchestration.Submitted]:
    config = load_config(jobs)
    return config, orchestration.submit(config, orchestration.plan_submit(config))


def settle(config: JobConfig, timeout: float = 180.0, every: float = 1.0) -> tuple[dict[FileState, int], int]:
    """Reconcile until no shard is active: (counts by state, number of refreshes)."""
    manifest = orchestration.open_manifest(config)
    refreshes = 0
    try:
        deadline = time.monotonic() + timeout
        while True:
            orchestration.reconcile(config, manifest)
            refreshes += 1
            if not manifest.active_shards():
                return manifest.counts(), refreshes
            assert time.monotonic() < deadline, f"not settled in {timeout} s: {manifest.counts()}"
            time.sleep(every)
    finally:
        manifest.close()


def wait_until(predicate: Callable[[], Any], timeout: float = 120.0, every: float = 0.5, what: str | None = None) -> Any:
    """tests.helpers.wait_for with the slower pace of SLURM."""
    return wait_for(predicate, timeout=timeout, every=every, what=what)


def attempts(workdir: Path) -> dict[int, list[list[dict[str, Any]]]]:
    """shard id -> the records of each attempt, oldest first."""
    out: dict[int, list[list[dict[str, Any]]]] = {}
    for directory in sorted((workdir / "journals").glob("shard-*")):
        journals = sorted(directory.glob("attempt-*.jsonl"), key=lambda p: int(p.stem.split("-")[1]))
        out[int(directory.name.split("-")[1])] = [
            [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            for path in journals
        ]
    return out


def file_ends(workdir: Path) -> dict[int, list[str]]:
    """file id -> the states of every file_end recorded for it, over all shards and attempts."""
    ends: dict[int, list[str]] = {}
    for runs in attempts(workdir).values():
        for records in runs:
            for rec in records:
                if rec["kind"] == "file_end":
                    ends.setdefault(rec["file_id"], []).append(rec["state"])
    return ends


def task_spans(workdir: Path) -> list[tuple[float, float]]:
    """(task_start, task_end) times of every attempt."""
    spans = []
    for runs in attempts(workdir).values():
        for records in runs:
            start = [r["time"] for r in records if r["kind"] == "task_start"]
            end = [r["time"] for r in records if r["kind"] == "task_end"]
            spans.append((start[0], end[-1]))
    return spans


def max_overlap(spans: list[tuple[float, float]]) -> int:
    return max(sum(s <= t < e for s, e in spans) for t, _ in spans)


def others_ran(job_ids: set[str], spans: list[tuple[float, float]]) -> bool:
    """Whether jobs other than these arrays ran on the (shared) cluster during the spans."""
    first = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(min(s for s, _ in spans) - 1))
    last = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(max(e for _, e in spans) + 1))
    out = subprocess.run([shutil.which("sacct"), "-a", "-X", "-n", "-P", "-s", "R", "-o", "JobID", "-S", first,
                          "-E", last], capture_output=True, text=True, check=True).stdout
    return any(j.split("_")[0] not in job_ids for j in out.split())


def sacct_rows(array_ids: list[str], *options: str) -> list[dict[str, str]]:
    fields = ["JobID", "State", "ExitCode", "MaxRSS", "ReqMem"]
    out = subprocess.run([shutil.which("sacct"), "-n", "-P", *options, "-o", ",".join(fields),
                          "-j", ",".join(array_ids)], capture_output=True, text=True, check=True).stdout
    return [dict(zip(fields, line.split("|"))) for line in out.splitlines() if line]


def final_sacct_rows(array_ids: list[str], *options: str, count: int | None = None) -> list[dict[str, str]]:
    """sacct rows once none is still pending or running (and there are ``count`` of them):
    a worker's last journal record comes a moment before SLURM's accounting ends the task."""
    def ready() -> list[dict[str, str]] | None:
        rows = sacct_rows(array_ids, *options)
        busy = any(r["State"] in ("PENDING", "RUNNING", "COMPLETING") for r in rows)
        return rows if rows and not busy and (count is None or len(rows) == count) else None

    return wait_until(ready, timeout=60, what=f"sacct to show the final row(s) ({count or 'any number'}) of arrays {array_ids}")


class Shim:
    """A PATH entry whose `name` logs its arguments (one line per call), then runs ``script``
    (shell code; "$REAL" is the real command) — by default just the real command."""

    def __init__(self, folder: Path, name: str, script: str = 'exec "$REAL" "$@"') -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.log = folder / f"{name}.calls"
        self.log.touch()
        path = folder / name
        path.write_text(
            "#!/bin/bash\n"
            f"REAL={shlex.quote(shutil.which(name))}\n"
            f"LOG={shlex.quote(str(self.log))}\n"
            'printf "%s\\n" "$*" >>"$LOG"\n'
            f"N=$(wc -l <\"$LOG\")\n"
            f"{script}\n"
        )
        path.chmod(0o755)

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines()


@pytest.fixture
def shim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Shim]:
    """shim("sacct") puts a logging sacct first on PATH for this test; see Shim."""
    folder = tmp_path / "shims"

    def make(name: str, script: str = 'exec "$REAL" "$@"') -> Shim:
        made = Shim(folder, name, script)
        if not os.environ["PATH"].startswith(f"{folder}{os.pathsep}"):
            monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
        return made

    return make
