"""The timeline picture of an 8-hour recording: made in bounded time and memory, small, readable."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

from worker.timeline import tick_label, tick_step

HOURS = 8
DRAW = r"""
import json, re, sys, time
from datetime import datetime, timezone
from pathlib import Path
from worker.boundaries import Boundary
from worker.timeline import draw_timeline
import matplotlib.figure, PIL.Image  # imported before the baseline: the drawing is measured

def hwm():
    return int(re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) * 1024

data = json.loads(Path(sys.argv[1]).read_text())
Path("/proc/self/clear_refs").write_text("5")  # reset the peak to what is resident now
base = hwm()
t0 = time.perf_counter()
draw_timeline(Path(sys.argv[2]), title="2006-01-02_0000_US_CNN_Eight_Hours.mp4", duration=data["duration"],
              segments=[tuple(s) for s in data["segments"]], classified=data["classified"],
              boundaries=[Boundary(**b) for b in data["boundaries"]],
              start=datetime(2006, 1, 2, tzinfo=timezone.utc), folder=Path(sys.argv[1]).parent)
print(json.dumps({"seconds": time.perf_counter() - t0, "peak_growth": hwm() - base}))
"""


def eight_hours(folder: Path) -> dict:
    """Segments as the segmenter gives them for 8 h of broadcast (~6,000), 240 classified music
    segments with keyframes, a show start every half hour."""
    from PIL import Image

    rng = random.Random(3)
    duration = HOURS * 3600.0
    segments, t = [], 0.0
    labels = ["speech", "speech", "speech", "music", "noise", "noEnergy"]
    while t < duration:
        stop = min(duration, t + rng.uniform(1, 9))
        segments.append((rng.choice(labels), round(t, 2), round(stop, 2)))
        t = stop
    (folder / "keyframes").mkdir()
    for k in range(12):
        Image.new("RGB", (640, 360), (20 * k, 100, 255 - 20 * k)).save(folder / "keyframes" / f"{k}.jpg")
    classified = []
    for i in range(240):
        a = i * 120.0
        kept = i % 4 == 0
        classified.append({"segment": i, "start": a, "stop": a + 20, "label": "title_sequence" if kept else "commercial",
                           "confidence": 0.9, "title_score": 0.9 if kept else 0.1, "filtered": not kept,
                           "keyframes": [{"time": a + 5, "path": f"keyframes/{i % 12}.jpg",
                                          "scores": {"title_sequence": 0.9, "commercial": 0.1}}]})
    boundaries = [{"kind": "start" if i % 2 == 0 else "end", "time": i * 1800.0, "confidence": 0.9,
                   "evidence": {"why": "test"}} for i in range(HOURS * 2)]
    return {"duration": duration, "segments": segments, "boundaries": boundaries,
            "classified": {"title_class": "title_sequence", "segments": classified}}


def test_an_eight_hour_timeline_is_small_and_quick(tmp_path):
    data = tmp_path / "data.json"
    data.write_text(json.dumps(eight_hours(tmp_path)))
    png = tmp_path / "timeline.png"
    run = subprocess.run([sys.executable, "-c", DRAW, str(data), str(png)], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    figures = json.loads(run.stdout)
    print(f"8-hour timeline: {figures['seconds']:.2f} s, peak RSS +{figures['peak_growth'] / 1e6:.0f} MB, "
          f"{png.stat().st_size / 1e3:.0f} kB")
    assert figures["seconds"] < 30  # ~2 s on an idle 2-core machine
    assert figures["peak_growth"] < 250e6
    assert 20e3 < png.stat().st_size < 400e3
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    with Image.open(png) as im:
        assert im.size == (1600, 450)
        colours = {c for _, c in im.convert("RGB").getcolors(1 << 20)}
    assert (0x2c, 0xa0, 0x2c) in colours and (0x4c, 0x72, 0xb0) in colours  # kept music, speech bands


def test_hour_ticks_on_long_files_and_finer_ones_on_short():
    assert tick_step(8 * 3600) == 3600 and tick_step(3600) == 300 and tick_step(60) == 10
    assert tick_label(7200, None, 3600) == "2h"
    assert tick_label(3900, None, 300) == "1:05"
    assert tick_label(90, None, 30) == "1:30"
