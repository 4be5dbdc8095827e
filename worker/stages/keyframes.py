"""The ``keyframes`` stage: K frames evenly spaced inside each long-enough music segment.

Each frame is taken by seeking (ffmpeg's input-side ``-ss``: it decodes from the key frame
before that time only): one call a segment that seeks to the first frame and decodes on to
the last when the frames are close together, else one seeking call a frame.  Either way the
work per segment does not depend on the recording's length; memory neither, but for the
container's sample index that ffmpeg holds while the file is open (an mp4's: about 24 bytes
a video or audio packet, ~6 MB an hour; K seeking inputs in one call would hold K of them).  Reads the
``segment`` stage's ``segments.csv`` in the file's output folder (or, with
``segments_from``, that of an earlier run's work folder, copied in); writes the JPEGs under
``keyframes/`` and the index ``keyframes.csv`` (tvseg/visual.py).  Imports nothing heavy.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tvseg.errors import BadInput, RetryableError
from tvseg.journal import atomic_write_text
from tvseg.visual import KEYFRAMES_CSV, KEYFRAMES_DIR, KEYFRAMES_HEADER, KEYFRAMES_JSON, keyframe_name
from worker.stages import FileContext, Stage, StageResult

SEGMENTS_CSV, SEGMENTS_JSON = "segments.csv", "segments.json"  # the segment stage's outputs
OUTPUTS = (KEYFRAMES_CSV, KEYFRAMES_JSON)


@dataclass(frozen=True)
class Settings:
    """Options of the keyframes stage (jobs.yaml ``stage_settings.keyframes``)."""

    min_seconds: float = 3.0  # music segments shorter than this get no keyframes
    frames: int = 5  # K: keyframes per music segment, evenly spaced inside it
    width: int = 160  # size of the JPEGs (the classifier resizes to its own input size)
    height: int = 90
    quality: int = 3  # ffmpeg's JPEG -q:v, 2 (best) to 31
    # Frames at most this far apart are taken in one ffmpeg call that seeks to the first and decodes
    # on to the last; farther apart, one seeking call a frame (a call costs ~0.1 s to start).
    decode_gap_seconds: float = 10.0
    timeout_seconds: float = 300.0  # for one ffmpeg call
    # An earlier run's work folder whose segment outputs to use (the segment stage need not run again).
    segments_from: str | None = field(default=None, metadata={"path": True})

    def __post_init__(self) -> None:
        if self.min_seconds <= 0:
            raise ValueError(f"min_seconds must be positive, not {self.min_seconds}")
        if self.frames < 1:
            raise ValueError(f"frames must be at least 1, not {self.frames}")
        if self.width < 16 or self.height < 16:
            raise ValueError(f"width and height must be at least 16 pixels, not {self.width}x{self.height}")
        if not 2 <= self.quality <= 31:
            raise ValueError(f"quality must be between 2 and 31, not {self.quality}")


def frame_times(start: float, stop: float, k: int) -> list[float]:
    """K times evenly spaced inside [start, stop): the middles of K equal parts, to the millisecond."""
    step = (stop - start) / k
    return [round(start + (i + 0.5) * step, 3) for i in range(k)]


def music_segments(path: Path, min_seconds: float) -> list[tuple[int, float, float]]:
    """(row index, start, stop) of the music segments at least ``min_seconds`` long in segments.csv."""
    found = []
    with open(path, newline="", encoding="utf-8") as fh:
        for i, row in enumerate(csv.DictReader(fh)):
            start, stop = float(row["start"]), float(row["stop"])
            if row["labels"] == "music" and stop - start >= min_seconds:
                found.append((i, start, stop))
    return found


class KeyframesStage(Stage):
    """Keyframes inside music segments, for the classifier."""

    name = "keyframes"
    Settings = Settings

    def setup(self) -> None:
        for tool in ("ffmpeg", "ffprobe"):
            if shutil.which(tool) is None:
                raise RetryableError(f"{tool} is not on PATH on this node (install ffmpeg)")

    def process(self, ctx: FileContext) -> StageResult:
        s = self.settings
        copied = self._segments(ctx)
        settings = asdict(s)
        cached = self._cached(ctx.output_dir, settings)
        if cached is not None:
            return StageResult((*copied, *OUTPUTS), cached)
        segments = music_segments(ctx.output_dir / SEGMENTS_CSV, s.min_seconds)
        folder = ctx.output_dir / KEYFRAMES_DIR
        shutil.rmtree(folder, ignore_errors=True)  # frames of earlier settings
        folder.mkdir()
        if segments:
            self._check_video(ctx)
        rows: list[tuple[int, float, str]] = []
        for index, start, stop in segments:
            rows += self._extract(ctx, index, frame_times(start, stop, s.frames), folder)
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(KEYFRAMES_HEADER)
        writer.writerows((index, f"{t:.3f}", path) for index, t, path in rows)
        facts = {"music_segments": len(segments), "keyframes": len(rows)}
        atomic_write_text(ctx.output_dir / KEYFRAMES_CSV, out.getvalue())
        atomic_write_text(ctx.output_dir / KEYFRAMES_JSON, json.dumps({"settings": settings, **facts}, indent=2))
        return StageResult((*copied, *OUTPUTS), facts)

    def _segments(self, ctx: FileContext) -> tuple[str, ...]:
        """Make sure segments.csv is in the output folder; returns the files copied there."""
        if self.settings.segments_from is None:
            if not (ctx.output_dir / SEGMENTS_CSV).is_file():
                raise RetryableError(f"{ctx.source}: no {SEGMENTS_CSV} in {ctx.output_dir}: run the segment stage "
                                     "before keyframes (worker.stages), or set keyframes.segments_from")
            return ()
        earlier = Path(self.settings.segments_from) / "outputs" / ctx.output_dir.name
        if not (earlier / SEGMENTS_CSV).is_file():
            raise RetryableError(f"{ctx.source}: no {SEGMENTS_CSV} in {earlier} (keyframes.segments_from): "
                                 "has the segment stage finished this file in that run?")
        copied = []
        for name in (SEGMENTS_CSV, SEGMENTS_JSON):
            if (earlier / name).is_file():
                atomic_write_text(ctx.output_dir / name, (earlier / name).read_text(encoding="utf-8"))
                copied.append(name)
        return tuple(copied)

    def _cached(self, out: Path, settings: dict) -> dict | None:
        """The facts of an earlier run with the same settings whose frames are all there."""
        try:
            summary = json.loads((out / KEYFRAMES_JSON).read_text())
            with open(out / KEYFRAMES_CSV, newline="", encoding="utf-8") as fh:
                paths = [row["path"] for row in csv.DictReader(fh)]
        except (OSError, ValueError, KeyError):
            return None
        if summary.get("settings") != settings or not all((out / p).is_file() for p in paths):
            return None
        return {"music_segments": summary.get("music_segments"), "keyframes": summary.get("keyframes")}

    def _check_video(self, ctx: FileContext) -> None:
        cmd = ["ffprobe", "-v", "error", "-select_streams", "v", "-show_entries", "stream=index",
               "-of", "csv=p=0", "--", str(ctx.staged)]
        proc = self._run(ctx, cmd, "ffprobe")
        if not proc.stdout.strip():
            raise BadInput(f"{ctx.source}: no video stream (the keyframes stage needs pictures)")

    def _extract(self, ctx: FileContext, index: int, times: list[float], folder: Path) -> list[tuple[int, float, str]]:
        """The segment's frames: frames close together in one call (seek to the first, decode on to
        the last), far apart one seeking call each; one container index in memory at a time."""
        s = self.settings
        names = [keyframe_name(index, t) for t in times]
        scale = ["-vf", f"scale={s.width}:{s.height}", "-q:v", str(s.quality)]
        step = times[1] - times[0] if len(times) > 1 else 0.0
        if step <= s.decode_gap_seconds:
            # Timestamps restart at 0 at the seek: keep the first frame at or after 0, step, 2 step...
            pick = f"select='if(gte(t,ld(0)),st(0,ld(0)+{step:.3f})+1,0)'"
            self._run(ctx, ["ffmpeg", "-nostdin", "-v", "error", "-y", "-ss", f"{times[0]:.3f}", "-i", str(ctx.staged),
                            "-map", "0:v:0", "-vf", f"{pick},scale={s.width}:{s.height}", "-fps_mode", "passthrough",
                            "-frames:v", str(len(times)), "-q:v", str(s.quality), "-start_number", "0", "f%03d.jpg"],
                      "ffmpeg", cwd=folder)  # a relative pattern: the folder's name may hold '%'
            for i, name in enumerate(names):
                if (folder / f"f{i:03d}.jpg").is_file():
                    os.replace(folder / f"f{i:03d}.jpg", folder / name)
        else:
            for t, name in zip(times, names):
                self._run(ctx, ["ffmpeg", "-nostdin", "-v", "error", "-y", "-ss", f"{t:.3f}", "-i", str(ctx.staged),
                                "-map", "0:v:0", "-frames:v", "1", *scale, name], "ffmpeg", cwd=folder)
        for t, name in zip(times, names):
            if not (folder / name).is_file() or (folder / name).stat().st_size == 0:
                raise BadInput(f"{ctx.source}: no picture can be decoded at {t:.3f} s (music segment {index})")
        return [(index, t, f"{KEYFRAMES_DIR}/{name}") for t, name in zip(times, names)]

    def _run(self, ctx: FileContext, cmd: list[str], tool: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace", cwd=cwd,
                                  timeout=self.settings.timeout_seconds)
        except subprocess.TimeoutExpired:
            raise RetryableError(f"{ctx.source}: {tool} did not finish within {self.settings.timeout_seconds:g} s") from None
        if proc.returncode < 0:  # killed (e.g. scancel): not the input's fault
            raise RetryableError(f"{ctx.source}: {tool} was killed by signal {-proc.returncode}")
        if proc.returncode != 0:
            reason = (proc.stderr.strip().splitlines() or ["no message"])[-1]
            raise BadInput(f"{ctx.source}: {tool} cannot read it: {reason.replace(str(ctx.staged), 'input')}")
        return proc
