"""`probe` + `segment` end to end through the local executor: real worker processes, real model;
the segments equal those of the package's own Segmenter on the whole file."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

from tests.helpers import journal_records, write_jobs
from tests.media import assert_same_segmentation
from worker.models import load_segmenter


def orchestrate(*args) -> subprocess.CompletedProcess:
    """The real command, in its own process (this test process has TensorFlow loaded)."""
    return subprocess.run([str(Path(sys.executable).with_name("orchestrate")), *map(str, args)],
                          capture_output=True, text=True)


def test_probe_and_segment_through_the_local_executor(weird_tmp_path, program, model_dir):
    source, truth = program
    media = weird_tmp_path / "media"
    (media / "a").mkdir(parents=True)
    (media / "b").mkdir(parents=True)
    shutil.copyfile(source, media / "a" / source.name)
    shutil.copyfile(source, media / "b" / source.name)  # same basename, another folder
    (media / "b" / "broken.mp4").write_bytes(source.read_bytes()[:5000])
    jobs = write_jobs(weird_tmp_path, worker={"stages": ["probe", "segment"], "heartbeat_seconds": 1},
                      stage_settings={"segment": {"model_dir": str(model_dir), "chunk_seconds": 20}},
                      sharding={"files_per_shard": 3})

    run = orchestrate("submit", jobs, "--wait")
    assert run.returncode == 3, run.stdout + run.stderr  # the broken file is quarantined, the rest done
    snap = json.loads(orchestrate("status", jobs, "--json").stdout)
    assert snap["files"] == {"pending": 0, "running": 0, "done": 2, "failed": 0, "quarantined": 1}
    assert snap["throughput"]["media_hours_per_hour"] > 0

    outputs = sorted((weird_tmp_path / "work" / "outputs").glob("*/segments.csv"))
    assert len(outputs) == 2
    package = load_segmenter(model_dir, detect_gender=False)(str(source))  # the package on the whole file
    for path in outputs:
        with path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert_same_segmentation([(r["labels"], float(r["start"]), float(r["stop"])) for r in rows], package)
        music = [(float(r["start"]), float(r["stop"])) for r in rows if r["labels"] == "music"]
        (start, stop), = [(a, b) for label, a, b in truth if label == "music"]
        assert len(music) == 1 and abs(music[0][0] - start) < 1 and abs(music[0][1] - stop) < 1
        summary = json.loads(path.with_name("segments.json").read_text())
        # 20 s chunks; AAC decoding may add a few ms past 60 s, and with them a tiny last chunk
        assert abs(summary["duration_s"] - 60) < 0.5 and summary["chunks"] in (3, 4)
        assert (path.parent / "probe.json").is_file() and (path.parent / "provenance.json").is_file()

    ends = [r for r in journal_records(weird_tmp_path / "work") if r["kind"] == "file_end" and r["state"] == "done"]
    assert all(set(r["seconds"]) == {"staging", "probe", "segment", "total"} for r in ends)
    assert all(abs(r["facts"]["music_s"] - 15) < 1 for r in ends)
