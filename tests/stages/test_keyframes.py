"""The keyframes stage with real ffmpeg on generated broadcasts: frames at the right times by
seeking, bad video as bad input (the shard goes on), memory flat in the recording's length."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from orchestrator.manifest import output_name
from tests.helpers import write_jobs
from tests.media import make_broadcast, make_long_video
from tvseg.errors import BadInput, RetryableError
from worker.stages import FileContext
from worker.stages.keyframes import KeyframesStage, Settings, frame_times

REPO = Path(__file__).resolve().parents[2]
PLAN = [("title", 8), ("speech", 6), ("commercial", 8), ("speech", 6), ("credits", 6)]


@pytest.fixture(scope="session")
def small_broadcast(tmp_path_factory) -> tuple[Path, list[tuple[str, float, float]]]:
    """A 34 s broadcast and the segments.csv rows the segment stage would write for it (its truth)."""
    folder = tmp_path_factory.mktemp("keyframes-media")
    b = make_broadcast(folder / "2006-01-02_0000_US_KTV_Morning Show.mp4", PLAN)
    rows = [("music" if kind in ("title", "commercial", "credits") else "speech", s, e) for kind, s, e in b.sections]
    rows.insert(1, ("music", 8.0, 9.0))  # a short music segment: below min_seconds
    rows[2] = ("speech", 9.0, 14.0)
    return b.path, rows


def write_segments(folder: Path, rows) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "segments.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(("labels", "start", "stop"))
        writer.writerows((label, f"{s:.2f}", f"{e:.2f}") for label, s, e in rows)


def run_stage(media: Path, out: Path, **settings):
    stage = KeyframesStage(Settings(**settings))
    stage.setup()
    return stage.process(FileContext(1, f"archive/{media.name}", media, out, {}))


def keyframes(out: Path) -> list[dict]:
    with open(out / "keyframes.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def decoded_frame(media: Path, t: float, size=(160, 90)) -> np.ndarray:
    """The frame shown at ``t``, by decoding from the start (no seeking), as RGB."""
    frame = int(np.ceil(t * 25 - 1e-6))
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(media), "-vf", f"select=eq(n\\,{frame})",
                          "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(size[1], size[0], 3).astype(float)


def test_frame_times_are_evenly_spaced_inside():
    assert frame_times(10.0, 20.0, 5) == [11.0, 13.0, 15.0, 17.0, 19.0]
    assert frame_times(0.0, 1.0, 1) == [0.5]


@pytest.mark.parametrize("gap", [10.0, 0.5], ids=["one call a segment", "one call a frame"])
def test_keyframes_of_music_segments_are_the_frames_at_those_times(small_broadcast, weird_tmp_path, gap):
    media, rows = small_broadcast
    out = weird_tmp_path / "out 100%d"
    write_segments(out, rows)
    result = run_stage(media, out, min_seconds=3.0, frames=4, decode_gap_seconds=gap)
    got = keyframes(out)
    music = [(i, s, e) for i, (label, s, e) in enumerate(rows) if label == "music" and e - s >= 3.0]
    assert [i for i, _, _ in music] == [0, 3, 5]  # the 1 s music segment is left out
    assert [(int(r["segment"]), float(r["time"])) for r in got] == [
        (i, t) for i, s, e in music for t in frame_times(s, e, 4)]
    assert result.facts == {"music_segments": 3, "keyframes": 12}
    for row in got:
        with Image.open(out / row["path"]) as image:
            assert image.size == (160, 90) and image.format == "JPEG"
    for row in got:  # the frame shown at that time, by decoding from the start
        picture = np.asarray(Image.open(out / row["path"]).convert("RGB"), float)
        assert np.abs(picture - decoded_frame(media, float(row["time"]))).mean() < 8  # JPEG error, in levels
    again = run_stage(media, out, min_seconds=3.0, frames=4, decode_gap_seconds=gap)  # cached: same settings, frames there
    assert again.facts == result.facts
    run_stage(media, out, min_seconds=3.0, frames=2)  # new settings: frames of the old ones removed
    assert len(keyframes(out)) == 6 and len(list((out / "keyframes").iterdir())) == 6


def test_no_video_and_undecodable_times_are_bad_input(small_broadcast, tmp_path):
    media, rows = small_broadcast
    audio_only = tmp_path / "audio only.m4a"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(media), "-vn", "-c:a", "copy", str(audio_only)], check=True)
    short_video = tmp_path / "short video.mp4"  # the pictures stop at 10 s, the sound goes on
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(media), "-t", "10", "-i", str(media), "-map", "0:a",
                    "-map", "1:v", "-c", "copy", str(short_video)], check=True)
    for path, reason in ((audio_only, "no video stream"),
                         (short_video, r"no picture can be decoded at 14.800 s \(music segment 3\)")):
        out = tmp_path / path.stem
        write_segments(out, rows)
        with pytest.raises(BadInput, match=reason):
            run_stage(path, out)
    with pytest.raises(RetryableError, match="run the segment stage before keyframes"):
        run_stage(media, tmp_path / "no segments")


def test_bad_video_fails_that_file_and_the_shard_goes_on(small_broadcast, weird_tmp_path, cli):
    """probe + keyframes through the local executor, segments taken from an earlier run's folder."""
    media, rows = small_broadcast
    inputs = weird_tmp_path / "media"
    inputs.mkdir()
    good = inputs / media.name
    shutil.copyfile(media, good)
    audio_only = inputs / "sound only.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(media), "-vn", "-c:a", "copy", str(audio_only)], check=True)
    earlier = weird_tmp_path / "earlier run"
    for path in (audio_only, good):
        write_segments(earlier / "outputs" / output_name(str(path)), rows)
    jobs = write_jobs(weird_tmp_path, worker={"stages": ["probe", "keyframes"], "heartbeat_seconds": 1},
                      stage_settings={"keyframes": {"segments_from": "earlier run"}})
    run = cli("submit", jobs, "--wait")
    assert run.code == 3, run.out + run.err
    snap = cli("status", jobs, "--json").json()
    assert snap["files"]["done"] == 1 and snap["files"]["quarantined"] == 1
    out = weird_tmp_path / "work" / "outputs" / output_name(str(good))
    assert len(keyframes(out)) == 15 and (out / "segments.csv").read_text() == \
        (earlier / "outputs" / output_name(str(good)) / "segments.csv").read_text()
    import sqlite3

    with sqlite3.connect(weird_tmp_path / "work" / "manifest.sqlite") as db:
        [(error,)] = db.execute("select error from files where state = 'quarantined'").fetchall()
    assert error == f"{audio_only}: no video stream (the keyframes stage needs pictures)"


PEAK_RSS = """
import json, resource, sys, time
from pathlib import Path
from worker.stages import FileContext
from worker.stages.keyframes import KeyframesStage, Settings
media, out = Path(sys.argv[1]), Path(sys.argv[2])
stage = KeyframesStage(Settings(frames=5))
stage.setup()
t0 = time.perf_counter()
result = stage.process(FileContext(1, str(media), media, out, {}))
seconds = time.perf_counter() - t0
print(json.dumps({"stage_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "ffmpeg_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
                  "seconds": seconds, **result.facts}))
"""
MP4_INDEX_KB_PER_HOUR = 10_000  # ffmpeg's sample index of an open mp4: 24 B a packet (25 fps + AAC at
# 44.1 kHz: 68 packets/s, ~6 MB/h), in arrays that grow by doubling; the one part that grows with length


def keyframes_peak(media: Path, duration: float, out: Path, n_segments: int = 8) -> dict:
    """Peak RSS of the stage's process and of its largest ffmpeg, on ``n_segments`` 20-s music
    segments spread over the recording (the last one near its end), in a fresh process."""
    gap = (duration - 30) / n_segments
    rows = []
    for k in range(n_segments):
        start = 5 + (k + 1) * gap - 20
        rows += [("speech", rows[-1][2] if rows else 0.0, start), ("music", start, start + 20)]
    write_segments(out, rows)
    done = subprocess.run([sys.executable, "-c", PEAK_RSS, str(media), str(out)], capture_output=True, text=True,
                          cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="session")
def long_videos(tmp_path_factory) -> dict[str, tuple[Path, float]]:
    """A 10-minute and a 2-hour recording (low bit rate, looped: cheap), once per session."""
    folder = tmp_path_factory.mktemp("long-videos")
    return {name: (make_long_video(folder / f"{name}.mp4", seconds), seconds)
            for name, seconds in (("10min", 600.0), ("2h", 7200.0))}


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_the_recording(long_videos, tmp_path):
    """The stage's process stays within 10 %; ffmpeg (one open file at a time) grows by no more
    than the container's sample index (K seeking inputs in one call held K indexes: +40 MB/h)."""
    peaks = {name: keyframes_peak(path, seconds, tmp_path / name) for name, (path, seconds) in long_videos.items()}
    assert peaks["2h"]["keyframes"] == peaks["10min"]["keyframes"] == 40
    assert peaks["2h"]["stage_kb"] <= 1.10 * peaks["10min"]["stage_kb"], peaks
    extra_hours = (7200 - 600) / 3600
    assert peaks["2h"]["ffmpeg_kb"] - peaks["10min"]["ffmpeg_kb"] <= MP4_INDEX_KB_PER_HOUR * extra_hours, peaks
