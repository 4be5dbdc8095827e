"""The visual half end to end, with real components: generated broadcasts with caption files,
the real segmenter and ffmpeg through the local executor, a data set from the captions alone,
a small CNN trained here, and the classify stage on new recordings."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.manifest import output_name
from tests.helpers import journal_records, write_jobs
from tests.media import make_broadcast
from tvseg.visual import CLASSIFIED_CSV, CLASSIFIED_HEADER, CLASSIFIED_JSON, METRICS_FILE, MODEL_FILE, MODEL_INFO

# Two shows a recording; each opening title is marked by a story start, each commercial by its span.
SHOWS = [("title", 8), ("speech", 6), ("commercial", 8), ("speech", 6), ("commercial", 7), ("speech", 6),
         ("credits", 6), ("noise", 3), ("title", 8), ("speech", 6), ("commercial", 8), ("speech", 6), ("credits", 6)]
FRAMES = 8  # keyframes a music segment


def orchestrate(*args, timeout: float = 600) -> subprocess.CompletedProcess:
    """The real command in its own process (TensorFlow loads there, not in the test process)."""
    return subprocess.run([str(Path(sys.executable).with_name("orchestrate")), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


def run_pipeline(folder: Path, model_dir: Path, stages: list[str], settings: dict | None = None) -> Path:
    jobs = write_jobs(folder, worker={"stages": stages, "heartbeat_seconds": 1}, sharding={"files_per_shard": 4},
                      stage_settings={"segment": {"model_dir": str(model_dir)}, "keyframes": {"frames": FRAMES},
                                      **(settings or {})})
    run = orchestrate("submit", jobs, "--wait")
    assert run.returncode == 0, run.stdout + run.stderr
    return jobs


@pytest.fixture(scope="session")
def training_run(tmp_path_factory, model_dir) -> Path:
    """Three captioned recordings through probe, segment and keyframes; their jobs.yaml."""
    folder = tmp_path_factory.mktemp("training run")
    (folder / "media").mkdir()
    for i, name in enumerate(["2006-01-02_0000_US_KTV_Morning News", "2006-01-03_1800_US_WXYZ_Évening Show",
                              "2006-01-04_2100_US_KABC_Late Talk"]):
        make_broadcast(folder / "media" / f"{name}.mp4", SHOWS, show_name=name.split("_")[-1], variant=i,
                       bad_caption_lines=1)
    return run_pipeline(folder, model_dir, ["probe", "segment", "keyframes"])


@pytest.fixture(scope="session")
def dataset(training_run, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("data set") / "frames"
    run = orchestrate("classifier", "dataset", training_run, out)
    assert run.returncode == 0, run.stdout + run.stderr
    return out, run


@pytest.fixture(scope="session")
def trained(dataset, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """A small CNN trained from scratch on the data set, once per test run."""
    model = tmp_path_factory.mktemp("model") / "classifier"
    run = orchestrate("classifier", "train", dataset[0], "--out", model, "--epochs", "25", "--patience", "6")
    assert run.returncode == 0, run.stdout + run.stderr
    return model, run


def test_the_data_set_comes_from_the_captions_alone(dataset, training_run, tmp_path):
    out, run = dataset
    counts = {name: len(list((out / name).iterdir())) for name in ("title_sequence", "commercial", "unlabelled")}
    # 3 recordings, each: 3 commercial spans; 2 story starts, at the titles, the first show's credits
    # ending 3 s before the second story start (within 20 s: title_sequence too); the last credits, unlabelled
    assert counts == {"title_sequence": 3 * 3 * FRAMES, "commercial": 3 * 3 * FRAMES, "unlabelled": 3 * FRAMES}
    report = json.loads((out / "dataset.json").read_text())
    assert report["frames"] == {"captions .txt3": {"title_sequence": 72, "commercial": 72, "unlabelled": 24}}
    assert report["bad_caption_lines"] == 3 and ":" in report["bad_caption_examples"][0]
    assert "3 caption line(s) could not be parsed" in run.stdout
    name = sorted((out / "title_sequence").iterdir())[0].name
    assert re.fullmatch(r"2006-01-02_0000_US_KTV_Morning News-[0-9a-f]{10}_00h00m0\d\.\d{3}s\.jpg", name), name
    # a frame moved by hand to another class folder is not exported again
    out = shutil.copytree(out, tmp_path / "copy")
    moved = sorted((out / "unlabelled").iterdir())[0]
    moved.rename(out / "title_sequence" / moved.name)
    again = orchestrate("classifier", "dataset", training_run, out)
    assert again.returncode == 0, again.stderr
    assert len(list((out / "unlabelled").iterdir())) == counts["unlabelled"] - 1
    assert json.loads((out / "dataset.json").read_text())["already_there"] == sum(counts.values())


def test_training_reaches_held_out_accuracy(trained):
    model, run = trained
    metrics = json.loads((model / METRICS_FILE).read_text())
    info = json.loads((model / MODEL_INFO).read_text())
    assert metrics["accuracy"] >= 0.9, metrics
    assert sorted(info["classes"]) == ["commercial", "title_sequence"] and info["input_size"] == [96, 96]
    assert info["data"]["split"]["test"] == metrics["n"] > 0
    assert info["training"]["seconds"] <= 120, info["training"]
    assert (model / MODEL_FILE).is_file()
    assert "precision" in run.stdout and "confusion matrix" in run.stdout


def test_evaluate_prints_the_same_report(trained, dataset):
    model, _ = trained
    run = orchestrate("classifier", "evaluate", model, dataset[0], "--json")
    assert run.returncode == 0, run.stderr
    metrics = json.loads(run.stdout)
    assert metrics["n"] == 72 + 72 and metrics["accuracy"] >= 0.9
    assert set(metrics["per_class"]) == {"commercial", "title_sequence"}


def test_commercials_are_filtered_and_title_sequences_kept_on_new_recordings(trained, model_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("new recordings")
    (folder / "media").mkdir()
    plan = [("speech", 6), ("commercial", 8), ("speech", 6), ("title", 8), ("speech", 6), ("commercial", 8),
            ("speech", 6), ("credits", 7)]
    b = make_broadcast(folder / "media" / "2007-05-06_1200_US_KNEW_Noon Report.mp4", plan, show_name="Noon Report",
                       variant=3, captions=False)
    run_pipeline(folder, model_dir, ["probe", "segment", "keyframes", "classify"],
                 {"classify": {"model_dir": str(trained[0])}})
    out = folder / "work" / "outputs" / output_name(str(b.path))
    with open(out / CLASSIFIED_CSV, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == CLASSIFIED_HEADER
    truth = {kind: [(s, e) for k, s, e in b.sections if k == kind] for kind in ("commercial", "title", "credits")}

    def kind_of(row) -> str:
        mid = (float(row["start"]) + float(row["stop"])) / 2
        return next(k for k, spans in truth.items() for s, e in spans if s <= mid <= e)

    assert sorted(kind_of(r) for r in rows) == ["commercial", "commercial", "credits", "title"]
    for row in rows:
        want_filtered = kind_of(row) == "commercial"
        assert row["filtered"] == str(want_filtered).lower(), rows
        assert row["label"] == ("commercial" if want_filtered else "title_sequence"), rows
    doc = json.loads((out / CLASSIFIED_JSON).read_text())
    assert doc["title_class"] == "title_sequence" and doc["threshold"] == 0.5
    assert len(doc["model"]["sha256"]) == 64 and len(doc["segments"]) == 4
    assert all(len(s["keyframes"]) == FRAMES and set(s["keyframes"][0]["scores"]) == set(doc["classes"])
               for s in doc["segments"])
    ends = [r for r in journal_records(folder / "work") if r["kind"] == "file_end"]
    assert ends[0]["facts"]["filtered"] == 2 and ends[0]["facts"]["kept"] == 2


# --- the model checked at worker start ---------------------------------------------------------


def test_a_bad_model_stops_the_worker_before_any_file(trained, tmp_path, make_clips):
    """A corrupt model file (through the local executor: the task ends with the message, its file
    untouched), and classes other than the settings' (the stage's setup)."""
    from tvseg.errors import ModelError
    from worker.stages.classify import ClassifyStage, Settings

    broken = shutil.copytree(trained[0], tmp_path / "broken model")
    data = (broken / MODEL_FILE).read_bytes()
    (broken / MODEL_FILE).write_bytes(data[: len(data) // 2])
    make_clips(tmp_path / "media", 1)
    jobs = write_jobs(tmp_path, worker={"stages": ["probe", "classify"], "heartbeat_seconds": 1},
                      stage_settings={"classify": {"model_dir": str(broken)}})
    run = orchestrate("submit", jobs, "--wait")
    assert run.returncode == 3, run.stdout + run.stderr
    records = journal_records(tmp_path / "work")
    assert [r["kind"] for r in records] == ["task_start", "task_end"]  # no file taken
    assert records[-1]["reason"] == "error"
    assert records[-1]["detail"].startswith(f"ModelError: classifier model unreadable: {broken / MODEL_FILE} is corrupt")
    snap = json.loads(orchestrate("status", jobs, "--json").stdout)
    assert snap["files"]["pending"] == 1
    assert "classifier model unreadable" in snap["shard_progress"][0]["end_reason"]

    with pytest.raises(ModelError, match="classifier classes mismatch: .* has (title_sequence, commercial|"
                                         "commercial, title_sequence); the settings .* expect title_sequence, bumper"):
        ClassifyStage(Settings(model_dir=str(trained[0]), classes="title_sequence,bumper")).setup()
    with pytest.raises(ModelError, match="classifier model missing: no .*classifier.json"):
        ClassifyStage(Settings(model_dir=str(tmp_path))).setup()


# --- a pretrained backbone from a local file only; training as one job --------------------------

NO_NETWORK = {name: "http://127.0.0.1:9" for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")}


def guarded_env(keras_home: Path) -> dict[str, str]:
    """Every download through a proxy that refuses at once (port 9, loopback), and an empty Keras
    cache: an attempt to fetch weights fails fast instead of hanging or finding a cached file."""
    keras_home.mkdir(exist_ok=True)
    return {**os.environ, **NO_NETWORK, "no_proxy": "", "NO_PROXY": "", "KERAS_HOME": str(keras_home)}


BACKBONE_WEIGHTS = """
import sys, keras
keras.applications.MobileNetV3Small(input_shape=(96, 96, 3), include_top=False, weights=None).save_weights(sys.argv[1])
try:  # the guard works: asking Keras for the ImageNet weights fails at once, it does not hang
    keras.applications.MobileNetV3Small(input_shape=(96, 96, 3), include_top=False, weights="imagenet")
except Exception as exc:
    print("refused:", exc)
"""


@pytest.mark.slow
def test_a_backbone_trains_from_a_local_weights_file_and_nothing_downloads(dataset, tmp_path):
    env = guarded_env(tmp_path / "keras home")
    weights = tmp_path / "mobilenet v3 small no top.weights.h5"
    made = subprocess.run([sys.executable, "-c", BACKBONE_WEIGHTS, str(weights)], capture_output=True, text=True,
                          env=guarded_env(tmp_path / "other keras home"), timeout=180)
    assert made.returncode == 0, made.stderr[-2000:]
    assert "refused: URL fetch failure" in made.stdout, made.stdout + made.stderr[-2000:]
    model = tmp_path / "backbone model"
    run = subprocess.run([str(Path(sys.executable).with_name("orchestrate")), "classifier", "train", str(dataset[0]),
                          "--out", str(model), "--backbone-weights", str(weights), "--epochs", "1"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    info = json.loads((model / MODEL_INFO).read_text())
    assert info["settings"]["backbone"] == "mobilenet_v3_small" and info["settings"]["backbone_weights"] == str(weights)
    fetched = [p for p in (tmp_path / "keras home").rglob("*") if p.is_file() and p.name != "keras.json"]
    assert fetched == []  # nothing fetched into the cache (Keras writes its keras.json config there)
    refused = orchestrate("classifier", "train", dataset[0], "--out", tmp_path / "m2", "--backbone", "efficientnet_b0")
    assert refused.returncode == 2 and "needs a local weights file (--backbone-weights FILE)" in refused.stderr


@pytest.mark.slow
def test_train_submit_runs_one_job_through_the_executor(dataset, tmp_path):
    jobs = write_jobs(tmp_path, worker={"stages": ["probe"], "heartbeat_seconds": 1})
    model = tmp_path / "submitted model"
    run = orchestrate("classifier", "train", dataset[0], "--out", model, "--submit", jobs, "--epochs", "3")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "training submitted as one local job" in run.stdout and "confusion matrix" in run.stdout
    assert "epoch 3/3: " in run.stdout and "val_loss=" in run.stdout  # the progress followed, to the last epoch
    metrics = json.loads((model / METRICS_FILE).read_text())
    assert metrics["n"] > 0 and (model / MODEL_FILE).is_file()
    ends = [r for r in journal_records(model / "run") if r["kind"] == "file_end"]
    assert [e["state"] for e in ends] == ["done"] and ends[0]["facts"]["accuracy"] == metrics["accuracy"]
    empty = tmp_path / "empty data"
    (empty / "title_sequence").mkdir(parents=True)
    failed = orchestrate("classifier", "train", empty, "--out", tmp_path / "m3", "--submit", jobs)
    assert failed.returncode == 2, failed.stdout + failed.stderr
    assert "the training job did not finish" in failed.stderr and "no labelled images" in failed.stderr


def test_the_readme_flow_classifies_finished_segment_outputs(training_run, trained, tmp_path):
    """README: a second job over the same recordings, taking the finished run's segments
    (keyframes.segments_from), with keyframes and classify: no segmenter runs again."""
    media = training_run.parent / "media"
    jobs = write_jobs(tmp_path, name="classify", workdir="work-classified", inputs=[f"{media}/*.mp4"],
                      worker={"stages": ["probe", "keyframes", "classify"], "heartbeat_seconds": 1},
                      stage_settings={"keyframes": {"segments_from": str(training_run.parent / "work"),
                                                    "frames": FRAMES},
                                      "classify": {"model_dir": str(trained[0]), "classes": "title_sequence,commercial",
                                                   "threshold": 0.5}})
    run = orchestrate("submit", jobs, "--wait")
    assert run.returncode == 0, run.stdout + run.stderr
    ends = [r for r in journal_records(tmp_path / "work-classified") if r["kind"] == "file_end"]
    assert len(ends) == 3 and all("segment" not in e["seconds"] for e in ends)
    for end in ends:  # each recording: its 3 commercials filtered; its 2 titles and 2 credits kept
        assert (end["facts"]["filtered"], end["facts"]["kept"]) == (3, 4), end


# --- show boundaries after classify (the boundaries stage) ------------------------------------


@pytest.mark.slow
def test_show_boundaries_after_classify(trained, model_dir, tmp_path_factory):
    """The whole chain on a new captioned broadcast with three shows: at least 90 % of the true
    starts and ends found within 2 s and 90 % of those reported true; no commercial reported."""
    from datetime import timedelta, timezone
    from urllib.parse import quote

    from tests.redhen_reader import read_seg, utc
    from tests.show_truth import PLAN, SETTINGS, TOLERANCE_S, score, truth_boundaries
    from worker.stages import FileContext, StageResult
    from worker.stages.boundaries import BoundariesStage, Settings

    folder = tmp_path_factory.mktemp("boundaries run")
    (folder / "media").mkdir()
    b = make_broadcast(folder / "media" / "2006-01-02_0000_US_KTTV_Evening News.mp4", PLAN, show_name="Evening News",
                       variant=3)
    truth = truth_boundaries(b)
    jobs = run_pipeline(folder, model_dir, ["probe", "segment", "keyframes", "classify", "boundaries"],
                        {"classify": {"model_dir": str(trained[0])}, "boundaries": SETTINGS})
    out = folder / "work" / "outputs" / output_name(str(b.path))
    doc = json.loads((out / "boundaries.json").read_text())
    assert doc["from_classify"] and doc["basis"].startswith("classify")
    found = [(x["type"], x["time"]) for x in doc["boundaries"]]
    recall, precision = score(found, truth)
    assert recall >= 0.9 and precision >= 0.9, (found, truth)
    for s, e in b.commercials:
        assert not any(s - TOLERANCE_S < t < e + TOLERANCE_S for _, t in found), ((s, e), found)
    starts = [x for x in doc["boundaries"] if x["type"] == "start"]
    assert all(x["evidence"]["title_sequence"]["keyframe"]["score"] >= 0.5 for x in starts)

    # The .seg file: the caption file's header, UTC times from its TOP line, classes of the music.
    seg = read_seg((out / f"{b.path.stem}.seg").read_text())
    assert seg.head("TOP") == f"20060102000000|{b.path.stem}"
    t0 = b.start.replace(tzinfo=timezone.utc)
    shows = [(r.fields["Type"], utc(r.start)) for r in seg.rows if r.fields["Type"].startswith("Show")]
    assert shows == [("Show start" if k == "start" else "Show end", t0 + timedelta(milliseconds=round(t * 1000)))
                     for k, t in found]
    music = [r for r in seg.rows if r.fields["Type"] == "Music"]
    assert {r.fields["Kept"] for r in music} == {"yes", "no"}
    assert (out / "timeline.png").stat().st_size > 10_000

    report = orchestrate("report", jobs)
    assert report.returncode == 0, report.stderr
    page = (folder / "work" / "report.html").read_text(encoding="utf-8")
    assert f'href="{quote(f"outputs/{out.name}/timeline.png")}"' in page

    # Shows as short as 30 s allowed, on the same outputs: from music alone (as without classify)
    # every boundary is still found but the commercials' jingles become shows; after classify, not.
    loose = Settings(**{**SETTINGS, "min_show_s": 30}, timeline=False)
    for with_classify in (False, True):
        results = {"segment": StageResult((), {"duration_s": b.duration})}
        if with_classify:
            results["classify"] = StageResult((), {})
        BoundariesStage(loose).process(FileContext(1, str(b.path), b.path, out, results))
        doc = json.loads((out / "boundaries.json").read_text())
        assert doc["from_classify"] == with_classify
        recall, precision = score([(x["type"], x["time"]) for x in doc["boundaries"]], truth)
        assert recall >= 0.9 and (precision >= 0.9) == with_classify, (with_classify, doc["boundaries"])
