"""Shared fixtures: awkward paths, small generated media, the segmenter's model files, CLI runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Callable

import pytest
import submitit  # noqa: F401 - first: its logging.config.dictConfig at import closes the logging
# handlers installed before it, e.g. absl's (TensorFlow's) on pytest's captured stderr; a worker
# process imports submitit before TensorFlow, so only a test process that loads both meets this.

from orchestrator.cli import main
from tests.media import make_program
from tvseg.errors import ModelError
from worker.models import fetch_models, verify_model_dir

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


# --- the segmenter's model files and a programme with known truth (stage and SLURM tests) ---

PROGRAM = [("speech", 15), ("music", 15), ("speech", 15), ("noise", 7.5), ("silence", 7.5)]
QUIET_PROGRAM = [("speech", 10), ("quiet", 6), ("music", 12), ("quiet", 4), ("speech", 8)]


@pytest.fixture(scope="session")
def fetched_models(tmp_path_factory) -> Path:
    """The model files fetched for real from the inaSpeechSegmenter 0.6.8 wheel (pip download)."""
    dest = tmp_path_factory.mktemp("models")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KERAS_HOME", str(tmp_path_factory.mktemp("empty-keras-home")))  # no shortcut via a cache
        fetch_models(dest)
    return dest


@pytest.fixture(scope="session")
def model_dir(request) -> Path:
    """$TVSEG_MODEL_DIR if it holds verified model files, else the fetched ones."""
    env = os.environ.get("TVSEG_MODEL_DIR")
    if env:
        try:
            verify_model_dir(Path(env))
            return Path(env)
        except ModelError:
            pass
    return request.getfixturevalue("fetched_models")


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def program(media_dir) -> tuple[Path, list[tuple[str, float, float]]]:
    """A 60 s mp4 (speech, music, speech, noise, silence) named with a space, quotes, a colon
    and non-ASCII characters; and its truth."""
    path = media_dir / "émission: l'été \"1\".mp4"
    return path, make_program(path, PROGRAM)


# --- a real sshd on 127.0.0.1 (remote inputs) ------------------------------------------


@pytest.fixture
def sshd(tmp_path_factory):
    """A started tests.sshd.Sshd of its own (tests stop and restart it); stopped afterwards.
    Skipped where it cannot run (not root, no openssh-server), failed instead in CI."""
    from tests.sshd import start_or_fail  # noqa: PLC0415

    server = start_or_fail(tmp_path_factory.mktemp("sshd"))
    if isinstance(server, str):
        pytest.skip(server)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def quiet_program(media_dir) -> tuple[Path, list[tuple[str, float, float]]]:
    """A 40 s audio-only file whose silences are low-level noise, as a broadcast's (not digital
    silence); and its truth."""
    path = media_dir / "quiet programme.m4a"
    return path, make_program(path, QUIET_PROGRAM, video=False)
