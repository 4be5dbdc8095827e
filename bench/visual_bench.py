"""Benchmark of the visual half: keyframes, training, classify.

Prints, on generated media (each measure in a fresh process; peak RSS is the process's VmHWM,
not ru_maxrss, which a child starts from its parent's):

1. keyframes: seconds per music segment and peak RSS of the stage's process on a 10-minute and a
   2-hour recording, 8 music segments of 20 s spread over each, K=5, alternated ``--rounds`` times
   so both files see the same load (target: equal seconds per segment, equal memory), with the
   ratios 2 h / 10 min; then what opening each file alone costs (PyAV: seconds, and the memory of
   the container's sample index, which FFmpeg reads whole at open).  With ``--baseline REV``, the
   same for the keyframes stage of git revision REV (e.g. one that ran the ffmpeg CLI a segment:
   its largest ffmpeg's peak RSS is shown too);
2. training: `orchestrate classifier train` (the small CNN) on keyframes of generated title
   cards and commercials: seconds and peak RSS;
3. classify: seconds per music segment (K=5 keyframes each) and peak RSS of the stage on a
   recording's keyframes, model loading excluded and reported apart.

Usage: python bench/visual_bench.py [--rounds N] [--keep DIR] [--baseline REV] [--keyframes-only]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.media import make_broadcast, make_long_video  # noqa: E402

PEAK = """
def peak_mb():
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:")) / 1024
"""

KEYFRAMES = PEAK + """
import json, resource, sys, time
from pathlib import Path
from worker.stages import FileContext
from worker.stages.keyframes import KeyframesStage, Settings
media, out, k = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
stage = KeyframesStage(Settings(frames=k))
stage.setup()
t0 = time.perf_counter()
facts = stage.process(FileContext(1, str(media), media, out, {})).facts
print(json.dumps({"seconds": time.perf_counter() - t0, **facts, "stage_mb": peak_mb(),
                  "children_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""

OPEN = PEAK + """
import json, sys, time
import av
before = peak_mb()
t0 = time.perf_counter()
with av.open("file:" + sys.argv[1]) as container:
    seconds = time.perf_counter() - t0
    print(json.dumps({"seconds": seconds, "index_mb": peak_mb() - before}))
"""

TRAIN = PEAK + """
import json, sys
from orchestrator.cli import main
code = main(["classifier", "train", sys.argv[1], "--out", sys.argv[2]])
assert code == 0, code
print(json.dumps({"peak_mb": peak_mb()}))
"""

CLASSIFY = PEAK + """
import json, sys, time
from pathlib import Path
from worker.stages import FileContext
from worker.stages.classify import ClassifyStage, Settings
model, out = sys.argv[1], Path(sys.argv[2])
t0 = time.perf_counter()
stage = ClassifyStage(Settings(model_dir=model))
stage.setup()
t1 = time.perf_counter()
facts = stage.process(FileContext(1, "x", out, out, {})).facts
t2 = time.perf_counter()
print(json.dumps({"setup_seconds": t1 - t0, "seconds": t2 - t1, **facts,
                  "peak_mb": peak_mb()}))
"""


def python(script: str, *args, cwd: Path = REPO) -> dict:
    done = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True, cwd=cwd)
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def write_segments(folder: Path, rows) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "segments.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(("labels", "start", "stop"))
        writer.writerows((label, f"{s:.2f}", f"{e:.2f}") for label, s, e in rows)


def spread(duration: float, n: int = 8) -> list[tuple[str, float, float]]:
    rows: list[tuple[str, float, float]] = []
    gap = (duration - 30) / n
    for k in range(n):
        start = 5 + (k + 1) * gap - 20
        rows += [("speech", rows[-1][2] if rows else 0.0, start), ("music", start, start + 20)]
    return rows


def bench_keyframes(folder: Path, rounds: int, baseline: str | None) -> None:
    videos = {name: (make_long_video(folder / f"{name}.mp4", s), s) for name, s in (("10 min", 600.0), ("2 h", 7200.0))}
    trees = {"this tree": REPO}
    if baseline:  # that revision's stage, run the same way (its worker/ and tvseg/ only)
        trees[f"at {baseline}"] = folder / "baseline"
        trees[f"at {baseline}"].mkdir()
        archive = subprocess.run(["git", "-C", str(REPO), "archive", baseline, "worker", "tvseg"], capture_output=True,
                                 check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(trees[f"at {baseline}"])], input=archive, check=True)
    print("1. keyframes: 8 music segments of 20 s, K=5 (seconds per segment, best of "
          f"{rounds}; peak RSS of the stage's process)")
    ours: dict[str, float] = {}
    for label, tree in trees.items():
        results: dict[str, list[dict]] = {name: [] for name in videos}
        for r in range(rounds):
            for name, (path, seconds) in videos.items():
                out = folder / f"out-{label}-{name}-{r}".replace(" ", "_")
                write_segments(out, spread(seconds))
                results[name].append(python(KEYFRAMES, path, out, 5, cwd=tree))
        per = {n: min(x["seconds"] for x in v) / v[0]["music_segments"] for n, v in results.items()}
        ours = ours or per
        peak = {n: max(x["stage_mb"] for x in v) for n, v in results.items()}
        children = {n: max(x["children_mb"] for x in v) for n, v in results.items()}
        for name in videos:
            extra = f" (its largest ffmpeg: {children[name]:.0f} MB)" if children[name] else ""
            print(f"   {label:<16} {name:>6}: {per[name]:.3f} s/segment; peak {peak[name]:.0f} MB{extra}")
        print(f"   {label:<16} 2 h / 10 min: {per['2 h'] / per['10 min']:.2f}x the seconds, "
              f"{peak['2 h'] / peak['10 min']:.2f}x the peak RSS")
    opens = {name: [python(OPEN, path) for _ in range(rounds)] for name, (path, _) in videos.items()}
    seconds = {name: min(x["seconds"] for x in v) for name, v in opens.items()}
    index = {name: max(x["index_mb"] for x in v) for name, v in opens.items()}
    print(f"   opening a file (PyAV, once a file; memory it adds): 10 min {seconds['10 min']:.3f} s, "
          f"{index['10 min']:.1f} MB; 2 h {seconds['2 h']:.3f} s, {index['2 h']:.1f} MB (growth: the sample index, "
          "read whole at open, "
          f"{(index['2 h'] - index['10 min']) / (7200 - 600) * 3600:.1f} MB an hour)")
    rest = {name: ours[name] - seconds[name] / 8 for name in videos}  # 8 segments a file
    print(f"   this tree less the open (once a file): 10 min {rest['10 min']:.3f}, 2 h {rest['2 h']:.3f} s/segment "
          f"({rest['2 h'] / rest['10 min']:.2f}x)")


def bench_training_and_classify(folder: Path) -> None:
    plan = [("title", 10), ("speech", 4), ("commercial", 10), ("speech", 4)] * 4
    frames = folder / "frames"
    for i in range(3):
        b = make_broadcast(folder / f"b{i}.mp4", plan, variant=i, captions=False)
        out = folder / f"kf{i}"
        rows = [("music" if k in ("title", "commercial") else "speech", s, e) for k, s, e in b.sections]
        write_segments(out, rows)
        python(KEYFRAMES, b.path, out, 10)
        kinds = {j: k for j, (k, _, _) in enumerate(b.sections)}
        with open(out / "keyframes.csv", newline="") as fh:
            for row in csv.DictReader(fh):
                cls = "title_sequence" if kinds[int(row["segment"])] == "title" else "commercial"
                (frames / cls).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(out / row["path"], frames / cls / f"b{i}_{Path(row['path']).name}")
    n = {c.name: len(list(c.iterdir())) for c in frames.iterdir()}
    model = folder / "model"
    t0 = time.perf_counter()
    r = python(TRAIN, frames, model)
    seconds, peak = time.perf_counter() - t0, r["peak_mb"]
    info = json.loads((model / "classifier.json").read_text())
    metrics = json.loads((model / "metrics.json").read_text())
    print(f"2. training (small CNN, {n} images, {info['training']['epochs_run']} epochs): {seconds:.1f} s "
          f"(command), {info['training']['seconds']} s (training itself); peak RSS {peak:.0f} MB; "
          f"held-out accuracy {metrics['accuracy']:.3f} on {metrics['n']}")
    b = make_broadcast(folder / "new.mp4", plan * 2, variant=3, captions=False)
    out = folder / "classify"
    write_segments(out, [("music" if k in ("title", "commercial") else "speech", s, e) for k, s, e in b.sections])
    python(KEYFRAMES, b.path, out, 5)
    r = python(CLASSIFY, model, out)
    print(f"3. classify: {r['seconds'] / r['classified']:.3f} s/segment over {r['classified']} segments "
          f"(K=5; {r['filtered']} filtered); model load {r['setup_seconds']:.1f} s; peak RSS {r['peak_mb']:.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="keep the generated media here")
    parser.add_argument("--baseline", metavar="REV", help="also measure the keyframes stage of this git revision")
    parser.add_argument("--keyframes-only", action="store_true", help="measure keyframes only (no training, classify)")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="tvseg-visual-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"load average at start: {os.getloadavg()}")
    try:
        bench_keyframes(folder, args.rounds, args.baseline)
        if not args.keyframes_only:
            bench_training_and_classify(folder)
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
