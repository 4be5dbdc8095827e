"""The worker's environment (worker.python, container:, slurm.setup): the sbatch script's last lines
against golden files, the quoting as bash reads it, the node-side runtime check, the submit-time
checks, the container definition, and the version handshake in a real second venv."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import tvseg
from orchestrator import orchestration
from orchestrator.config import load_config
from orchestrator.environment import interpreter, shell_join
from orchestrator.slurm import ArraySpec, sbatch_script
from tests.helpers import cannot_run, journal_records, write_jobs
from tests.slurm.test_slurm_units import check_golden
from tvseg.config import CONTAINER_PYTHON
from tvseg.states import FileState

REPO = Path(__file__).resolve().parents[1]
ODD = "/shared/tv seg's \"venvs\"/é"  # both quotes, a space, non-ASCII


def _config(tmp_path: Path, **overrides):
    return load_config(write_jobs(tmp_path, workdir=f"{ODD}/work", executor="slurm", **overrides))


def _script(config) -> str:
    return sbatch_script(ArraySpec("demo-s1", 4), config.slurm, interpreter(config, "/usr/bin/python3"))


def test_worker_python_with_setup_lines_matches_golden(tmp_path):
    config = _config(tmp_path, worker={"python": f"{ODD}/gpu/bin/python"},
                     slurm={"setup": ["module load cuda/12.4", "export TF_CPP_MIN_LOG_LEVEL=2"]})
    check_golden("sbatch_worker_python.sh", _script(config))


def test_container_with_node_runtime_matches_golden(tmp_path):
    config = _config(tmp_path, container={"image": f"{ODD}/tvseg.sif", "gpu": True,
                                          "binds": ["/archive/tv 2026", "/home"], "options": ["--writable-tmpfs"]},
                     slurm={"setup": ["module load apptainer"]})
    check_golden("sbatch_container.sh", _script(config))


def test_container_with_singularity_and_scratch_dir_matches_golden(tmp_path):
    config = _config(tmp_path, container={"image": "/images/tvseg.sif", "runtime": "singularity",
                                          "python": "/opt/other/bin/python"},
                     worker={"scratch_dir": "/local scratch/tvseg"})
    check_golden("sbatch_container_singularity.sh", _script(config))


def test_bash_reads_the_exec_line_as_the_words_meant(tmp_path):
    """Run the container script's last line with bash, printing its words instead of exec'ing them."""
    config = _config(tmp_path, container={"image": f"{ODD}/tvseg.sif", "gpu": True, "binds": ["/a b/c'd"]})
    last = _script(config).rstrip("\n").splitlines()[-1]
    assert last.startswith("exec ")
    shown = subprocess.run(["bash", "-c", "tvseg_runtime=apptainer; printf '%s\\0' " + last[len("exec "):]],
                           capture_output=True, env={"TMPDIR": "/node tmp"}, check=True).stdout
    assert shown.decode().split("\0")[:-1] == [
        "apptainer", "exec", "--nv", "--bind", f"{ODD}/work", "--bind", "/node tmp", "--bind", "/a b/c'd",
        f"{ODD}/tvseg.sif", "/opt/tvseg/venv/bin/python", "-u", "-m", "submitit.core._submit", "submitit"]


def test_a_node_without_a_runtime_stops_the_task_with_a_clear_message(tmp_path):
    """This machine has neither apptainer nor singularity (none is installable here): the script's
    runtime check, run by bash as sbatch would, says so and exits before Python starts."""
    if shutil.which("apptainer") or shutil.which("singularity"):
        cannot_run("this machine has a container runtime: the no-runtime message cannot show")
    config = _config(tmp_path, container={"image": "/images/tvseg.sif"})
    script = tmp_path / "task.sbatch"
    script.write_text(_script(config))
    run = subprocess.run(["bash", str(script)], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 127
    assert "tvseg: neither apptainer nor singularity is on the PATH of" in run.stderr


def test_the_local_executor_says_when_this_machine_has_no_runtime(tmp_path, cli, make_clips):
    if shutil.which("apptainer") or shutil.which("singularity"):
        cannot_run("this machine has a container runtime: the no-runtime message cannot show")
    make_clips(tmp_path / "media", 1)
    (tmp_path / "tvseg.sif").write_bytes(b"")
    run = cli("submit", write_jobs(tmp_path, container={"image": "tvseg.sif"}))
    assert run.code == 1, run.out + run.err
    assert "neither apptainer nor singularity is on this machine's PATH" in run.err
    assert "1 shard(s) stay unsubmitted in the manifest" in run.err


def test_container_keys_are_validated_with_file_and_line(tmp_path, cli):
    jobs = write_jobs(tmp_path, container={"image": "x.sif", "runtime": "docker"})
    run = cli("submit", jobs, "--dry-run")
    assert run.code == 2 and f"{jobs}:" in run.err
    assert "container.runtime: 'docker' is not one of apptainer, singularity" in run.err
    jobs = write_jobs(tmp_path, container={"image": "x.sif"}, worker={"python": "/usr/bin/python3"})
    run = cli("submit", jobs, "--dry-run")
    assert run.code == 2 and "give worker.python or container, not both" in run.err
    jobs = write_jobs(tmp_path, container={"image": "x.sif", "binds": ["/a,b"]})
    run = cli("submit", jobs, "--dry-run")
    assert run.code == 2 and "container.binds[0]" in run.err and "','" in run.err


def test_submit_checks_python_and_image_before_anything_is_queued(tmp_path, cli, make_clips):
    make_clips(tmp_path / "media", 1)
    jobs = write_jobs(tmp_path, worker={"python": "venvs/gpu/bin/python"})
    run = cli("submit", jobs)
    assert run.code == 2, run.out + run.err
    assert f"worker.python: {tmp_path}/venvs/gpu/bin/python is not an executable file here" in run.err
    jobs = write_jobs(tmp_path, container={"image": "images/tvseg.sif"})
    run = cli("submit", jobs)
    assert run.code == 2 and f"container.image: no such file: {tmp_path}/images/tvseg.sif" in run.err
    assert not (tmp_path / "work").exists()


def test_container_definition_carries_what_a_remote_worker_needs():
    text = (REPO / "containers" / "tvseg.def").read_text()
    post = text.split("%post", 1)[1].split("\n%", 1)[0]
    apt = next(line for line in post.splitlines() if "apt-get install" in line).split()
    assert {"rsync", "openssh-client", "ffmpeg"} <= set(apt)
    assert f"python -m venv {CONTAINER_PYTHON.rsplit('/bin/', 1)[0]}" in post  # container.python's default
    readme = (REPO / "containers" / "README.md").read_text()
    for needed in ("apptainer build", ".sif", "binds:", "~/.ssh", "image:", "gpu: true"):
        assert needed in readme, needed


# --- a second, real venv --------------------------------------------------------------------


def make_venv(folder: Path, source: Path, reuse: Path | None = None) -> Path:
    """A venv with tvseg installed from ``source`` (no dependencies fetched); ``reuse``: a
    site-packages whose packages it may import too (a .pth line), for speed."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    python = folder / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    if reuse is not None:
        (site / "reuse.pth").write_text(f"{reuse}\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                    "--no-build-isolation", str(source)], check=True, capture_output=True)
    return python


def copy_source(dest: Path, version: str | None = None) -> Path:
    dest.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, dest / name)
    for package in ("tvseg", "orchestrator", "worker"):
        shutil.copytree(REPO / package, dest / package, ignore=shutil.ignore_patterns("__pycache__"))
    if version is not None:
        init = dest / "tvseg" / "__init__.py"
        text = init.read_text()
        assert f'__version__ = "{tvseg.__version__}"' in text
        other = f'__version__ = "{tvseg.__version__}+{version}"'
        init.write_text(text.replace(f'__version__ = "{tvseg.__version__}"', other))
    return dest


def site_packages() -> Path:
    import sysconfig  # noqa: PLC0415

    return Path(sysconfig.get_paths()["purelib"])


def test_a_worker_of_another_version_stops_before_taking_a_file(tmp_path, cli, make_clips, monkeypatch):
    monkeypatch.chdir(tmp_path)  # `python -m` puts the working folder first: not this checkout's tvseg
    source = copy_source(tmp_path / "src-other", version="other")
    python = make_venv(tmp_path / "worker venv", source, reuse=site_packages())
    make_clips(tmp_path / "media", 2)
    jobs = write_jobs(tmp_path, worker={"python": str(python)})
    run = cli("submit", jobs, "--wait")
    assert run.code == 3, run.out + run.err
    assert "pending=2" in run.out  # no file was taken
    ends = [r for r in journal_records(tmp_path / "work") if r["kind"] == "task_end"]
    assert [r["reason"] for r in ends] == ["error"]
    assert "VersionMismatch" in ends[0]["detail"]
    assert f"({python}) holds tvseg 0.1.0+other" in ends[0]["detail"]
    assert "orchestrator that submitted this task tvseg 0.1.0:" in ends[0]["detail"]
    assert not any(r["kind"] in ("file_start", "task_start") for r in journal_records(tmp_path / "work"))
    status = cli("status", jobs, "--json").json()
    assert status["files"][FileState.PENDING.value] == 2
