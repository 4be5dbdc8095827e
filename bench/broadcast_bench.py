"""The segment stage vs the plain inaSpeechSegmenter, whole runs, on broadcast-like media.

Prints, in one run (load average beside every figure; the machine may be shared):

1. the media: 4 generated broadcast-like recordings (H.264 + AAC; speech in ten voices,
   four music styles, pink/brown noise, low-level silence, sections of 5-40 s) and the
   share of digital silence in each; and, as a second line, the older test programmes
   (long stretches of digital silence), looped to the same length;
2. whole-run wall time, back to back (plain, stage, stage, plain), same process count
   (one worker process, one feature process): ``orchestrate submit --wait`` with [probe, segment] on the local
   executor vs ``Segmenter(vad_engine='smn', detect_gender=False).batch_process`` (batch
   32, its default) in a fresh Python, each timed from process start to exit; and
   whether the segments are equal (labels, boundaries within one 20 ms frame);
3. features only (decode + the package's features), × real time, with 1 and 2 feature
   processes; the network alone, patches a second at batch 256, per backend;
4. peak RSS (VmHWM) of the stage on an 8 h recording (fresh process).

Usage: python bench/broadcast_bench.py [--quick] [--skip-8h] [--model-dir DIR] [--keep DIR]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.media import (assert_same_segmentation, digital_silence_fraction, make_broadcast_like,  # noqa: E402
                         make_long, make_program)

OLD_PROGRAMMES = [
    [("speech", 20), ("music", 25), ("speech", 30), ("noise", 10), ("music", 20), ("silence", 5)],
    [("music", 30), ("speech", 40), ("silence", 5), ("speech", 20), ("noise", 15)],
]
PLAIN = """
import sys, time
from pathlib import Path
from worker.models import load_segmenter
files, outs = sys.argv[2::2], sys.argv[3::2]
seg = load_segmenter(Path(sys.argv[1]), vad_engine="smn", detect_gender=False)  # batch_size 32: the default
seg.batch_process(files, outs)
"""
RSS_8H = """
import json, sys
from pathlib import Path
from worker.stages import FileContext
from worker.stages.segment import SegmentStage, Settings
stage = SegmentStage(Settings(model_dir=sys.argv[1], feature_workers=1))
stage.setup()
out = Path(sys.argv[3]); out.mkdir(parents=True, exist_ok=True)
result = stage.process(FileContext(1, sys.argv[2], Path(sys.argv[2]), out, {}))
hwm = next(int(l.split()[1]) for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmHWM:"))
print(json.dumps({"rss_mb": hwm / 1024, "duration_s": result.facts["duration_s"]}))
"""


def load() -> str:
    return "load " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def timed(cmd: list[str], **kwargs) -> tuple[float, subprocess.CompletedProcess]:
    t = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    seconds = time.perf_counter() - t
    if done.returncode != 0:
        raise RuntimeError(f"{cmd[:4]} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return seconds, done


def read_segments(path: Path, delimiter: str) -> list[tuple[str, float, float]]:
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh, delimiter=delimiter))
    return [(r[0], float(r[1]), float(r[2])) for r in rows[1:]]


def whole_runs(files: list[Path], model_dir: Path, folder: Path, feature_workers: int) -> dict:
    """The plain package and the stage on ``files``, in the order plain, stage, stage, plain
    (a load that drifts weighs on both alike); each stage run in a fresh workdir."""
    import yaml  # noqa: PLC0415

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)}
    orchestrate = str(Path(sys.executable).with_name("orchestrate"))
    runs = []
    for k, kind in enumerate(["plain", "stage", "stage", "plain"]):
        out = folder / f"{kind}-{k}"
        out.mkdir()
        if kind == "plain":
            csvs = [out / f"{i}.csv" for i in range(len(files))]
            args = [x for pair in zip(map(str, files), map(str, csvs)) for x in pair]
            seconds, _ = timed([sys.executable, "-c", PLAIN, str(model_dir), *args], env=env)
        else:
            jobs = out / "jobs.yaml"
            jobs.write_text(yaml.safe_dump({
                "name": "bench", "workdir": str(out / "work"), "inputs": [str(f) for f in files], "executor": "local",
                "sharding": {"files_per_shard": len(files)},  # one worker process, as the plain run
                "worker": {"stages": ["probe", "segment"], "queue_depth": 2},
                "stage_settings": {"segment": {"model_dir": str(model_dir), "feature_workers": feature_workers}},
            }))
            seconds, _ = timed([orchestrate, "submit", str(jobs), "--wait"], env=env, cwd=out)
        runs.append((kind, seconds, load()))
    equal = 0
    for i, f in enumerate(files):
        (seg_csv,) = (folder / "stage-1" / "work" / "outputs").glob(f"{f.stem}-*/segments.csv")
        assert_same_segmentation(read_segments(seg_csv, ","), read_segments(folder / "plain-0" / f"{i}.csv", "\t"))
        equal += 1
    provenance = next((folder / "stage-1" / "work" / "outputs").glob("*/provenance.json"))
    plain = sum(s for kind, s, _ in runs if kind == "plain")
    stage = sum(s for kind, s, _ in runs if kind == "stage")
    return {"runs": runs, "ratio": plain / stage, "equal": equal, "backend": json.loads(provenance.read_text())["backend"]}


def features_rate(path: Path, model_dir: Path) -> str:
    code = f"""
import time, numpy as np
from pathlib import Path
from worker.segmentation import ChunkedSegmenter, _FrameStore
import os
out = []
for workers in (1, 2, 1, 2):
    seg = ChunkedSegmenter([], 0.03, 60.0, 30.0, workers)
    try:
        list(seg._features(Path({str(path)!r}), "warm-up")) if workers > 1 else None  # spawn the processes
        t = time.perf_counter(); seconds = 0.0
        with _FrameStore(Path({str(path.parent)!r})) as store:
            for s, loge, mspec in seg._features(Path({str(path)!r}), "bench"):
                store.append(loge, mspec); seconds += s
        out.append(f"{{workers}} worker(s): {{seconds / (time.perf_counter() - t):6.0f}}x real time "
                   f"(load {{' '.join(f'{{x:.2f}}' for x in os.getloadavg())}})")
    finally:
        seg.close()
print("\\n".join(out))
"""
    _, done = timed([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(REPO)})
    return done.stdout


def network_rate(path: Path, model_dir: Path) -> str:
    code = f"""
import os, time, numpy as np
from pathlib import Path
from worker.models import load_nets
from worker.segmentation import _FrameStore, _decode_blocks, _patches, frame_features
with _FrameStore(Path({str(path.parent)!r})) as store:
    for _, block in _decode_blocks(Path({str(path)!r}), "bench", 60.0):
        store.append(*frame_features(block))
        if store.frames > 60000:
            break
    data, finite = _patches(store, 21, 0, 256 * 40)
batches = [np.ascontiguousarray(data[i:i + 256, ..., None]) for i in range(0, len(data), 256)]
rates = {{}}
for backend in ("tensorflow", "onnx", "tensorflow", "onnx"):
    (net,), _ = load_nets(Path({str(model_dir)!r}), "smn", False, 256, backend)
    net.predict(batches[0])
    t = time.perf_counter()
    for b in batches:
        net.predict(b)
    rates.setdefault(backend, []).append(256 * len(batches) / (time.perf_counter() - t))
    print(f"{{backend:<10}} {{rates[backend][-1]:6.0f}} patches/s at batch 256 "
          f"(load {{' '.join(f'{{x:.2f}}' for x in os.getloadavg())}})")
print(f"onnx / tensorflow: {{np.mean(rates['onnx']) / np.mean(rates['tensorflow']):.2f}}x")
"""
    _, done = timed([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"})
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 files of 2 min, 1 h for the RSS")
    parser.add_argument("--skip-8h", action="store_true", help="leave out the 8 h peak RSS")
    parser.add_argument("--only", choices=["broadcast", "old", "rates"], help="measure only this part")
    parser.add_argument("--feature-workers", type=int, default=1, help="the stage's feature processes in 2.")
    parser.add_argument("--model-dir", type=Path, default=Path(os.environ.get("TVSEG_MODEL_DIR", REPO / "models")))
    parser.add_argument("--keep", type=Path, help="generate media into (and reuse) this folder")
    args = parser.parse_args()
    file_s, long_s = (120, 3600) if args.quick else (600, 28800)

    with tempfile.TemporaryDirectory(prefix="broadcast-bench-") as tmp:
        media = args.keep or Path(tmp) / "media"
        (media / "broadcast").mkdir(parents=True, exist_ok=True)
        (media / "old").mkdir(parents=True, exist_ok=True)
        print(f"cores: {os.cpu_count()}; {load()}", flush=True)
        broadcast = []
        for seed in range(4):
            path = media / "broadcast" / f"broadcast {seed} {file_s:g}s.mp4"
            if not path.exists():
                make_broadcast_like(path, file_s, seed, media / "clips")
            broadcast.append(path)
        old = []
        for i in range(4):
            base = media / "old" / f"programme {i % 2}.mp4"
            if not base.exists():
                make_program(base, OLD_PROGRAMMES[i % 2])
            path = media / "old" / f"old {i} {file_s:g}s.m4a"
            old.append(path if path.exists() else make_long(path, base, file_s))
        silence = [digital_silence_fraction(p) for p in broadcast]
        old_silence = [digital_silence_fraction(p) for p in old]
        print(f"\n1. media: 4 x {file_s / 60:g} min. Digital silence (all-zero 10 ms frames): broadcast-like "
              f"{', '.join(f'{x:.2%}' for x in silence)}; old programmes {', '.join(f'{x:.1%}' for x in old_silence)}",
              flush=True)

        print(f"\n2. whole runs, back to back (stage: feature_workers {args.feature_workers}):", flush=True)
        for label, files in [("broadcast-like", broadcast), ("old programmes (digital silence)", old)]:
            if args.only and not label.startswith(args.only):
                continue
            folder = Path(tmp) / label.split()[0]
            folder.mkdir()
            r = whole_runs(files, args.model_dir, folder, args.feature_workers)
            print(f"   {label} (stage backend {r['backend']}):", flush=True)
            for kind, seconds, after in r["runs"]:
                name = "plain batch_process (batch 32)" if kind == "plain" else "orchestrate submit --wait [probe, segment]"
                print(f"      {name:<44} {seconds:6.1f} s   ({after} at its end)", flush=True)
            print(f"      ratio plain / stage (sums of both runs): {r['ratio']:.2f}x; segments equal on "
                  f"{r['equal']}/{len(files)} files", flush=True)

        if args.only in (None, "rates"):
            print("\n3. features only (decode + mfcc), one 10-min broadcast-like file:", flush=True)
            print("   " + features_rate(broadcast[0], args.model_dir).strip().replace("\n", "\n   "), flush=True)
            print("   network alone (speech/music/noise):", flush=True)
            print("   " + network_rate(broadcast[0], args.model_dir).strip().replace("\n", "\n   "), flush=True)

        if not args.skip_8h and args.only is None:
            long = media / f"broadcast {long_s / 3600:g}h.m4a"
            if not long.exists():
                make_long(long, broadcast[0], long_s)
            _, done = timed([sys.executable, "-c", RSS_8H, str(args.model_dir), str(long), str(Path(tmp) / "rss")],
                            env={**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"})
            r = json.loads(done.stdout.splitlines()[-1])
            print(f"\n4. peak RSS of the stage (auto backend) on {r['duration_s'] / 3600:.1f} h: {r['rss_mb']:.0f} MB "
                  f"({load()})", flush=True)
        print(f"\n{load()} at end")


if __name__ == "__main__":
    main()
