#!/usr/bin/env python3
"""End to end through SLURM against the local executor (prints figures; not a test).

N light files (copies of a 2-s clip, the `probe` stage) are submitted and waited for
twice, as `orchestrate submit --wait` does: once with the local executor, once on the
dev cluster (scripts/slurm-devcluster, started if SLURM_CONF is not set).  Prints the
wall time of each, their ratio, and the calls the SLURM run made to sacct, sbatch and
scontrol (counted by logging wrappers first on PATH) against the status refreshes.

Usage: .venv/bin/python bench/slurm_bench.py [--files 200] [--files-per-shard 10] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from orchestrator import orchestration  # noqa: E402
from orchestrator.config import load_config  # noqa: E402
from tvseg.states import FileState  # noqa: E402

COUNTED = ("sacct", "sbatch", "scontrol")


def make_media(folder: Path, n: int) -> None:
    folder.mkdir(parents=True)
    template = folder / "template.mp4.tmp"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc2=size=160x90:rate=25:duration=2", "-f", "lavfi", "-i", "sine=frequency=440:duration=2",
                    "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest",
                    "-f", "mp4", str(template)], check=True)
    for i in range(n):
        shutil.copyfile(template, folder / f"rec {i:05d}.mp4")
    template.unlink()


def write_jobs(folder: Path, executor: str, files_per_shard: int) -> Path:
    path = folder / "jobs.yaml"
    path.write_text(
        f"name: bench-{executor}\nworkdir: work\ninputs: [../media/*.mp4]\nexecutor: {executor}\n"
        f"sharding: {{files_per_shard: {files_per_shard}}}\n"
        'slurm: {time: "10", mem: 500M, cpus-per-task: 1, signal-delay: 60}\n'
        "worker: {stages: [probe], heartbeat_seconds: 2}\n",
        encoding="utf-8",
    )
    return path


def counting_path(folder: Path) -> Path:
    """A folder of wrappers that log each call of a SLURM client, then run the real one."""
    folder.mkdir()
    for name in COUNTED:
        real = shutil.which(name)
        if real is None:
            sys.exit(f"{name} is not on PATH: install SLURM (see scripts/slurm-devcluster)")
        wrapper = folder / name
        wrapper.write_text(f'#!/bin/sh\necho "$*" >>{shlex.quote(str(folder / name))}.calls\n'
                           f'exec {shlex.quote(real)} "$@"\n')
        wrapper.chmod(0o755)
    return folder


def run(jobs: Path) -> tuple[float, int, dict[FileState, int]]:
    """Submit and wait like `orchestrate submit --wait`: (seconds, refreshes, final counts)."""
    config = load_config(jobs)
    refreshes = 0

    def progress(_counts: dict[FileState, int]) -> None:
        nonlocal refreshes
        refreshes += 1

    start = time.perf_counter()
    orchestration.submit(config, orchestration.plan_submit(config))
    manifest = orchestration.open_manifest(config)
    try:
        counts = orchestration.wait(config, manifest, progress)
    finally:
        manifest.close()
    return time.perf_counter() - start, refreshes, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--files-per-shard", type=int, default=10)
    parser.add_argument("--keep", type=Path, help="work in this (new) folder and keep it")
    args = parser.parse_args()
    if "SLURM_CONF" not in os.environ:
        script = ROOT / "scripts" / "slurm-devcluster"
        subprocess.run([str(script), "start"], check=True, stdout=subprocess.DEVNULL)
        env = subprocess.run([str(script), "env"], check=True, capture_output=True, text=True).stdout
        os.environ["SLURM_CONF"] = shlex.split(env.split("=", 1)[1])[0]

    root = args.keep or Path(tempfile.mkdtemp(prefix="tvseg-slurm-bench-"))
    try:
        make_media(root / "media", args.files)
        results = {}
        for executor in ("local", "slurm"):
            folder = root / executor
            folder.mkdir()
            if executor == "slurm":
                shims = counting_path(root / "shims")
                os.environ["PATH"] = f"{shims}{os.pathsep}{os.environ['PATH']}"
            results[executor] = run(write_jobs(folder, executor, args.files_per_shard))
            seconds, refreshes, counts = results[executor]
            if counts[FileState.DONE] != args.files:
                sys.exit(f"{executor}: not every file is done: {counts}")
        shards = -(-args.files // args.files_per_shard)
        (local_s, _, _), (slurm_s, refreshes, _) = results["local"], results["slurm"]
        calls = {name: len((shims / f"{name}.calls").read_text().splitlines()) for name in COUNTED}
        print(f"{args.files} files (2-s clips, probe) in {shards} shards of {args.files_per_shard}")
        print(f"local executor : {local_s:6.1f} s")
        print(f"SLURM (dev)    : {slurm_s:6.1f} s   ratio SLURM/local {slurm_s / local_s:.2f}")
        print(f"SLURM calls    : sacct {calls['sacct']} over {refreshes} status refreshes "
              f"({calls['sacct'] / refreshes:.2f} per refresh), sbatch {calls['sbatch']}, "
              f"scontrol {calls['scontrol']}")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
