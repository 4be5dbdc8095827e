"""Show boundaries end to end on a generated broadcast with known shows: probe, the real segmenter
and boundaries through `orchestrate submit --wait`, then the report.

The classifier's part is played by a ``classified.json`` written here from the real music
segments (labelled by their overlap with the known title sequences): the boundaries stage is
then run on the real segmentation as it runs after ``classify``.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from datetime import timedelta, timezone
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.helpers import write_jobs
from tests.media import make_broadcast
from tests.redhen_reader import read_seg, utc
from worker.stages import FileContext, StageResult
from worker.stages.boundaries import BoundariesStage, Settings

PLAN = [("title", 10), ("speech", 40), ("commercial", 15), ("speech", 30), ("credits", 10), ("noise", 5),
        ("commercial", 15), ("noise", 5), ("title", 10), ("speech", 45), ("commercial", 15), ("speech", 30),
        ("noise", 5), ("title", 10), ("speech", 40), ("credits", 10), ("noise", 10)]
SETTINGS = {"min_show_s": 60, "min_speech_s": 15}
TOLERANCE_S = 2.0


def orchestrate(*args) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).with_name("orchestrate")), *map(str, args)],
                          capture_output=True, text=True, timeout=600)


def truth_boundaries(broadcast) -> list[tuple[str, float]]:
    return sorted([("start", s) for s, _ in broadcast.shows] + [("end", e) for _, e in broadcast.shows],
                  key=lambda b: (b[1], b[0] == "start"))


def score(found: list[tuple[str, float]], truth: list[tuple[str, float]]) -> tuple[float, float]:
    """(recall, precision): a true boundary is found by one reported of the same type within
    TOLERANCE_S, each reported one matching at most one true one."""
    free = list(found)
    hits = 0
    for kind, t in truth:
        match = next((f for f in free if f[0] == kind and abs(f[1] - t) <= TOLERANCE_S), None)
        if match:
            free.remove(match)
            hits += 1
    return hits / len(truth), hits / len(found) if found else 0.0


def oracle_classified(segments: list[tuple[str, float, float]], broadcast) -> dict:
    """classify's output for the real music segments, labelled by overlap with the true titles."""
    out = []
    for i, (label, a, b) in enumerate(s for s in segments if s[0] == "music"):
        overlap = max((min(b, e) - max(a, s) for s, e in broadcast.titles), default=0.0)
        title = overlap > 0.5 * (b - a)
        p = 0.95 if title else 0.05
        out.append({"segment": i, "start": a, "stop": b, "label": "title_sequence" if title else "commercial",
                    "confidence": max(p, 1 - p), "title_score": p, "filtered": not title, "keyframes": []})
    return {"classes": ["commercial", "title_sequence"], "title_class": "title_sequence", "threshold": 0.5,
            "model": {"dir": "oracle", "sha256": "0" * 64}, "segments": out}


@pytest.mark.slow
def test_show_boundaries_on_a_generated_broadcast(weird_tmp_path, model_dir):
    media = weird_tmp_path / "media"
    media.mkdir()
    broadcast = make_broadcast(media / "2006-01-02_0000_US_KTTV_Evening_News.mp4", PLAN)
    truth = truth_boundaries(broadcast)
    jobs = write_jobs(weird_tmp_path, worker={"stages": ["probe", "segment", "boundaries"], "heartbeat_seconds": 1},
                      stage_settings={"segment": {"model_dir": str(model_dir)}, "boundaries": SETTINGS})
    run = orchestrate("submit", jobs, "--wait")
    assert run.returncode == 0, run.stdout + run.stderr
    [out] = list((weird_tmp_path / "work" / "outputs").iterdir())

    # From music alone every true boundary is found; the commercials' jingles come too, as it says.
    alone = json.loads((out / "boundaries.json").read_text())
    assert not alone["from_classify"] and "commercials' jingles included" in alone["basis"]
    recall, _ = score([(b["type"], b["time"]) for b in alone["boundaries"]], truth)
    assert recall >= 0.9, (alone["boundaries"], truth)
    assert (out / "timeline.png").stat().st_size > 10_000

    # After classify (here: its output made from the truth): the archive's bar, commercials left out.
    with open(out / "segments.csv", newline="") as fh:
        segments = [(r["labels"], float(r["start"]), float(r["stop"])) for r in csv.DictReader(fh)]
    (out / "classified.json").write_text(json.dumps(oracle_classified(segments, broadcast)))
    results = {"segment": StageResult((), {"duration_s": broadcast.duration}), "classify": StageResult((), {})}
    BoundariesStage(Settings(**SETTINGS)).process(FileContext(1, str(broadcast.path), broadcast.path, out, results))
    after = json.loads((out / "boundaries.json").read_text())
    found = [(b["type"], b["time"]) for b in after["boundaries"]]
    recall, precision = score(found, truth)
    assert recall >= 0.9 and precision >= 0.9, (found, truth)
    for s, e in broadcast.commercials:
        assert not any(s - TOLERANCE_S < t < e + TOLERANCE_S for _, t in found), ((s, e), found)

    # The .seg file: the caption file's header, absolute times from its TOP line.
    seg = read_seg((out / "2006-01-02_0000_US_KTTV_Evening_News.seg").read_text())
    assert seg.head("TOP") == f"20060102000000|{broadcast.path.stem}"
    t0 = broadcast.start.replace(tzinfo=timezone.utc)
    shows = [(r.fields["Type"], utc(r.start)) for r in seg.rows if r.fields["Type"].startswith("Show")]
    assert shows == [("Show start" if k == "start" else "Show end", t0 + timedelta(seconds=round(t * 1000) / 1000))
                     for k, t in found]

    report = orchestrate("report", jobs)
    assert report.returncode == 0, report.stderr
    page = (weird_tmp_path / "work" / "report.html").read_text(encoding="utf-8")
    assert f'href="{quote(f"outputs/{out.name}/timeline.png")}"' in page
    assert "1 recording(s) with a timeline picture" in page
