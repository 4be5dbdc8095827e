"""The segment stage on generated media with known truth, with the real segmenter."""

from __future__ import annotations

import csv
import hashlib
import json
import multiprocessing
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from tests.media import assert_same_segmentation, make_program
from tvseg.errors import BadInput, ModelError
from worker.models import EXPECTED, NETS, load_nets, load_segmenter
from worker.segmentation import (MIN_SAMPLES, SR, ChunkedSegmenter, Net, _Blocks, _decode_blocks, _FrameStore, _patches,
                                 _predict, _prefetch, frame_features)
from worker.stages import FileContext
from worker.stages.segment import SegmentStage, Settings

REPO = Path(__file__).resolve().parents[2]
SMALL = dict(chunk_seconds=20.0, context_seconds=5.0)  # 60 s programme: 3 chunks, music across a border


def _stage(model_dir: Path, **options) -> SegmentStage:
    stage = SegmentStage(Settings(model_dir=str(model_dir), **options))
    stage.setup()
    return stage


def _ctx(staged: Path, out: Path, source: str = "archive/émission 1.mp4") -> FileContext:
    out.mkdir(parents=True, exist_ok=True)
    return FileContext(file_id=1, source=source, staged=staged, output_dir=out, results={})


def _segments(out: Path) -> list[tuple[str, float, float]]:
    with open(out / "segments.csv", newline="") as fh:
        return [(row["labels"], float(row["start"]), float(row["stop"])) for row in csv.DictReader(fh)]


def _label_at(segments, times):
    labels = np.full(len(times), "", dtype=object)
    for label, start, stop in segments:
        labels[(times >= start) & (times < stop)] = label
    return labels


def label_f1(segments, truth, label: str, collar: float = 1.0, step: float = 0.01) -> float:
    """Frame F1 of ``label``, ignoring ``collar`` seconds either side of each truth boundary."""
    times = np.arange(0, truth[-1][2], step)
    keep = np.ones(len(times), bool)
    for _, start, stop in truth:
        for edge in (start, stop):
            keep &= np.abs(times - edge) > collar
    pred = _label_at(segments, times[keep]) == label
    true = _label_at(truth, times[keep]) == label
    tp = np.sum(pred & true)
    return 2 * tp / (2 * tp + np.sum(pred & ~true) + np.sum(~pred & true))


# --- features and the background thread (no network model) -------------------------


@pytest.mark.parametrize("piece_seconds", [0.7, 3.3, 20.0])
def test_features_in_pieces_equal_the_whole(piece_seconds):
    from inaSpeechSegmenter.sidekit_mfcc import mfcc

    rng = np.random.default_rng(0)
    sig = (rng.standard_normal(int(41.37 * SR)) * np.repeat(rng.random(42), SR)[: int(41.37 * SR)]).astype(np.float32)
    sig[5 * SR: 7 * SR] = 0  # digital silence: -inf
    with np.errstate(divide="ignore"):
        _, loge, _, mspec = mfcc(sig, get_mspec=True)

    blocks, step = _Blocks(), int(piece_seconds * SR)
    pieces = [blocks.push(sig[i: i + step], i + step >= len(sig)) for i in range(0, len(sig), step)]
    features = [frame_features(block) for block in pieces if block is not None]
    # float32 sums of 400 squares per frame: their rounding may depend on the array's layout;
    # the mel filter bank is a BLAS product: its rounding depends on the block size (1e-6)
    np.testing.assert_allclose(np.concatenate([f[0] for f in features]), loge, rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.concatenate([f[1] for f in features]), mspec, rtol=0, atol=1e-5)


def _store_of(folder: Path, sig: np.ndarray) -> _FrameStore:
    folder.mkdir(parents=True, exist_ok=True)
    store = _FrameStore(folder)
    store.append(*frame_features(sig))
    return store


@pytest.mark.parametrize("seconds", [1.6, 7.31])  # an odd and an even number of 10 ms frames
def test_patches_of_any_range_equal_the_packages_over_the_whole_file(tmp_path, seconds):
    from inaSpeechSegmenter.segmenter import _get_patches

    rng = np.random.default_rng(1)
    sig = (rng.standard_normal(int(seconds * SR)) * 0.1).astype(np.float32)
    sig[int(0.9 * SR): int(1.0 * SR)] = 0  # digital silence: non-finite patches
    with _store_of(tmp_path, sig) as store:
        for nmel in (21, 24):
            want, want_finite = _get_patches(store.read_mspec(0, store.frames)[:, :nmel].copy(), 68, 2)
            assert len(want) == (store.frames + 1) // 2
            for lo, hi in [(0, len(want)), (0, 5), (3, 40), (len(want) - 20, len(want)), (17, 18)]:
                got, got_finite = _patches(store, nmel, lo, hi)
                assert np.array_equal(got_finite, want_finite[lo:hi]), (nmel, lo, hi)
                assert 0 < np.count_nonzero(~want_finite) < len(want)
                np.testing.assert_allclose(got[got_finite], want[lo:hi][got_finite], rtol=0, atol=1e-6)


def _counting(net: Net, seen: list) -> Net:
    """``net`` whose real predictions also record how many patches each call asked for."""
    def predict(batch):
        seen.append(len(batch))
        return net.predict(batch)

    return replace(net, predict=predict)


def test_predict_gives_no_opinion_on_non_finite_patches_without_running_the_network():
    seen = []

    def predict(x):
        seen.append(x[:, 0, 0, 0].tolist())
        return np.stack([x[:, 0, 0, 0], -x[:, 0, 0, 0]], axis=1)

    net = Net(outlabels=("a", "b"), inlabel="energy", nmel=21, viterbi_arg=80, model_fname="x", batch_size=2,
              predict=predict)
    data = np.arange(6, dtype=np.float32).reshape(6, 1, 1) * np.ones((6, 68, 21), np.float32)
    finite = np.array([True, False, True, True, False, True])
    pred = _predict(net, data, finite)
    assert seen == [[0.0, 2.0], [3.0, 5.0]]
    assert pred.tolist() == [[0, 0], [0.5, 0.5], [2, -2], [3, -3], [0.5, 0.5], [5, -5]]
    assert pred.dtype == np.float32


@pytest.mark.parametrize("vad_engine, detect_gender", [("smn", False), ("sm", True)])
def test_onnx_outputs_are_tensorflows_on_every_test_clip(model_dir, program, quiet_program, tmp_path,
                                                        vad_engine, detect_gender):
    """The converted networks give TensorFlow's outputs within 1e-5 (1.8e-7 seen): float32 kernels
    that sum in another order; the decisions are held equal by the segmentation tests."""
    tf_nets, _ = load_nets(model_dir, vad_engine, detect_gender, 256, "tensorflow")
    onnx_nets, files = load_nets(model_dir, vad_engine, detect_gender, 256, "onnx")
    assert sorted(files) == sorted([n.model_fname for n in tf_nets] + [n.model_fname[:-5] + ".onnx" for n in tf_nets])
    for i, (path, _) in enumerate([program, quiet_program]):
        samples = np.concatenate([block for _, block in _decode_blocks(path, "p", 100.0)])
        with _store_of(tmp_path / str(i), samples) as store:
            for tf_net, onnx_net in zip(tf_nets, onnx_nets):
                data, finite = _patches(store, tf_net.nmel, 0, (store.frames + 1) // 2)
                want = _predict(tf_net, data, finite)
                np.testing.assert_allclose(_predict(onnx_net, data, finite), want, rtol=0, atol=1e-5)


def test_predict_equals_keras_predict_on_the_finite_patches(model_dir, program, tmp_path):
    path, _ = program
    (net,), _ = load_nets(model_dir, "smn", False, 64)
    samples = np.concatenate([block for _, block in _decode_blocks(path, "p.mp4", 100.0)])  # one block
    with _store_of(tmp_path, samples) as store:
        data, finite = _patches(store, net.nmel, 0, (store.frames + 1) // 2)
    assert 0 < np.count_nonzero(~finite) < len(finite)  # the programme's silence
    pred = _predict(net, data, finite)
    assert np.all(pred[~finite] == 0.5)
    # Not bit-equal: a batch's composition changes the order of the kernels' float32 sums (6e-8 apart
    # in 2 rows of 2084 seen on an AMD EPYC).  Outputs are probabilities in [0, 1]; 1e-6 allows
    # ~10 such roundings and is far below what moves a decision (the segmentation tests hold those).
    want = load_segmenter(model_dir, detect_gender=False).vad.nn.predict(data[finite][..., np.newaxis], batch_size=64,
                                                                        verbose=0)
    np.testing.assert_allclose(pred[finite], want, rtol=0, atol=1e-6)


def test_prefetch_runs_ahead_by_a_bounded_amount_and_passes_errors():
    made = []

    def items():
        for i in range(6):
            made.append(i)
            yield i
        raise BadInput("x: broken at the end")

    it = _prefetch(items(), depth=1)
    assert next(it) == 0
    time.sleep(0.3)
    assert made == [0, 1, 2]  # one queued, one waiting to be queued
    with pytest.raises(BadInput, match="^x: broken at the end$"):
        list(it)


def test_prefetch_closes_the_producer_when_the_consumer_stops():
    closed = threading.Event()

    def items():
        try:
            while True:
                yield 1
        finally:
            closed.set()

    it = _prefetch(items())
    next(it)
    it.close()
    assert closed.is_set()


LOGIN_NODE = """
import importlib, sys
for name in ("numpy", "tensorflow", "keras", "inaSpeechSegmenter", "onnxruntime", "onnx", "tf2onnx"):
    sys.modules[name] = None  # not installed on a login node: importing it raises ImportError
module = importlib.import_module("worker.stages.segment")
import dataclasses
from worker.stages import stage_class
assert stage_class("segment") is module.SegmentStage
print(module.Settings(model_dir="/models", vad_engine="sm", detect_gender=True, chunk_seconds=30))
print(" ".join(f.name for f in dataclasses.fields(stage_class("segment").Settings)))
"""


def test_stage_module_and_settings_load_without_numpy_or_tensorflow():
    """The orchestrator's path on a login node: load the stage class and check its Settings."""
    done = subprocess.run([sys.executable, "-c", LOGIN_NODE], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "Settings(model_dir='/models', vad_engine='sm', detect_gender=True, batch_size=256, chunk_seconds=30, "
        "context_seconds=30.0, energy_ratio=0.03, features=False, backend='auto', feature_workers=1)",
        "model_dir vad_engine detect_gender batch_size chunk_seconds context_seconds energy_ratio features backend "
        "feature_workers",
    ]


def test_settings_are_checked():
    with pytest.raises(ValueError, match=r"^vad_engine must be 'sm' or 'smn', not 'x'$"):
        Settings(vad_engine="x")
    with pytest.raises(ValueError, match=r"^chunk_seconds must be at least 10, not 5$"):
        Settings(chunk_seconds=5)
    with pytest.raises(ValueError, match=r"^backend must be 'auto', 'tensorflow' or 'onnx', not 'torch'$"):
        Settings(backend="torch")
    with pytest.raises(ValueError, match=r"^feature_workers must be at least 1, not 0$"):
        Settings(feature_workers=0)


# --- models ---------------------------------------------------------------------------


def test_setup_without_model_dir_says_how_to_fix(tmp_path):
    missing = tmp_path / "models"
    with pytest.raises(ModelError) as err:
        SegmentStage(Settings(model_dir=str(missing))).setup()
    assert str(err.value) == f"model directory {missing} does not exist; fix: orchestrate models fetch --dir {missing}"


def test_setup_with_a_truncated_weight_file_says_how_to_fix(model_dir, tmp_path):
    models = tmp_path / "models"
    shutil.copytree(model_dir, models)
    victim = models / "keras_speech_music_noise_cnn.hdf5"
    victim.write_bytes(victim.read_bytes()[:100_000])
    digest = hashlib.sha256(victim.read_bytes()).hexdigest()
    with pytest.raises(ModelError) as err:
        SegmentStage(Settings(model_dir=str(models))).setup()
    assert str(err.value) == (
        f"model directory {models}: keras_speech_music_noise_cnn.hdf5 has sha256 {digest}, "
        f"expected {EXPECTED['keras_speech_music_noise_cnn.hdf5']}; fix: orchestrate models fetch --dir {models}")


def test_the_network_table_is_the_packages():
    from inaSpeechSegmenter.segmenter import Gender, SpeechMusic, SpeechMusicNoise

    for key, cls in {"smn": SpeechMusicNoise, "sm": SpeechMusic, "gender": Gender}.items():
        assert NETS[key] == {name: getattr(cls, name) for name in NETS[key]}, key


# --- segmentation -----------------------------------------------------------------------


def test_music_across_a_chunk_border_is_found(model_dir, program, tmp_path):
    path, truth = program
    stage = _stage(model_dir, **SMALL)
    result = stage.process(_ctx(path, tmp_path / "out"))
    segments = _segments(tmp_path / "out")
    assert label_f1(segments, truth, "music") >= 0.95
    assert [s[0] for s in segments] == [s[0] for s in truth]
    assert result.outputs == ("segments.csv", "segments.json", "provenance.json")
    assert result.facts["duration_s"] == pytest.approx(60, abs=0.05)
    assert result.facts["music_s"] == pytest.approx(15, abs=1)


@pytest.mark.parametrize("backend", ["tensorflow", "onnx"])
@pytest.mark.parametrize("options", [dict(vad_engine="smn", detect_gender=False),
                                     dict(vad_engine="sm", detect_gender=True)])
def test_chunked_equals_the_package_on_the_whole_file(model_dir, program, options, backend):
    path, _ = program
    segmenter = load_segmenter(model_dir, **options)
    nets, _ = load_nets(model_dir, options["vad_engine"], options["detect_gender"], 256, backend)
    segments, seconds, chunks = ChunkedSegmenter(nets, 0.03, **SMALL).segment(path, "p.mp4")
    assert_same_segmentation(segments, segmenter(str(path)))
    assert (round(seconds, 3), chunks) == (60.0, 4)


def test_features_in_two_processes_give_the_packages_segments(model_dir, quiet_program, tmp_path):
    path, _ = quiet_program
    nets, _ = load_nets(model_dir, "smn", False, 256, "onnx")
    segmenter = ChunkedSegmenter(nets, 0.03, 10.0, 5.0, feature_workers=2)  # 5 chunks: both processes busy
    try:
        segments, seconds, chunks = segmenter.segment(path, "q.m4a", tmp_path / "two.npz")
        assert len(multiprocessing.active_children()) == 2  # the feature processes, spawned
    finally:
        segmenter.close()
    assert not multiprocessing.active_children()
    assert seconds == pytest.approx(40, abs=0.05) and chunks == 5  # the m4a ends with a partial AAC frame
    assert_same_segmentation(segments, load_segmenter(model_dir, detect_gender=False)(str(path)))
    one = ChunkedSegmenter(nets, 0.03, 10.0, 5.0)
    one.segment(path, "q.m4a", tmp_path / "one.npz")
    with np.load(tmp_path / "one.npz") as a, np.load(tmp_path / "two.npz") as b:
        assert all(np.array_equal(a[k], b[k]) for k in a.files)  # the same blocks, the same features


def test_the_network_predicts_only_the_frames_the_package_predicts(model_dir, quiet_program):
    """Low-level (not digital) silence has finite features: the package predicts none of its
    frames (they fall below its energy threshold), and neither does the stage."""
    from inaSpeechSegmenter.segmenter import _energy_activity, _get_patches, _media2feats

    path, _ = quiet_program
    mspec, loge, _ = _media2feats(str(path), None, None, "ffmpeg")
    energy = _energy_activity(loge, 0.03)[::2].astype(bool)
    _, finite = _get_patches(mspec[:, :21].copy(), 68, 2)
    quiet = np.count_nonzero(~energy & finite)
    assert quiet > 5 / 0.02  # the quiet sections: finite, below the threshold
    seen = []
    (net,), _ = load_nets(model_dir, "smn", False, 1)  # batches of one: no padding to count
    segmenter = ChunkedSegmenter([_counting(net, seen)], 0.03, **SMALL)
    segments, _, _ = segmenter.segment(path, "q.mp4")
    want = np.count_nonzero(energy & finite)
    assert sum(seen) == want
    assert_same_segmentation(segments, load_segmenter(model_dir, detect_gender=False)(str(path)))


def test_outputs_and_cache(model_dir, program, tmp_path):
    path, _ = program
    out = tmp_path / "out"
    stage = _stage(model_dir, **SMALL)
    first = stage.process(_ctx(path, out))
    lines = (out / "segments.csv").read_text().splitlines()
    assert lines[0] == "labels,start,stop"
    rows = [line.split(",") for line in lines[1:]]
    assert all(re.fullmatch(r"(speech|music|noise|noEnergy),\d+\.\d\d,\d+\.\d\d", line) for line in lines[1:]), lines
    assert rows[0][1] == "0.00" and all(prev[2] == row[1] for prev, row in zip(rows, rows[1:]))
    summary = json.loads((out / "segments.json").read_text())
    assert summary["chunks"] == 4  # three full chunks and the end of the stream
    assert summary["speech_s"] + summary["music_s"] + summary["noise_s"] + summary["silence_s"] == pytest.approx(60, abs=0.05)
    provenance = json.loads((out / "provenance.json").read_text())
    onnx = json.loads((model_dir / "onnx.json").read_text())["keras_speech_music_noise_cnn.onnx"]["sha256"]
    assert provenance["backend"] == "onnx"  # auto: onnxruntime is installed (scripts/install-worker --cpu)
    assert provenance["models"] == {"keras_speech_music_noise_cnn.hdf5": EXPECTED["keras_speech_music_noise_cnn.hdf5"],
                                    "keras_speech_music_noise_cnn.onnx": onnx}
    assert provenance["settings"]["chunk_seconds"] == 20.0 and "model_dir" not in provenance["settings"]
    assert set(provenance["packages"]) == {"inaSpeechSegmenter", "onnxruntime", "numpy"}
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}

    gone = tmp_path / "gone.mp4"  # would fail if it were decoded
    assert stage.process(_ctx(gone, out)) == first
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == mtimes

    other = SegmentStage(replace(stage.settings, context_seconds=6.0))
    other.setup()
    with pytest.raises(BadInput):
        other.process(_ctx(gone, out))


def test_stored_features_are_the_packages_in_float16(model_dir, program, tmp_path):
    from inaSpeechSegmenter.segmenter import _media2feats

    path, _ = program
    out = tmp_path / "out"
    stage = _stage(model_dir, features=True, **SMALL)
    result = stage.process(_ctx(path, out))
    assert result.outputs == ("segments.csv", "segments.json", "provenance.json", "features.npz")
    mspec, loge, _ = _media2feats(str(path), None, None, "ffmpeg")
    with np.load(out / "features.npz") as npz:
        assert sorted(npz.files) == ["log_energy", "mel", "time_s"]
        mel, energy, times = npz["mel"], npz["log_energy"], npz["time_s"]
    assert (mel.dtype, energy.dtype, times.dtype) == (np.float16, np.float16, np.float64)
    assert mel.shape == mspec.shape == (len(loge), 24) and energy.shape == times.shape == loge.shape
    np.testing.assert_allclose(times, np.arange(len(loge)) * 0.01, rtol=0, atol=1e-9)
    assert np.array_equal(np.isfinite(energy), np.isfinite(loge))  # digital silence stays -inf
    assert np.all(energy[~np.isfinite(loge)] == -np.inf)
    # float16 keeps 11 significant bits: 4.9e-4 relative, plus the features' own 1e-5 (see above)
    finite = np.isfinite(mspec)
    np.testing.assert_allclose(mel[finite], mspec[finite], rtol=4.9e-4, atol=1e-5)
    np.testing.assert_allclose(energy[np.isfinite(loge)], loge[np.isfinite(loge)], rtol=4.9e-4, atol=1e-5)
    assert not list(out.glob(".*"))  # no temp file left

    (out / "features.npz").unlink()  # an incomplete earlier run: done again
    assert stage.process(_ctx(path, out)) == result
    assert (out / "features.npz").is_file()


def test_corrupt_mp4_is_bad_input(model_dir, program, tmp_path):
    path, _ = program
    broken = tmp_path / "cut short.mp4"
    broken.write_bytes(path.read_bytes()[:30_000])  # the moov atom is at the end
    stage = _stage(model_dir, **SMALL)
    with pytest.raises(BadInput) as err:
        stage.process(_ctx(broken, tmp_path / "out", source="archive/cut short.mp4"))
    assert re.fullmatch(r"archive/cut short\.mp4: ffmpeg cannot decode the audio: \[mov,mp4,m4a,3gp,3g2,mj2 @ 0x[0-9a-f]+\] "
                        r"moov atom not found \| input: Invalid data found when processing input",
                        str(err.value)), str(err.value)
    assert not list((tmp_path / "out").iterdir())


def test_no_audio_and_too_short_are_bad_input(model_dir, tmp_path):
    stage = _stage(model_dir, **SMALL)
    silent_video = tmp_path / "video only.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=160x90:duration=1",
                    "-c:v", "libx264", str(silent_video)], check=True)
    with pytest.raises(BadInput) as err:
        stage.process(_ctx(silent_video, tmp_path / "a", source="v.mp4"))
    assert str(err.value) == "v.mp4: ffmpeg cannot decode the audio: Output file #0 does not contain any stream"

    short = tmp_path / "short.wav"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", "sine=duration=0.5", str(short)], check=True)
    with pytest.raises(BadInput) as err:
        stage.process(_ctx(short, tmp_path / "b", source="s.wav"))
    assert str(err.value) == f"s.wav: 0.50 s of audio; the segmenter needs {MIN_SAMPLES / SR:.2f} s"


@pytest.mark.slow
def test_long_programme_with_default_settings(model_dir, media_dir, tmp_path):
    """Four minutes, several music sections across 60 s chunk borders; default settings."""
    path = media_dir / "long programme.mp4"
    sections = [("speech", 50), ("music", 25), ("noise", 10), ("speech", 30), ("music", 40), ("silence", 5),
                ("music", 35), ("speech", 45)]
    truth = make_program(path, sections, video=False)
    stage = _stage(model_dir)
    stage.process(_ctx(path, tmp_path / "out"))
    segments = _segments(tmp_path / "out")
    assert label_f1(segments, truth, "music") >= 0.95
    assert_same_segmentation(segments, load_segmenter(model_dir, detect_gender=False)(str(path)))
