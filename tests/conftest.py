"""Shared fixtures: awkward paths, small generated media, jobs.yaml files, CLI runs."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from orchestrator.cli import main

# Paths in the archive carry spaces, quotes, shell metacharacters and non-ASCII.
AWKWARD = "arch ive 'q\" ;$x é—日本"


@pytest.fixture
def weird_tmp_path(tmp_path: Path) -> Path:
    """Like tmp_path, but below a folder whose name is hostile to shell strings."""
    path = tmp_path / AWKWARD
    path.mkdir()
    return path


@pytest.fixture(scope="session")
def clip_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-second mp4 (H.264 testsrc2 + an AAC tone), made once per session."""
    path = tmp_path_factory.mktemp("template") / "clip.mp4"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=160x90:rate=25:duration=2",
         "-f", "lavfi", "-i", "sine=frequency=440:duration=2", "-c:v", "libx264", "-preset", "veryfast",
         "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path)],
        check=True,
    )
    return path


@pytest.fixture
def make_clips(clip_template: Path) -> Callable[..., list[Path]]:
    """Copies of the template clip; each gets a distinct tail byte count so sizes differ."""

    def make(folder: Path, n: int, prefix: str = "rec", pad: int = 0) -> list[Path]:
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for i in range(n):
            path = folder / f"{prefix} {i:02d}.mp4"
            shutil.copyfile(clip_template, path)
            if pad:
                with open(path, "ab") as fh:  # mp4 readers ignore trailing bytes
                    fh.write(b"\0" * pad * (i + 1))
            paths.append(path)
        return paths

    return make


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
    for key, value in overrides.items():
        if value is None:
            data.pop(key, None)
        elif isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    path = folder / "jobs.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


class Run:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., Run]:
    """Run `orchestrate` in-process; returns exit code and captured output."""

    def run(*args: str) -> Run:
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run


def journal_records(workdir: Path) -> list[dict[str, Any]]:
    records = []
    for path in sorted((workdir / "journals").glob("shard-*/attempt-*.jsonl")):
        records += [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return records


def wait_for(predicate: Callable[[], bool], timeout: float = 60.0, every: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(every)
