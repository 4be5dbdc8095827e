#!/usr/bin/env python3
"""Benchmark of the spine at archive scale (prints figures; not a test).

1. `orchestrate submit --dry-run` over N input paths listed in a file (the paths are
   real, sparse files of varied sizes, so every one is stat'ed).
2. `orchestrate status` (tables and --json) on an N-file manifest in which most
   files are settled, built through the manifest's own API and folded journals.
3. `orchestrate report` (the HTML page, with a timeline link per done file) on that manifest.

Targets on a 2-core machine with N = 100,000: dry run <= 10 s, status <= 0.5 s, report <= 10 s.

Usage: .venv/bin/python bench/spine_bench.py [--files 100000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from orchestrator.config import load_config  # noqa: E402
from orchestrator.inputs import scan_inputs  # noqa: E402
from orchestrator.manifest import InputFile, Manifest  # noqa: E402
from orchestrator.sharding import plan_shards  # noqa: E402
from tvseg.journal import JournalWriter, shard_dir  # noqa: E402

ORCHESTRATE = str(Path(sys.executable).with_name("orchestrate"))


def make_inputs(folder: Path, n: int) -> Path:
    rng = random.Random(42)
    listing = folder / "paths.txt"
    lines = []
    for i in range(n):
        sub = folder / "media" / f"channel {i % 50:02d}"
        if i < 50:
            sub.mkdir(parents=True, exist_ok=True)
        path = sub / f"rec {i:06d} 'é'.mp4"
        with open(path, "wb") as fh:
            fh.truncate(rng.randint(500_000_000, 8_000_000_000))  # sparse: 0.5 to 8 GB apparent
        lines.append(str(path))
    listing.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return listing


def timed(cmd: list[str], repeat: int = 1) -> tuple[float, str]:
    best, out = float("inf"), ""
    for _ in range(repeat):
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        best = min(best, time.perf_counter() - start)
        if proc.returncode != 0:
            raise SystemExit(f"{cmd} failed ({proc.returncode}): {proc.stderr}")
        out = proc.stdout
    return best, out


def build_manifest(jobs: Path) -> None:
    """Shards as submit would make them, then journals saying how most files ended."""
    config = load_config(jobs)
    inputs: list[InputFile] = scan_inputs(config)
    plan = plan_shards(inputs, lambda f: f.size, lambda f: f.path, config.sharding.files_per_shard, None)
    manifest = Manifest(config.manifest_path, create=True)
    shard_ids = manifest.add_shards(plan)
    manifest.record_submission("submit", "slurm", shard_ids, [f"1000_{i}" for i in range(len(shard_ids))], {})
    rng = random.Random(1)
    for shard_id in shard_ids:
        journal = JournalWriter(shard_dir(config.workdir, shard_id))
        journal.write("task_start", shard=shard_id, attempt=0, host="node1", pid=1, job_id="x", skipped=[])
        for f in manifest.shard_files(shard_id):
            roll = rng.random()
            if roll < 0.15:
                continue  # never reached
            journal.write("file_start", file_id=f.id)
            state = "done" if roll < 0.93 else "failed" if roll < 0.97 else "quarantined"
            error = {} if state == "done" else {"error_class": "BadInput", "error": f"{f.path}: no audio stream"}
            media = rng.uniform(3600, 8 * 3600)
            seconds = {"staging": 2.0, "probe": 0.5, "segment": media / 40, "boundaries": 1.5}
            seconds["total"] = sum(seconds.values())
            outputs = [f"{f.output_name}/segments.csv", f"{f.output_name}/timeline.png"] if state == "done" else []
            journal.write("file_end", file_id=f.id, state=state, outputs=outputs, facts={"duration_s": media},
                          seconds=seconds, peak_rss={"probe": 80_000_000, "segment": rng.randint(1, 3) * 10**9,
                                                     "boundaries": 150_000_000}, **error)
        journal.write("task_end", reason="stopped", detail="TIMEOUT", peak_rss=rng.randint(2, 4) * 10**9)
        journal.close()
    manifest.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="tvseg-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        listing = make_inputs(folder, args.files)
        jobs = folder / "jobs.yaml"
        jobs.write_text(f"name: bench\nworkdir: work\ninputs_from: {listing.name}\nexecutor: local\n"
                        "sharding: {files_per_shard: 50}\nworker: {stages: [probe]}\n", encoding="utf-8")
        print(f"generated {args.files} input files in {time.perf_counter() - t0:.1f} s")

        dry, out = timed([ORCHESTRATE, "submit", str(jobs), "--dry-run"], repeat=2)
        print(f"submit --dry-run over {args.files} paths: {dry:.2f} s (target <= 10 s)  [{out.splitlines()[0]}]")

        t0 = time.perf_counter()
        build_manifest(jobs)
        print(f"built a {args.files}-file manifest with journals in {time.perf_counter() - t0:.1f} s")
        first, _ = timed([ORCHESTRATE, "status", str(jobs), "--json"])
        print(f"status --json, first run (folds every journal): {first:.2f} s")
        js, out = timed([ORCHESTRATE, "status", str(jobs), "--json"], repeat=5)
        table, _ = timed([ORCHESTRATE, "status", str(jobs)], repeat=5)
        snap = json.loads(out)
        print(f"status --json on {snap['total']} files: {js:.3f} s (target <= 0.5 s)  files={snap['files']}")
        print(f"status (tables) on {snap['total']} files: {table:.3f} s (target <= 0.5 s)")
        report = folder / "report.html"
        rep, out = timed([ORCHESTRATE, "report", str(jobs), "--out", str(report)], repeat=3)
        print(f"report on {snap['total']} files: {rep:.2f} s (target <= 10 s), {report.stat().st_size / 1e6:.1f} MB  "
              f"[{out.strip()}]")
        bare, _ = timed([sys.executable, "-c", "pass"], repeat=5)
        print(f"(python start-up alone: {bare:.3f} s)")
        print(f"manifest size: {os.path.getsize(folder / 'work' / 'manifest.sqlite') / 1e6:.1f} MB")
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
