"""`classifier train --submit`: training runs as one SLURM job of the run's resources (GPU
included) through the same executor, followed until it ends; the model lands in MODEL_DIR."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from slurm_helpers import final_sacct_rows

from tests.helpers import journal_records, write_jobs
from tests.media import make_frames

pytestmark = pytest.mark.slurm


@pytest.mark.slow
def test_train_submit_is_one_slurm_job(slurm_cluster, weird_tmp_path):
    data = weird_tmp_path / "frames"
    for variant in range(2):
        make_frames(data / "title_sequence", "title", 8, variant=variant)
        make_frames(data / "commercial", "commercial", 8, variant=variant)
    jobs = write_jobs(weird_tmp_path, name="t", executor="slurm",
                      slurm={"time": "10", "mem": "4G", "cpus-per-task": 2, "gpus": 1, "signal-delay": 60})
    model = weird_tmp_path / "model"
    run = subprocess.run([str(Path(sys.executable).with_name("orchestrate")), "classifier", "train", str(data),
                          "--out", str(model), "--submit", str(jobs), "--epochs", "2"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "training submitted as one slurm job" in run.stdout and "epoch 2/2: " in run.stdout
    info = json.loads((model / "classifier.json").read_text())
    assert json.loads((model / "metrics.json").read_text())["n"] == info["data"]["split"]["test"] > 0
    [script] = (model / "run" / "logs").glob("*.sbatch")
    text = script.read_text()
    assert "#SBATCH --gres=gpu:1" in text and "#SBATCH --mem=4G" in text and "#SBATCH --array=0-0" in text
    [start] = [r for r in journal_records(model / "run") if r["kind"] == "task_start"]
    rows = final_sacct_rows([start["job_id"].split("_")[0]], "-X", count=1)
    assert [r["State"] for r in rows] == ["COMPLETED"], rows
