"""The real stages through the dev cluster: `probe` + `segment` (TensorFlow, the real model) on
generated programmes, submitted with `orchestrate submit --wait` as a SLURM array, outputs checked
against the programme's truth.  Under a folder whose name is hostile to shells."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from slurm_helpers import final_sacct_rows

from tests.helpers import journal_records, write_jobs


def orchestrate(*args) -> subprocess.CompletedProcess:
    """The real command, in its own process, as a user runs it (SLURM_CONF from the fixture)."""
    return subprocess.run([str(Path(sys.executable).with_name("orchestrate")), *map(str, args)],
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_probe_and_segment_on_the_cluster(slurm_cluster, weird_tmp_path, program, model_dir):
    source, truth = program
    media = weird_tmp_path / "media"
    media.mkdir()
    for name in ("one.mp4", "two é.mp4"):
        shutil.copyfile(source, media / name)
    (media / "broken.mp4").write_bytes(source.read_bytes()[:5000])
    jobs = write_jobs(weird_tmp_path, name="t", inputs=["media/*.mp4"], executor="slurm",
                      slurm={"time": "10", "mem": "4G", "cpus-per-task": 2, "signal-delay": 60},
                      worker={"stages": ["probe", "segment"], "heartbeat_seconds": 1},
                      stage_settings={"segment": {"model_dir": str(model_dir), "chunk_seconds": 20}},
                      sharding={"files_per_shard": 2})

    run = orchestrate("submit", jobs, "--wait")
    assert run.returncode == 3, run.stdout + run.stderr  # the broken file is quarantined, the rest done
    snap = json.loads(orchestrate("status", jobs, "--json").stdout)
    assert snap["files"] == {"pending": 0, "running": 0, "done": 2, "failed": 0, "quarantined": 1}
    assert snap["shards"]["ended"] == 2 and {s["end_reason"] for s in snap["shard_progress"]} == {"complete"}
    job_ids = [s["job_id"] for s in snap["shard_progress"]]
    rows = final_sacct_rows(sorted({j.split("_")[0] for j in job_ids}), "-X", count=2)
    assert {r["State"] for r in rows} == {"COMPLETED"}, rows

    workdir = weird_tmp_path / "work"
    outputs = sorted((workdir / "outputs").glob("*/segments.csv"))
    assert len(outputs) == 2
    for path in outputs:
        with path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert [r["labels"] for r in rows] == [label for label, _, _ in truth]
        for row, (_, start, stop) in zip(rows, truth):
            assert abs(float(row["start"]) - start) < 1 and abs(float(row["stop"]) - stop) < 1, (row, truth)
        probe = json.loads(path.with_name("probe.json").read_text())
        assert abs(float(probe["duration_s"]) - 60) < 0.5, probe
        assert path.with_name("provenance.json").is_file()
    quarantined = [r for r in journal_records(workdir) if r["kind"] == "file_end" and r["state"] == "quarantined"]
    assert len(quarantined) == 1 and quarantined[0]["error"].startswith(f"{media / 'broken.mp4'}: "), quarantined
    host_logs = list((workdir / "logs").glob("*_*.log"))
    assert len(host_logs) == 2  # one log per array task, in the workdir's logs folder
