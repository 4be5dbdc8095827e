"""Benchmark of the segment stage against the plain inaSpeechSegmenter package.

Prints, on the same generated files (one run, each measure in a fresh process):

1. throughput over 10 files of 10 min: the stage vs ``Segmenter(...)(file)`` per file,
   alternating file by file in one process so both see the same machine load, and vs
   ``Segmenter().batch_process`` over the same files (target: stage >= 1.3x batch_process);
2. peak RSS (VmHWM) of the stage on a 10 min, a 2 h and an 8 h file
   (targets: <= 2 GB, and 8 h <= 1.1x the 10 min figure);
3. peak RSS of one stage instance after 8 and after 32 files (target: flat within 10 %).

Usage: python bench/segment_bench.py [--quick] [--throughput-only] [--model-dir DIR] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.media import make_long, make_program  # noqa: E402

FULL = dict(files=10, file_s=600, long_s=[7200, 28800], flat=(8, 32), flat_s=120)
QUICK = dict(files=3, file_s=120, long_s=[1200, 3600], flat=(4, 12), flat_s=60)
PROGRAMMES = [
    [("speech", 20), ("music", 25), ("speech", 30), ("noise", 10), ("music", 20), ("silence", 5)],
    [("music", 30), ("speech", 40), ("silence", 5), ("speech", 20), ("noise", 15)],
]


def vmhwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def child(mode: str, model_dir: Path, out: Path, files: list[Path]) -> dict:
    """Run in a fresh process: ``stage`` (per-file peak RSS) or ``compare`` (alternating timings)."""
    from inaSpeechSegmenter.export_funcs import seg2csv

    from worker.models import load_segmenter
    from worker.stages import FileContext
    from worker.stages.segment import SegmentStage, Settings

    stage = SegmentStage(Settings(model_dir=str(model_dir)))
    stage.setup()
    packages = {}
    if mode == "compare":
        packages = {"package (batch 32)": load_segmenter(model_dir, detect_gender=False),
                    f"package (batch {stage.settings.batch_size})":
                        load_segmenter(model_dir, detect_gender=False, batch_size=stage.settings.batch_size)}
    seconds = {"stage": 0.0, **{name: 0.0 for name in packages}}
    audio, rss = 0.0, []
    for i, path in enumerate(files):
        folder = out / f"{mode}-{i}"
        folder.mkdir(parents=True)
        t = time.perf_counter()
        result = stage.process(FileContext(i, str(path), path, folder, {}))
        seconds["stage"] += time.perf_counter() - t
        audio += result.facts["duration_s"]
        rss.append(round(vmhwm_mb()))
        for name, seg in packages.items():
            t = time.perf_counter()
            seg2csv(seg(str(path)), str(folder / f"{name}.csv"))
            seconds[name] += time.perf_counter() - t
    if packages:  # the reference: the package's own batch_process (it decodes the next file meanwhile)
        default = packages["package (batch 32)"]
        t = time.perf_counter()
        default.batch_process([str(p) for p in files], [str(out / f"batch-{i}.csv") for i in range(len(files))])
        seconds["package batch_process"] = time.perf_counter() - t
    return {"audio_s": audio, "seconds": seconds, "rss_mb_after_each": rss}


def measure(mode: str, model_dir: Path, out: Path, files: list[Path]) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--model-dir", str(model_dir), "--out", str(out),
           *map(str, files)]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if done.returncode != 0:
        raise RuntimeError(f"{mode} child failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller files, for a try-out")
    parser.add_argument("--throughput-only", action="store_true", help="measure 1. only")
    parser.add_argument("--model-dir", type=Path, default=Path(os.environ.get("TVSEG_MODEL_DIR", REPO / "models")))
    parser.add_argument("--keep", type=Path, help="generate into (and reuse) this folder")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("files", nargs="*", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.model_dir, args.out, args.files)))
        return

    size = QUICK if args.quick else FULL
    with tempfile.TemporaryDirectory(prefix="segment-bench-") as tmp:
        media = args.keep or Path(tmp) / "media"
        media.mkdir(parents=True, exist_ok=True)
        bases = []
        for i, sections in enumerate(PROGRAMMES):
            bases.append(media / f"programme {i}.mp4")
            if not bases[-1].exists():
                make_program(bases[-1], sections)

        def long(seconds: float, i: int = 0) -> Path:
            path = media / f"{seconds:g} s {i}.m4a"
            return path if path.exists() else make_long(path, bases[i % len(bases)], seconds)

        files = [long(size["file_s"], i) for i in range(size["files"])]
        print(f"load average at start: {os.getloadavg()}; cores: {os.cpu_count()}", flush=True)

        r = measure("compare", args.model_dir, Path(tmp) / "compare", files)
        print(f"\n1. throughput over {len(files)} files of {size['file_s'] / 60:g} min "
              f"({r['audio_s'] / 60:.0f} min of audio):")
        for name, s in r["seconds"].items():
            print(f"   {name:<20} {s:7.1f} s   {r['audio_s'] / s:6.1f}x real time")
        for name, s in r["seconds"].items():
            if name != "stage":
                print(f"   stage vs {name}: {s / r['seconds']['stage']:.2f}x")
        if args.throughput_only:
            print(f"\nload average at end: {os.getloadavg()}")
            return

        print("\n2. peak RSS of the stage on one file (fresh process each):", flush=True)
        ref = measure("stage", args.model_dir, Path(tmp) / "ref", files[:1])["rss_mb_after_each"][0]
        print(f"   {size['file_s'] / 60:5g} min: {ref:6.0f} MB", flush=True)
        for seconds in size["long_s"]:
            r = measure("stage", args.model_dir, Path(tmp) / f"long{seconds}", [long(seconds)])
            peak = r["rss_mb_after_each"][0]
            print(f"   {seconds / 3600:5g} h  : {peak:6.0f} MB = {peak / ref:.2f}x the {size['file_s'] / 60:g} min figure "
                  f"({r['audio_s'] / r['seconds']['stage']:.1f}x real time)", flush=True)

        few, many = size["flat"]
        r = measure("stage", args.model_dir, Path(tmp) / "flat", [long(size["flat_s"])] * many)
        rss = r["rss_mb_after_each"]
        print(f"\n3. one stage instance over {many} files of {size['flat_s'] / 60:g} min: peak RSS after {few} files "
              f"{rss[few - 1]:.0f} MB, after {many} files {rss[-1]:.0f} MB ({rss[-1] / rss[few - 1] - 1:+.1%})")
        print(f"\nload average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
