#!/usr/bin/env python3
"""Benchmark of the staging overlap (prints figures; not a test).

A shard of N remote files (``127.0.0.1:/...`` over a test sshd started here, as the
tests start it; run as root) whose transfers are slowed with ``rsync --bwlimit``; compute is the test
`sleep` stage (a fixed time per file, as a GPU model that leaves the CPU to rsync)
set to the time one throttled transfer took (measured first): staging about compute.  The worker's own Pipeline and
RsyncStager run the shard twice in one process:

- pipelined: the producer thread fetches the next files while the consumer computes;
- serial: stage one file, compute it, remove it, the next (what the overlap replaces).

Figures: wall time of each; the ideal max(sum staging, sum compute) + one file (the
pipeline's fill: the first transfer, or the last computation, cannot overlap); and
the ratios pipelined/ideal (target <= 1.1) and serial/pipelined.

Usage: .venv/bin/python bench/staging_bench.py [--files 12] [--seconds 1.0] [--size-mb 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "slurm")]

from sleep_stage import SleepStage  # noqa: E402
from tests.helpers import journal_records  # noqa: E402
from tests.sshd import Sshd  # noqa: E402
from tvseg.journal import JournalWriter, shard_dir  # noqa: E402
from tvseg.remote import SshConfig  # noqa: E402
from tvseg.task import TaskFile  # noqa: E402
from worker.pipeline import Pipeline  # noqa: E402
from worker.stages import FileContext  # noqa: E402
from worker.staging import ByteBudget, RsyncStager  # noqa: E402


def pipelined(files, ssh, stage, root: Path) -> tuple[float, float, float]:
    """Wall time, sum of transfer seconds, sum of compute seconds."""
    stop = threading.Event()
    journal = JournalWriter(shard_dir(root / "work", 1))
    start = time.monotonic()
    Pipeline(files, [stage], RsyncStager(root / "scratch-p", ssh, stop), journal, root / "out-p", queue_depth=4,
             budget=ByteBudget(None), stop=stop).run()
    wall = time.monotonic() - start
    journal.close()
    ends = [r for r in journal_records(root / "work") if r["kind"] == "file_end"]
    assert len(ends) == len(files) and {r["state"] for r in ends} == {"done"}, ends
    return wall, sum(r["staging"]["seconds"] for r in ends), sum(r["seconds"]["sleep"] for r in ends)


def serial(files, ssh, stage, root: Path) -> float:
    stager = RsyncStager(root / "scratch-s", ssh, threading.Event())
    start = time.monotonic()
    for f in files:
        transfer = stager.stage(f)
        out = root / "out-s" / str(f.file_id)
        out.mkdir(parents=True)
        stage.process(FileContext(f.file_id, f.path, transfer.path, out, {}))
        stager.discard(f.file_id)
    return time.monotonic() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=1.0,
                        help="transfer time per file the bandwidth limit aims at (compute is set to the measured one)")
    parser.add_argument("--size-mb", type=float, default=2.0, help="size of each file")
    args = parser.parse_args()
    size = int(args.size_mb * 1e6)
    bwlimit_kb = max(1, int(size / 1024 / args.seconds))  # rsync's KiB/s: a transfer of about `seconds`
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        server = Sshd(root / "sshd")
        server.start()
        try:
            archive = root / "archive é"
            archive.mkdir()
            files = []
            for i in range(args.files):
                path = archive / f"rec {i:02d}.mp4"
                path.write_bytes(os.urandom(size))  # incompressible, as video is
                files.append(TaskFile(i + 1, f"127.0.0.1:{path}", size, f"rec-{i}"))
            ssh = SshConfig(user="root", port=server.port, identity_file=str(server.user_key),
                            options=tuple(server.ssh_options), rsync_options=(f"--bwlimit={bwlimit_kb}",))
            # Calibrate: compute takes what one throttled transfer takes here, now (ssh's start included).
            calibration = RsyncStager(root / "scratch-c", ssh, threading.Event()).stage(files[0])
            per_file = calibration.seconds
            stage = SleepStage(SleepStage.Settings(seconds=per_file))
            wall, staging, compute = pipelined(files, ssh, stage, root)
            wall_serial = serial(files, ssh, stage, root)
        finally:
            server.stop()
    n = args.files
    ideal = max(staging, compute) + min(staging, compute) / n
    print(f"{n} files of {size / 1e6:.1f} MB, rsync --bwlimit={bwlimit_kb} (KiB/s); "
          f"one transfer took {per_file:.2f} s, so compute takes that a file")
    print(f"staging: {staging:.2f} s in all ({staging / n:.2f} s a file); compute: {compute:.2f} s in all")
    print(f"pipelined wall: {wall:.2f} s; ideal max(staging, compute) + one file: {ideal:.2f} s; "
          f"ratio {wall / ideal:.3f} (target <= 1.1)")
    print(f"serial wall: {wall_serial:.2f} s; serial / pipelined: {wall_serial / wall:.2f}x")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
