"""The worker's own environment on the dev cluster: an orchestrator venv without TensorFlow
submits `probe` + `segment`, and the tasks run in a separate worker venv named by worker.python;
and remote inputs (host:/path) staged over a real sshd by SLURM tasks."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import journal_records, write_jobs
from tests.test_environment import copy_source, make_venv
from tests.test_remote import CANARY, NAMES, awkward_archive


def site_packages() -> str:
    return subprocess.run([sys.executable, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture(scope="module")
def venvs(tmp_path_factory):
    """(orchestrator python, worker python): the first from the package index without TensorFlow,
    the second with this checkout's site-packages (TensorFlow included) and its own tvseg."""
    root = tmp_path_factory.mktemp("venvs")
    source = copy_source(root / "src")  # pip builds in the source folder: not in this checkout
    login = root / "login venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(login)], check=True)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(login / "bin" / "python"), "install", "-q",
                    str(source)], check=True, capture_output=True, timeout=600)
    worker = make_venv(root / "gpu venv", source, reuse=Path(site_packages()))
    return login / "bin" / "python", worker


@pytest.mark.slow
def test_login_venv_without_tensorflow_submits_segment_to_a_worker_venv(slurm_cluster, venvs, weird_tmp_path,
                                                                         program, model_dir):
    login, worker = venvs
    no_tf = subprocess.run([str(login), "-c", "import tensorflow"], capture_output=True, text=True)
    assert no_tf.returncode != 0 and "No module named 'tensorflow'" in no_tf.stderr
    source, truth = program
    media = weird_tmp_path / "media"
    media.mkdir()
    shutil.copyfile(source, media / "one é.mp4")
    jobs = write_jobs(weird_tmp_path, name="t", inputs=["media/*.mp4"], executor="slurm",
                      slurm={"time": "10", "mem": "4G", "cpus-per-task": 2, "signal-delay": 60,
                             "setup": ["export TVSEG_SETUP_RAN=yes"]},
                      worker={"stages": ["probe", "segment"], "heartbeat_seconds": 1, "python": str(worker)},
                      stage_settings={"segment": {"model_dir": str(model_dir), "chunk_seconds": 20}})
    run = subprocess.run([str(login.with_name("orchestrate")), "submit", str(jobs), "--wait"], capture_output=True,
                         text=True, timeout=600, cwd=weird_tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr

    workdir = weird_tmp_path / "work"
    starts = [r for r in journal_records(workdir) if r["kind"] == "task_start"]
    assert [r["python"] for r in starts] == [str(worker)]  # the worker venv ran the task
    (segments,) = (workdir / "outputs").glob("*/segments.csv")
    with segments.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["labels"] for r in rows] == [label for label, _, _ in truth]
    for row, (_, start, stop) in zip(rows, truth):
        assert abs(float(row["start"]) - start) < 1 and abs(float(row["stop"]) - stop) < 1, (row, truth)
    (script,) = (workdir / "logs").glob("*.sbatch")
    lines = script.read_text().splitlines()
    assert "export TVSEG_SETUP_RAN=yes" in lines and lines[-1].startswith(f"exec '{worker}' -u -m ")


def test_remote_inputs_staged_by_slurm_tasks_over_ssh(slurm_cluster, sshd, tmp_path, clip_template):
    CANARY.unlink(missing_ok=True)
    archive = tmp_path / "archive"
    paths = awkward_archive(archive, clip_template)
    jobs = write_jobs(tmp_path, name="t", inputs=[f"127.0.0.1:{archive}/**/*.mp4"], executor="slurm",
                      ssh=sshd.jobs_ssh(), sharding={"files_per_shard": 5},
                      slurm={"time": "5", "mem": "500M", "cpus-per-task": 1, "signal-delay": 30})
    run = subprocess.run([str(Path(sys.executable).with_name("orchestrate")), "submit", str(jobs), "--wait"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    records = journal_records(tmp_path / "work")
    ends = [r for r in records if r["kind"] == "file_end"]
    assert len(ends) == len(NAMES) and {r["state"] for r in ends} == {"done"}
    assert sorted(r["staging"]["bytes"] for r in ends) == sorted(p.stat().st_size for p in paths)
    assert len({r["job_id"] for r in records if r["kind"] == "task_start"}) == 2  # two SLURM array tasks
    probes = [json.loads(p.read_text()) for p in (tmp_path / "work" / "outputs").glob("*/probe.json")]
    assert len(probes) == len(NAMES)
    assert not CANARY.exists()
