"""The boundaries stage on hand-made segment and classifier outputs: boundaries, Red Hen .seg
(read back by a reader written from the format), start times from captions and file names."""

from __future__ import annotations

import csv
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.redhen_reader import read_seg, utc
from worker.redhen import archive_name_start, format_duration, format_time, recording_start
from worker.stages import FileContext, StageResult
from worker.stages.boundaries import BoundariesStage, Settings

UTC = timezone.utc

# A 1000 s recording: show 1 (title, speech with a pause, a commercial break, speech, credits),
# a commercial, show 2 (title, speech) running past the recording's end.
SEGMENTS = [
    ("music", 0.0, 20.0), ("speech", 20.0, 150.0), ("noEnergy", 150.0, 151.0), ("speech", 151.0, 300.0),
    ("music", 300.0, 330.0), ("speech", 330.0, 500.0), ("music", 500.0, 520.0), ("noise", 520.0, 525.0),
    ("music", 525.0, 555.0), ("noEnergy", 555.0, 560.0), ("music", 560.0, 580.0), ("speech", 580.0, 1000.0),
]
MUSIC = [(a, b) for label, a, b in SEGMENTS if label == "music"]
TITLES = {0.0, 500.0, 560.0}  # starts of the music segments that are title sequences
TRUE_BOUNDARIES = [("start", 0.0), ("end", 520.0), ("start", 560.0), ("end", 1000.0)]
SETTINGS = Settings(min_show_s=100, timeline=False)


def classified_json(folder: Path) -> dict:
    """classify's output for SEGMENTS' music: title sequences kept, commercials filtered."""
    segments = []
    for i, (a, b) in enumerate(MUSIC):
        title = a in TITLES
        score = 0.93 if title else 0.08
        segments.append({
            "segment": i, "start": a, "stop": b, "label": "title_sequence" if title else "commercial",
            "confidence": score if title else 1 - score, "title_score": score, "filtered": not title,
            "keyframes": [{"time": a + 5 * k + 2, "path": f"keyframes/{i}_{k}.jpg",
                           "scores": {"title_sequence": score - 0.01 * k, "commercial": 1 - score + 0.01 * k}}
                          for k in range(3)],
        })
    data = {"classes": ["commercial", "title_sequence"], "title_class": "title_sequence", "threshold": 0.5,
            "model": {"dir": "/models/classifier", "sha256": "ab" * 32}, "segments": segments}
    (folder / "classified.json").write_text(json.dumps(data))
    return data


def run_stage(folder: Path, source: Path, classify: bool, settings: Settings = SETTINGS) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "segments.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(("labels", "start", "stop"))
        writer.writerows((label, f"{a:.2f}", f"{b:.2f}") for label, a, b in SEGMENTS)
    results = {"segment": StageResult(("segments.csv",), {"duration_s": 1000.0})}
    if classify:
        classified_json(folder)
        results["classify"] = StageResult(("classified.json",), {})
    ctx = FileContext(1, str(source), source, folder, results)
    result = BoundariesStage(settings).process(ctx)
    assert set(result.outputs) >= {"boundaries.csv", "boundaries.json", f"{source.stem}.seg"}
    return json.loads((folder / "boundaries.json").read_text())


@pytest.mark.parametrize("name, want", [
    ("2006-01-02_0000_US_00001057_V11_M2_VHS10_H4_JA.mp4", datetime(2006, 1, 2, 0, 0, tzinfo=UTC)),
    ("2006-01-02_0000_US_CNN_Show_Name.mp4", datetime(2006, 1, 2, 0, 0, tzinfo=UTC)),
    ("2019-01-04_2330_US_KNBC_Late_Night.mp4", datetime(2019, 1, 4, 23, 30, tzinfo=UTC)),
    ("2006-13-02_0000_US_CNN_Show.mp4", None),  # no 13th month
    ("2006-01-02_2460_US_CNN_Show.mp4", None),  # no such time
    ("2006-01-02 evening news.mp4", None),
    ("evening news 'été'.mp4", None),
    ("20060102_0000_US_CNN.mp4", None),
])
def test_archive_file_names(name, want):
    assert archive_name_start(name) == want


def test_time_and_duration_formats():
    start = datetime(2006, 1, 2, 23, 59, 59, tzinfo=UTC)
    assert format_time(start, 0.0) == "20060102235959.000"
    assert format_time(start, 1.2345) == "20060103000000.234"  # milliseconds, past midnight
    assert format_time(None, 3723.5) == "3723.500"
    assert format_duration(8 * 3600 + 13 * 60 + 7.97) == "08:13:07.97"
    assert format_duration(30 * 3600) == "30:00:00.00"


def test_boundaries_from_classify_and_a_caption_file(tmp_path):
    source = tmp_path / "media" / "2006-01-02_0000_US_00001057_V11_M2_VHS10_H4_JA.mp4"
    source.parent.mkdir()
    header = ["TOP|20060102000007|2006-01-02_0000_US_00001057_V11_M2_VHS10_H4_JA",
              "COL|Communication Studies Archive, UCLA", "UID|a3f0e2b4-0e4b-11e0-9a48-001517add6d2",
              "DUR|00:16:40.00", "SRC|Rosenthal Collection, UCLA", "CMT|", "LAN|ENG",
              "LBT|2006-01-01 16:00:07 America/Los_Angeles"]
    source.with_suffix(".txt3").write_text("\n".join([
        *header, "20060102000010.000|20060102000015.000|CC1|>>> GOOD EVENING.", "a line without fields",
        "END|20060102001647|2006-01-02_0000_US_00001057_V11_M2_VHS10_H4_JA"]) + "\n")
    out = run_stage(tmp_path / "out", source, classify=True, settings=Settings(min_show_s=100))  # with a timeline

    assert (tmp_path / "out" / "timeline.png").stat().st_size > 10_000
    assert out["from_classify"] and out["basis"].startswith("classify")
    assert [(b["type"], b["time"]) for b in out["boundaries"]] == TRUE_BOUNDARIES  # commercials are not boundaries
    first = out["boundaries"][0]
    assert first["confidence"] == 0.93 and first["evidence"]["title_sequence"]["keyframe"]["time"] == 2.0
    assert out["shows"] == [{"start": 0.0, "end": 520.0}, {"start": 560.0, "end": 1000.0}]
    assert out["timestamps"] == "caption" and out["recording_start"] == "2006-01-02T00:00:07+00:00"
    rows = list(csv.DictReader((tmp_path / "out" / "boundaries.csv").open()))
    assert [(r["type"], float(r["time"])) for r in rows] == TRUE_BOUNDARIES

    seg = read_seg((tmp_path / "out" / f"{source.stem}.seg").read_text())
    assert [f"{k}|{v}" for k, v in seg.header] == header  # carried over, in order
    assert seg.end == "20060102001647|2006-01-02_0000_US_00001057_V11_M2_VHS10_H4_JA"
    [(tag, (_, credit))] = seg.credits.items()
    assert tag == "SEG_03" and credit["Source_Program"].startswith("tvseg ")
    assert "classifier classifier sha256:abababab" in credit["Models"]
    assert "min_show_s=100" in credit["Settings"] and "caption file's TOP line" in credit["Timestamps"]
    t0 = datetime(2006, 1, 2, 0, 0, 7, tzinfo=UTC)
    shows = [(r.fields["Type"], utc(r.start)) for r in seg.rows if r.fields["Type"].startswith("Show")]
    assert shows == [(("Show start" if k == "start" else "Show end"), t0 + timedelta(seconds=t))
                     for k, t in TRUE_BOUNDARIES]
    music = [r for r in seg.rows if r.fields["Type"] == "Music"]
    assert [(utc(r.start) - t0).total_seconds() for r in music] == [a for a, _ in MUSIC]
    assert [r.fields["Kept"] for r in music] == ["yes", "no", "yes", "no", "yes"]
    assert music[1].fields["Class"] == "commercial" and music[1].fields["Score"] == "0.920"
    starts = [utc(r.start) for r in seg.rows]
    assert starts == sorted(starts)


def test_start_from_the_file_name_and_music_alone(tmp_path):
    source = tmp_path / "2006-01-02_1800_US_CNN_Show_Name.mp4"
    out = run_stage(tmp_path / "out", source, classify=False)
    assert not out["from_classify"] and out["basis"].startswith("music segments alone")
    # Without the classifier the commercial at 300 s (music between speech) is taken for a title.
    assert ("start", 300.0) in [(b["type"], b["time"]) for b in out["boundaries"]]
    assert all(b["confidence"] <= 0.5 for b in out["boundaries"])

    seg = read_seg((tmp_path / "out" / f"{source.stem}.seg").read_text())
    assert seg.head("TOP") == f"20060102180000|{source.stem}"
    assert seg.head("DUR") == "00:16:40.00" and seg.head("LAN") == "ENG" and seg.head("LBT") is None
    assert seg.head("COL") == "Communication Studies Archive, UCLA"
    assert seg.end == f"20060102181640|{source.stem}"
    [(_, credit)] = seg.credits.values()
    assert "archive file name" in credit["Timestamps"] and "music segments alone" in credit["Basis"]
    assert [utc(r.start) for r in seg.rows if r.fields["Type"] == "Music"] == [
        datetime(2006, 1, 2, 18, 0, tzinfo=UTC) + timedelta(seconds=a) for a, _ in MUSIC]


def test_a_name_that_does_not_parse_gives_relative_seconds(tmp_path):
    source = tmp_path / "évening news 'late'.mp4"
    run_stage(tmp_path / "out", source, classify=True, settings=Settings(min_show_s=100, timeline=False,
                                                                        timezone="America/Los_Angeles"))
    text = (tmp_path / "out" / f"{source.stem}.seg").read_text()
    with pytest.raises(ValueError):
        read_seg(text)  # not absolute times
    seg = read_seg(text, relative=True)
    assert seg.head("TOP") == f"|{source.stem}" and "seconds from the start" in seg.head("CMT")
    assert seg.head("LBT") is None  # no start time, no local broadcast time
    assert [(r.fields["Type"], r.start) for r in seg.rows if r.fields["Type"].startswith("Show")] == [
        ("Show start", "0.000"), ("Show end", "520.000"), ("Show start", "560.000"), ("Show end", "1000.000")]
    assert seg.end == f"1000.000|{source.stem}"


def test_local_broadcast_time_and_a_caption_with_a_bad_top_line(tmp_path):
    source = tmp_path / "2006-07-02_0100_US_KABC_News.mp4"
    source.with_suffix(".txt").write_text("TOP|2006XX02|x\nCOL|Somewhere\nEND|x\n")
    start = recording_start(source)
    assert start.basis == "filename" and "TOP time '2006XX02'" in start.note
    run_stage(tmp_path / "out", source, classify=True, settings=Settings(min_show_s=100, timeline=False,
                                                                        timezone="America/Los_Angeles"))
    seg = read_seg((tmp_path / "out" / f"{source.stem}.seg").read_text())
    assert seg.head("LBT") == "2006-07-01 18:00:00 America/Los_Angeles"  # PDT, UTC-7
    assert seg.head("COL") == "Communication Studies Archive, UCLA"  # the bad caption's header is not used


def test_min_show_length_and_merge_gap(tmp_path):
    # With shows of at least 530 s the credits at 500-520 s are a bumper: show 1 runs to show 2's title.
    out = run_stage(tmp_path / "a", tmp_path / "a.mp4", classify=True,
                    settings=Settings(min_show_s=530, timeline=False))
    assert [(b["type"], b["time"]) for b in out["boundaries"]] == [("start", 0.0), ("end", 560.0), ("start", 560.0),
                                                                   ("end", 1000.0)]
    assert out["boundaries"][1]["evidence"]["why"] == "the next show starts without a closing sequence"
    # A merge gap that joins the credits, the commercial and the next title: one sequence followed by speech.
    out = run_stage(tmp_path / "b", tmp_path / "b.mp4", classify=False,
                    settings=Settings(min_show_s=100, merge_gap_s=6, timeline=False))
    assert ("start", 500.0) in [(b["type"], b["time"]) for b in out["boundaries"]]


def test_settings_are_checked():
    with pytest.raises(ValueError, match="timezone 'Mars/Olympus'"):
        Settings(timezone="Mars/Olympus")
    with pytest.raises(ValueError, match="tag must be"):
        Settings(tag="seg|3")
    with pytest.raises(ValueError, match="min_title_s"):
        Settings(min_title_s=200, max_title_s=100)
