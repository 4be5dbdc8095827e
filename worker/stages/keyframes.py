"""The ``keyframes`` stage: K frames evenly spaced inside each long-enough music segment.

Each recording is opened once (PyAV: FFmpeg's libraries in this process) and every frame is
taken by seeking to the key frame before its time and decoding on to it; the next frame of the
same segment is decoded on to without a new seek when no key frame lies between.  So the work per
segment does not depend on the recording's length, and the container is read (for an mp4: its
whole sample index, which FFmpeg keeps in memory while the file is open, 15-17 MB an hour of
25 fps video with AAC) once a file, not once a frame.  Reads the ``segment`` stage's ``segments.csv`` in
the file's output folder (or, with ``segments_from``, that of an earlier run's work folder, copied
in); writes the JPEGs under ``keyframes/`` and the index ``keyframes.csv`` (tvseg/visual.py).
Imports nothing heavy at module level (the login node validates ``Settings``): PyAV in ``setup``.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator

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
    # JPEG quantizer, 2 (best) to 31: the scale of ffmpeg's -q:v for JPEG, the same quantization
    # tables (FFmpeg's JPEG encoder writes the frames, with this fixed quantizer).
    quality: int = 3
    # Video decoded for one frame, from the key frame the seek lands on to the frame, spans at most
    # this: farther, the recording's key frames are too far apart (or not indexed) to seek in.
    max_decode_seconds: float = 60.0
    timeout_seconds: float = 300.0  # wall-clock deadline for one frame (seek, read, decode, encode)
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
        if self.max_decode_seconds <= 0:
            raise ValueError(f"max_decode_seconds must be positive, not {self.max_decode_seconds}")
        if self.timeout_seconds <= 0:
            raise ValueError(f"timeout_seconds must be positive, not {self.timeout_seconds}")


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
        try:
            import av  # noqa: PLC0415 - FFmpeg's libraries: on the worker only, never on the login node
        except ImportError as err:
            raise RetryableError(f"PyAV cannot be imported on this node ({err}): run scripts/install-worker") from None
        self._av = av

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
        rows: list[tuple[int, float, str]] = []
        if segments:
            with Recording(self._av, ctx, s) as recording:  # opened once for all its frames
                for index, start, stop in segments:
                    for t in frame_times(start, stop, s.frames):
                        name = keyframe_name(index, t)
                        (folder / name).write_bytes(recording.jpeg_at(t, index))
                        rows.append((index, t, f"{KEYFRAMES_DIR}/{name}"))
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


class Recording:
    """One recording, opened once: the JPEG of the picture shown at a time, by seeking.

    ``jpeg_at(t)`` takes the first frame whose time is at or after ``t`` seconds from the
    recording's start (as ffmpeg's input-side ``-ss`` does): it seeks to the key frame before
    ``t`` and decodes on, or, when the decoder already stands before ``t`` with no key frame
    between (the previous frame of the same segment, a few seconds earlier), decodes on from
    there.  Bounded: ``max_decode_seconds`` of video from the key frame, ``timeout_seconds`` of
    wall clock (also for each read).  Errors name the file: BadInput for what the file does,
    RetryableError for a deadline passed (the node, or its disk, may be slow).
    """

    def __init__(self, av: Any, ctx: FileContext, settings: Settings) -> None:
        self.av, self.source, self.s = av, ctx.source, settings
        self.encoder = av.CodecContext.create("mjpeg", "w")
        self.encoder.width, self.encoder.height = settings.width, settings.height
        self.encoder.pix_fmt = "yuvj420p"  # full-range 4:2:0, as ffmpeg writes JPEGs
        self.encoder.time_base = Fraction(1, 25)  # required; the pictures are numbered 0, 1, 2... in it
        self.encoder.qmin = self.encoder.qmax = settings.quality  # a fixed quantizer: ffmpeg's -q:v
        self.encoder.open()
        self.encoded = 0  # pictures given to the encoder (it wants increasing timestamps)
        try:
            # file: so that a name with a colon is never taken for a protocol
            self.container = av.open(f"file:{ctx.staged}", timeout=settings.timeout_seconds)
        except av.error.ExitError:
            raise RetryableError(f"{ctx.source}: not opened within {settings.timeout_seconds:g} s") from None
        except av.error.FFmpegError as err:
            raise BadInput(f"{ctx.source}: cannot be read: {err.strerror or err}") from None
        if not self.container.streams.video:
            self.container.close()
            raise BadInput(f"{ctx.source}: no video stream (the keyframes stage needs pictures)")
        self.video = self.container.streams.video[0]
        start = self.container.start_time  # ffmpeg's -ss counts from the file's start time
        self.offset = start / av.time_base if start is not None else 0.0
        self.pictures: Iterator[Any] | None = None  # decoded frames from where the decoder stands
        self.landed: float | None = None  # time of the first frame decoded after the last seek
        self.position = 0.0  # time of the last frame decoded

    def __enter__(self) -> Recording:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop_decoding()
        self.container.close()

    def jpeg_at(self, t: float, segment: int) -> bytes:
        target = t + self.offset
        where = f"{t:.3f} s (music segment {segment})"
        deadline = time.monotonic() + self.s.timeout_seconds
        try:
            pictures = self.pictures
            if pictures is None or not self._decodes_on_to(target):
                self._stop_decoding()
                self.container.seek(int(target / self.video.time_base), backward=True, stream=self.video)
                pictures = self.pictures = self._decoded()
                self.landed = None
            for frame in pictures:
                if time.monotonic() > deadline:
                    raise RetryableError(f"{self.source}: no picture at {where} within {self.s.timeout_seconds:g} s")
                if frame is None or frame.time is None:
                    continue
                self.position = frame.time
                if self.landed is None:
                    self.landed = frame.time
                if frame.time >= target - 1e-6:
                    return self._jpeg(frame)
                if target - self.landed > self.s.max_decode_seconds:
                    raise BadInput(f"{self.source}: the key frame before {where} is more than "
                                   f"{self.s.max_decode_seconds:g} s earlier (keyframes.max_decode_seconds)")
        except self.av.error.ExitError:
            raise RetryableError(f"{self.source}: a read for the picture at {where} did not finish "
                                 f"within {self.s.timeout_seconds:g} s") from None
        except self.av.error.FFmpegError as err:
            self._stop_decoding()
            raise BadInput(f"{self.source}: no picture can be decoded at {where}: {err.strerror or err}") from None
        self._stop_decoding()
        raise BadInput(f"{self.source}: no picture can be decoded at {where}")

    def _decodes_on_to(self, target: float) -> bool:
        """Whether decoding on from where the decoder stands reaches ``target`` through no more
        than a seek would decode: it stands before it, after the key frame before it."""
        if self.position >= target - 1e-6:
            return False
        entries = self.video.index_entries
        if not len(entries):
            return False

        def key_frame(seconds: float) -> int:
            return entries.search_timestamp(int(seconds / self.video.time_base), backward=True)

        return key_frame(target) == key_frame(self.position) >= 0

    def _decoded(self) -> Iterator[Any]:
        """The frames decoded from the current position; None after each packet that gives none
        (so that the caller looks at its deadline); damaged packets skipped, as ffmpeg does."""
        for packet in self.container.demux(self.video):
            try:
                frames = packet.decode()
            except self.av.error.InvalidDataError:
                frames = []
            yield from frames or [None]

    def _stop_decoding(self) -> None:
        if self.pictures is not None:
            self.pictures.close()  # ends the demuxing (and its read deadline) before a seek
            self.pictures = None

    def _jpeg(self, frame: Any) -> bytes:
        picture = frame.reformat(self.s.width, self.s.height, "yuvj420p", interpolation="BICUBIC")  # as ffmpeg's scale
        picture.pts, picture.time_base = self.encoded, self.encoder.time_base
        self.encoded += 1
        return b"".join(bytes(packet) for packet in self.encoder.encode(picture))
