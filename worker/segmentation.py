"""Constant-memory segmentation of one file, with the decisions of inaSpeechSegmenter.

``Segmenter()(path)`` decodes to a temp file and holds the whole signal and its
features: about 1.5 MB of memory a second of audio. ``ChunkedSegmenter`` instead works
in two passes over per-frame data kept in unnamed temp files on scratch (beside the
staged input, about 10 kB a second of audio):

1. **features**: ffmpeg decodes the file once, into a pipe; each ``chunk_seconds`` of
   it becomes the package's own features (``mfcc``: 24 log mel bands and the log energy
   of every 10 ms frame), computed by ``feature_workers`` processes in parallel; a block
   of samples carries the frames a chunk border cuts, so the features equal the whole
   file's. The whole file's mean energy is then known;
2. **decisions**, as the package makes them, level by level: the energy threshold
   splits the file into energy and noEnergy frames (the package's Viterbi pass, over
   windows of ``chunk_seconds`` with ``context_seconds`` of context either side, runs
   joined across windows); the speech/music[/noise] network then predicts only the
   frames of the energy runs, and the gender network only those of the speech runs,
   exactly the frames the package predicts, a chunk at a time while a thread prepares
   the next chunk's inputs. A frame's prediction does not depend on the other frames of
   its batch, so the decisions are the package's.

The network is a ``Net``: its labels and its ``predict`` function, from TensorFlow or
ONNX Runtime (see worker.models). This module imports numpy and the package's numpy-only
modules (``sidekit_mfcc``, ``viterbi_utils``, ``pyannote_viterbi``), loaded without the
package's ``__init__``, which imports TensorFlow: the ONNX backend and the feature
processes never load TensorFlow. Only a worker imports this module, never the
orchestrator.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import os
import queue
import subprocess
import sys
import tempfile
import threading
import zipfile
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterator, TypeVar

import numpy as np

from tvseg.errors import BadInput, RetryableError

SR = 16000  # the package's sample rate
HOP, WIN = 160, 400  # mfcc: a 25 ms frame every 10 ms
MELS = 24  # mel bands of mfcc's mspec
PATCH, STEP = 68, 2  # network input: 68 frames around every other frame (20 ms)
FILL = PATCH // (2 * STEP)  # patches the package repeats before the first window
FRAME_S = 0.02  # one decision frame
MIN_SAMPLES = (PATCH - 1) * HOP + WIN  # shorter audio makes no patch
FEATURES_FILE = "features.npz"

Segment = tuple[str, float, float]  # (label, start s, stop s)
T = TypeVar("T")


@dataclass(frozen=True)
class Net:
    """One of the package's networks: which frames it refines, into which labels, and how."""

    outlabels: tuple[str, ...]  # one per output column
    inlabel: str  # it refines the frames with this label ("energy" or "speech")
    nmel: int  # mel bands of its input
    viterbi_arg: int  # the package's transition cost for its decisions
    model_fname: str  # the package's weight file
    batch_size: int  # patches a call
    predict: Callable[[np.ndarray], np.ndarray]  # (batch_size, 68, nmel, 1) float32 -> (batch_size, labels)


def package_module(name: str) -> ModuleType:
    """``inaSpeechSegmenter.<name>`` (a numpy-only module) without running the package's
    ``__init__``, which imports TensorFlow; loaded once a process."""
    key = f"_tvseg_ina_{name}"
    if key not in sys.modules:
        package = importlib.util.find_spec("inaSpeechSegmenter")  # finds, does not import
        if package is None or not package.submodule_search_locations:
            raise ImportError("inaSpeechSegmenter is not installed (scripts/install-worker)")
        spec = importlib.util.spec_from_file_location(key, Path(package.submodule_search_locations[0]) / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[key] = module
    return sys.modules[key]


def frame_features(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The package's (log energy, log mel bands) of every whole 10 ms frame of ``samples``
    (at least two frames). Run in the feature processes."""
    with np.errstate(divide="ignore"):  # digital silence: log(0) = -inf, as the package
        _, loge, _, mspec = package_module("sidekit_mfcc").mfcc(samples, get_mspec=True)
    return loge.astype(np.float32, copy=False), mspec.astype(np.float32, copy=False)


class ChunkedSegmenter:
    """The decisions of ``Segmenter(...)(path)``, with memory independent of the file's length.

    ``nets`` are the package's networks in its order (speech/music[/noise], then gender);
    ``feature_workers`` processes compute features (1: in this process). ``close()``
    stops them.
    """

    def __init__(self, nets: list[Net], energy_ratio: float, chunk_seconds: float, context_seconds: float,
                 feature_workers: int = 1) -> None:
        self.nets = nets
        self.energy_ratio = energy_ratio
        self.chunk_seconds = chunk_seconds
        self.context_seconds = context_seconds
        self.feature_workers = feature_workers
        self._pool = None
        if feature_workers > 1:  # spawn: never fork a process that runs TensorFlow's threads
            self._pool = ProcessPoolExecutor(feature_workers, mp_context=multiprocessing.get_context("spawn"))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def segment(self, path: Path, source: str, features: Path | None = None) -> tuple[list[Segment], float, int]:
        """Segments, seconds of audio decoded, and chunks read, of the file at ``path``;
        with ``features``, also write the file's features there (see ``write_features``).

        Raises BadInput (naming ``source``) if ffmpeg cannot decode the audio or it is too
        short, and RetryableError if the temp files beside ``path`` (or ffmpeg) fail.
        """
        try:
            with _FrameStore(path.parent) as store:
                seconds, chunks = 0.0, 0
                for chunk_seconds, loge, mspec in self._features(path, source):
                    store.append(loge, mspec)
                    seconds, chunks = seconds + chunk_seconds, chunks + 1
                if features is not None:
                    write_features(features, store)
                return self._decide(store), seconds, chunks
        except OSError as err:  # the temp files on scratch, or ffmpeg missing: the node's fault
            raise RetryableError(f"{source}: {err}") from err

    def _features(self, path: Path, source: str) -> Iterator[tuple[float, np.ndarray, np.ndarray]]:
        """(seconds, log energy, mel bands) a chunk, in order; up to ``feature_workers`` + 1
        chunks in the processes at a time."""
        blocks = _decode_blocks(path, source, self.chunk_seconds)
        if self._pool is None:
            for seconds, samples in blocks:
                yield seconds, *frame_features(samples)
            return
        pending: list[tuple[float, Future]] = []
        try:
            for seconds, samples in blocks:
                pending.append((seconds, self._pool.submit(frame_features, samples)))
                if len(pending) > self.feature_workers:
                    done_seconds, future = pending.pop(0)
                    yield done_seconds, *future.result()
            for done_seconds, future in pending:
                yield done_seconds, *future.result()
        finally:
            for _, future in pending:
                future.cancel()

    def _decide(self, store: _FrameStore) -> list[Segment]:
        """The package's decisions: energy, then each network on the runs of its input label."""
        viterbi_utils = package_module("viterbi_utils")

        window, margin = round(self.chunk_seconds / FRAME_S), round(self.context_seconds / FRAME_S)
        count = store.energy_count  # as the package's _energy_activity, over the whole file
        threshold = store.energy_sum / count + np.log(self.energy_ratio) if count else np.inf
        energy = _viterbi(lambda a, b: viterbi_utils.pred2logemission(store.read_loge(a, b) > threshold),
                          viterbi_utils.log_trans_exp(150, cost0=-5), 0, store.frames, 2 * window, 2 * margin)
        segments = [("energy" if state else "noEnergy", a, b)
                    for state, a, b in _runs((a // 2, states[::2]) for a, states in energy)]
        for net in self.nets:
            with _Predictions(store.folder, len(net.outlabels)) as pred:
                runs = [(a, b) for label, a, b in segments if label == net.inlabel]
                for lo, rows in _prefetch(self._inputs(store, net, runs)):
                    pred.write(lo, _predict(net, *rows))
                transition = viterbi_utils.diag_trans_exp(net.viterbi_arg, len(net.outlabels))
                refined = []
                for label, a, b in segments:
                    if label != net.inlabel:
                        refined.append((label, a, b))
                        continue
                    decisions = _viterbi(lambda c, d: np.log(pred.read(c, d)), transition, a, b, window, margin)
                    refined += [(net.outlabels[int(state)], c, d) for state, c, d in _runs(decisions)]
            segments = refined
        return [(label, a * FRAME_S, b * FRAME_S) for label, a, b in segments]

    def _inputs(self, store: _FrameStore, net: Net, runs: list[tuple[int, int]]
                ) -> Iterator[tuple[int, tuple[np.ndarray, np.ndarray]]]:
        """(first frame, (patches, finite)) of the frames of ``runs``, ``chunk_seconds`` at a time."""
        step = round(self.chunk_seconds / FRAME_S)
        for a, b in runs:
            for lo in range(a, b, step):
                yield lo, _patches(store, net.nmel, lo, min(b, lo + step))


def _patches(store: _FrameStore, nmel: int, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    """The package's network inputs (``_get_patches``) of the 20 ms frames [lo, hi), and
    whether each is finite: frame i is the normalised 68-frame window starting at 10 ms
    frame 2 * (i - 17), clamped to the file (the package repeats the first and last)."""
    windows = (store.frames - PATCH) // STEP + 1
    first, last = min(max(lo - FILL, 0), windows - 1), min(max(hi - 1 - FILL, 0), windows - 1)
    mspec = np.ascontiguousarray(store.read_mspec(STEP * first, STEP * last + PATCH)[:, :nmel])
    view = np.lib.stride_tricks.sliding_window_view(mspec, (PATCH, nmel))[::STEP, 0]
    data = view[np.clip(np.arange(lo, hi) - FILL, 0, windows - 1) - first].reshape(hi - lo, PATCH * nmel)
    with np.errstate(invalid="ignore", divide="ignore"):  # as the package: flagged in `finite`
        data = (data - np.mean(data, axis=1).reshape((len(data), 1))) / np.std(data, axis=1).reshape((len(data), 1))
    finite = np.all(np.isfinite(data), axis=1)
    return data.reshape(hi - lo, PATCH, nmel), finite


def _predict(net: Net, data: np.ndarray, finite: np.ndarray) -> np.ndarray:
    """The network's outputs for the patches ``data``; 0.5 (no opinion) for those not
    ``finite``, as the package sets them after predicting every patch. A patch is not
    finite if any of its 68 frames is digital silence (log 0); a patch's prediction does
    not depend on the others in its batch, so these are not predicted at all.

    A short last batch is padded to the full size: every call then has one input shape,
    so TensorFlow traces the model once, not once per shape (memory that would grow with
    the number of files)."""
    pred = np.full((len(data), len(net.outlabels)), 0.5, np.float32)
    todo = np.flatnonzero(finite)
    for i in range(0, len(todo), net.batch_size):
        rows = todo[i: i + net.batch_size]
        batch = data[np.pad(rows, (0, net.batch_size - len(rows)), mode="edge")]
        pred[rows] = net.predict(np.ascontiguousarray(batch[..., np.newaxis], dtype=np.float32))[: len(rows)]
    return pred


def _decode_blocks(path: Path, source: str, chunk_seconds: float) -> Iterator[tuple[float, np.ndarray]]:
    """Decode ``path`` once with ffmpeg (16 kHz mono, as the package); yield (seconds read,
    samples of whole frames): consecutive blocks overlap by the samples of the frames a
    border cuts, so their frames are the whole signal's."""
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-i", f"file:{path}",
           "-vn", "-ac", "1", "-ar", str(SR), "-f", "s16le", "-acodec", "pcm_s16le", "pipe:1"]
    nbytes = 2 * HOP * round(chunk_seconds * SR / HOP)
    blocks, total = _Blocks(), 0
    with tempfile.TemporaryFile() as err, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err) as proc:
        try:
            while True:
                raw = proc.stdout.read(nbytes)
                total += len(raw) // 2
                last = len(raw) < nbytes
                if last and proc.wait() != 0:
                    err.seek(0)
                    lines = err.read().decode(errors="replace").replace(f"file:{path}", "input").strip().splitlines()
                    tail = " | ".join(lines[-3:])
                    raise BadInput(f"{source}: ffmpeg cannot decode the audio: {tail}")
                if last and total < MIN_SAMPLES:
                    raise BadInput(f"{source}: {total / SR:.2f} s of audio; the segmenter needs {MIN_SAMPLES / SR:.2f} s")
                block = blocks.push(np.frombuffer(raw, "<i2").astype(np.float32) / 32768, last)
                if block is not None:
                    yield len(raw) / 2 / SR, block
                if last:
                    return
        finally:
            proc.kill()


class _Blocks:
    """Cuts a signal arriving in pieces into blocks of whole 10 ms frames whose frames are
    the whole signal's: a block ends with the last whole frame, the next starts with the
    frame after it (they overlap by the 240 samples a frame border cuts)."""

    def __init__(self) -> None:
        self.sig = np.empty(0, np.float32)  # samples of the frames not in a block yet

    def push(self, samples: np.ndarray, last: bool) -> np.ndarray | None:
        """The next block (None if too few samples yet); ``last``: the signal ends here."""
        sig = np.concatenate([self.sig, samples])
        frames = (len(sig) - WIN) // HOP + 1 if len(sig) >= WIN else 0
        if not last:
            frames -= 2  # keep two back: the last block must not be a lone frame (mfcc needs two)
        self.sig = sig
        if frames < 2:
            return None
        self.sig = sig[frames * HOP:].copy()
        return sig[: (frames - 1) * HOP + WIN]


def _prefetch(items: Iterator[T], depth: int = 1) -> Iterator[T]:
    """Iterate ``items`` in a background thread, at most ``depth`` items ahead."""
    box: queue.Queue = queue.Queue(depth)
    stop = threading.Event()

    def put(entry: tuple) -> bool:
        while not stop.is_set():
            try:
                box.put(entry, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def run() -> None:
        try:
            for item in items:
                if not put((True, item)):
                    return
            put((False, None))
        except BaseException as err:  # handed to the consumer, raised there
            put((False, err))
        finally:
            items.close()

    thread = threading.Thread(target=run, name="segment-inputs", daemon=True)
    thread.start()
    try:
        while True:
            more, value = box.get()
            if not more:
                if value is not None:
                    raise value
                return
            yield value
    finally:
        stop.set()
        thread.join()


class _FrameStore:
    """Per-10 ms-frame log energy and mel bands of one file, in temp files in ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.loge = tempfile.TemporaryFile(dir=folder, buffering=0)
        self.mspec = tempfile.TemporaryFile(dir=folder, buffering=0)
        self.energy_sum, self.energy_count, self.frames = 0.0, 0, 0

    def __enter__(self) -> "_FrameStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.loge.close()
        self.mspec.close()

    def append(self, loge: np.ndarray, mspec: np.ndarray) -> None:
        finite = loge[np.isfinite(loge)]
        self.energy_sum += float(finite.sum(dtype=np.float64))
        self.energy_count += len(finite)
        self.frames += len(loge)
        self.loge.write(loge.astype(np.float32).tobytes())
        self.mspec.write(mspec.astype(np.float32).tobytes())

    def read_loge(self, lo: int, hi: int) -> np.ndarray:
        return _pread(self.loge, lo, hi, 1)

    def read_mspec(self, lo: int, hi: int) -> np.ndarray:
        return _pread(self.mspec, lo, hi, MELS)


class _Predictions:
    """A network's outputs for every 20 ms frame of a file (0.5 where not predicted), in a temp file."""

    def __init__(self, folder: Path, columns: int) -> None:
        self.columns = columns
        self.file = tempfile.TemporaryFile(dir=folder, buffering=0)

    def __enter__(self) -> "_Predictions":
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()

    def write(self, lo: int, pred: np.ndarray) -> None:
        os.pwrite(self.file.fileno(), pred.astype(np.float32).tobytes(), 4 * self.columns * lo)

    def read(self, lo: int, hi: int) -> np.ndarray:
        return _pread(self.file, lo, hi, self.columns)


def _pread(file: Any, lo: int, hi: int, columns: int) -> np.ndarray:
    """Rows [lo, hi) of a float32 table of ``columns`` columns in ``file``."""
    row = 4 * columns
    data = np.frombuffer(os.pread(file.fileno(), row * (hi - lo), row * lo), np.float32)
    return data.reshape(hi - lo, columns) if columns > 1 else data


def write_features(dest: Path, store: _FrameStore, rows: int = 360_000) -> None:
    """Write the file's features as ``dest`` (an .npz, atomically): ``mel`` (frames x 24
    log mel bands, float16), ``log_energy`` (frames, float16) and ``time_s`` (each 25 ms
    frame's start in seconds, float64), deflate-compressed, streamed ``rows`` frames at a
    time from the store (memory independent of the file's length)."""
    tmp = dest.with_name(f".{dest.name}.tmp")
    arrays = {"mel": ((store.frames, MELS), "<f2", store.read_mspec),
              "log_energy": ((store.frames,), "<f2", store.read_loge),
              "time_s": ((store.frames,), "<f8", lambda a, b: np.arange(a, b) * (HOP / SR))}
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
            for name, (shape, dtype, read) in arrays.items():
                with zf.open(f"{name}.npy", "w", force_zip64=True) as fh:
                    np.lib.format.write_array_header_1_0(fh, {"descr": dtype, "fortran_order": False, "shape": shape})
                    for lo in range(0, store.frames, rows):
                        fh.write(read(lo, min(store.frames, lo + rows)).astype(dtype).tobytes())
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _viterbi(emission: Callable[[int, int], np.ndarray], transition: np.ndarray,
             lo: int, hi: int, window: int, margin: int) -> Iterator[tuple[int, np.ndarray]]:
    """The package's Viterbi decoding of frames [lo, hi), window by window, each with
    ``margin`` frames of context either side; yields (first frame, states)."""
    viterbi_decoding = package_module("pyannote_viterbi").viterbi_decoding
    for a in range(lo, hi, window):
        b = min(a + window, hi)
        c, d = max(lo, a - margin), min(hi, b + margin)
        yield a, viterbi_decoding(emission(c, d), transition)[a - c: b - c]


def _runs(pieces: Iterator[tuple[int, np.ndarray]]) -> Iterator[tuple[int, int, int]]:
    """(state, start, stop) of each run of one state, joined across consecutive pieces."""
    state = start = stop = None
    for first, states in pieces:
        states = np.asarray(states)
        edges = np.flatnonzero(states[1:] != states[:-1]) + 1
        for a, b in zip(np.r_[0, edges], np.r_[edges, len(states)]):
            s = int(states[a])
            if s != state:
                if state is not None:
                    yield state, start, stop
                state, start = s, first + int(a)
            stop = first + int(b)
    if state is not None:
        yield state, start, stop
