"""Chunked, constant-memory segmentation of one file with a loaded inaSpeechSegmenter.

``Segmenter()(path)`` decodes to a temp file and holds the whole signal and its
features: about 1.5 MB of memory a second of audio. ``ChunkedSegmenter`` instead:

- ffmpeg decodes the file once, into a pipe; a background thread turns each
  ``chunk_seconds`` of it into the package's own features (``mfcc``, ``_get_patches``),
  carrying over the frames a chunk border cuts, so they equal the whole file's;
- the network predicts a chunk while the thread prepares the next (a queue of one);
- per-frame log energy and predictions (about 1 kB a second) go to unnamed temp
  files beside the input;
- the decisions need the whole file's mean energy, so they come last: the package's
  Viterbi passes run over windows of ``chunk_seconds`` with ``context_seconds`` of
  context either side, and runs of a label are joined across windows.

The network sees every frame with finite features, not only the energetic ones the
package picks (the energy threshold is known only at the end); a frame's prediction
does not depend on the other frames of its batch, so the decisions are the package's.

This module imports numpy (and inaSpeechSegmenter inside its functions): only a
worker imports it, never the orchestrator.
"""

from __future__ import annotations

import os
import queue
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import numpy as np

from tvseg.errors import BadInput, RetryableError

SR = 16000  # the package's sample rate
HOP, WIN = 160, 400  # mfcc: a 25 ms frame every 10 ms
PATCH, STEP = 68, 2  # network input: 68 frames around every other frame (20 ms)
FILL = PATCH // (2 * STEP)  # patches _get_patches repeats before the first window
FRAME_S = 0.02  # one decision frame
MIN_SAMPLES = (PATCH - 1) * HOP + WIN  # shorter audio makes no patch

Segment = tuple[str, float, float]  # (label, start s, stop s)
T = TypeVar("T")


class ChunkedSegmenter:
    """The decisions of ``segmenter(path)``, made ``chunk_seconds`` of audio at a time.

    ``segmenter`` is a loaded ``inaSpeechSegmenter.Segmenter``; its networks, batch
    size, energy ratio and gender option are used as they are.
    """

    def __init__(self, segmenter: Any, chunk_seconds: float, context_seconds: float) -> None:
        self.nets = [segmenter.vad, *([segmenter.gender] if segmenter.detect_gender else [])]
        self.energy_ratio = segmenter.energy_ratio
        self.chunk_seconds = chunk_seconds
        self.context_seconds = context_seconds

    def segment(self, path: Path, source: str) -> tuple[list[Segment], float, int]:
        """Segments, seconds of audio decoded, and chunks read, of the file at ``path``.

        Raises BadInput (naming ``source``) if ffmpeg cannot decode the audio or it is too
        short, and RetryableError if the temp files beside ``path`` (or ffmpeg) fail.
        """
        seconds, chunks = 0.0, 0
        try:
            with _FrameStore(path.parent, sum(len(n.outlabels) for n in self.nets)) as store:
                for chunk in _prefetch(_decode_chunks(path, source, self.chunk_seconds, [n.nmel for n in self.nets])):
                    outputs = []
                    for net, (data, finite) in zip(self.nets, chunk.patches):
                        outputs.append(_predict(net, data, finite))
                    store.append(chunk.loge, np.hstack(outputs) if outputs else np.empty((0, store.columns)))
                    seconds, chunks = seconds + chunk.seconds, chunks + 1
                return self._decide(store), seconds, chunks
        except OSError as err:  # the temp files on scratch, or ffmpeg missing: the node's fault
            raise RetryableError(f"{source}: {err}") from err

    def _decide(self, store: _FrameStore) -> list[Segment]:
        """The package's decisions (energy, then speech/music[/noise], then gender)."""
        from inaSpeechSegmenter.viterbi_utils import diag_trans_exp, log_trans_exp, pred2logemission

        window, margin = round(self.chunk_seconds / FRAME_S), round(self.context_seconds / FRAME_S)
        count = store.energy_count  # as the package's _energy_activity, over the whole file
        threshold = store.energy_sum / count + np.log(self.energy_ratio) if count else np.inf
        energy = _viterbi(lambda a, b: pred2logemission(store.read_loge(a, b) > threshold),
                          log_trans_exp(150, cost0=-5), 0, store.frames(), 2 * window, 2 * margin)
        col = 0
        decoders = []
        for net in self.nets:
            cols = slice(col, col + len(net.outlabels))
            col = cols.stop
            decoders.append((net, lambda a, b, cols=cols: np.log(store.read_pred(a, b, cols)),
                             diag_trans_exp(net.viterbi_arg, len(net.outlabels))))

        def refine(label: str, start: int, stop: int, level: int) -> Iterator[tuple[str, int, int]]:
            if level == len(decoders) or label != decoders[level][0].inlabel:
                yield label, start, stop
                return
            net, emission, transition = decoders[level]
            for state, a, b in _runs(_viterbi(emission, transition, start, stop, window, margin)):
                yield from refine(net.outlabels[int(state)], a, b, level + 1)

        segments = []
        for state, start, stop in _runs((a // 2, states[::2]) for a, states in energy):
            for label, a, b in refine("energy" if state else "noEnergy", start, stop, 0):
                segments.append((label, a * FRAME_S, b * FRAME_S))
        return segments


def _predict(net: Any, data: np.ndarray, finite: np.ndarray) -> np.ndarray:
    """The network's outputs for the patches ``data``; 0.5 (no opinion) for those not
    ``finite``, as the package sets them after predicting every patch. A patch is not
    finite if any of its 68 frames is digital silence (log 0); a patch's prediction does
    not depend on the others in its batch, so these are not predicted at all.

    ``predict_on_batch`` a batch at a time gives ``predict``'s outputs without its
    per-call input pipeline. A short last batch is padded to the full size: every call
    then has one input shape, so TensorFlow traces the model once, not once per shape
    (memory that would grow with the number of files)."""
    pred = np.full((len(data), len(net.outlabels)), 0.5, np.float32)
    todo = np.flatnonzero(finite)
    for i in range(0, len(todo), net.batch_size):
        rows = todo[i: i + net.batch_size]
        batch = data[np.pad(rows, (0, net.batch_size - len(rows)), mode="edge")]
        pred[rows] = net.nn.predict_on_batch(batch[..., np.newaxis])[: len(rows)]
    return pred


@dataclass
class _Chunk:
    """What the decoding thread hands over for one chunk."""

    seconds: float  # audio decoded
    loge: np.ndarray  # log energy of the 10 ms frames completed
    patches: list[tuple[np.ndarray, np.ndarray]]  # per network: (inputs, finite) of 20 ms frames


class _Features:
    """The package's features of a signal arriving in pieces, equal to those of the whole."""

    def __init__(self, nmels: list[int]) -> None:
        self.nmels = nmels
        self.samples = np.empty(0, np.float32)  # not yet in a frame
        self.mspec = np.empty((0, 24), np.float32)  # frames whose patch is not made yet
        self.first = True

    def push(self, samples: np.ndarray, last: bool) -> _Chunk:
        from inaSpeechSegmenter.segmenter import _get_patches
        from inaSpeechSegmenter.sidekit_mfcc import mfcc

        sig = np.concatenate([self.samples, samples])
        frames = (len(sig) - WIN) // HOP + 1 if len(sig) >= WIN else 0
        if not last:
            frames -= 2  # keep two back: mfcc cannot take a lone frame
        loge = np.empty(0, np.float32)
        if frames >= 2:
            with np.errstate(divide="ignore"):  # digital silence: log(0) = -inf, as the package
                _, loge, _, mspec = mfcc(sig[: (frames - 1) * HOP + WIN], get_mspec=True)
            sig = sig[frames * HOP:].copy()
            self.mspec = np.concatenate([self.mspec, mspec])
        self.samples = sig

        m = self.mspec
        windows = (len(m) - PATCH) // STEP + 1 if len(m) >= PATCH else 0
        if not last:
            windows -= PATCH // STEP  # keep a patch's worth back for the final padding
        patches = []
        if windows > 0:
            lo, hi = (0 if self.first else FILL), (None if last else FILL + windows)
            for nmel in self.nmels:
                with np.errstate(invalid="ignore", divide="ignore"):  # flagged in `finite`
                    data, finite = _get_patches(np.ascontiguousarray(m[:, :nmel]), PATCH, STEP)
                patches.append((data[lo:hi], finite[lo:hi]))
            self.mspec = m[STEP * windows:].copy()
            self.first = False
        return _Chunk(len(samples) / SR, loge, patches)


def _decode_chunks(path: Path, source: str, chunk_seconds: float, nmels: list[int]) -> Iterator[_Chunk]:
    """Decode ``path`` once with ffmpeg (16 kHz mono, as the package) and yield its features."""
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-i", f"file:{path}",
           "-vn", "-ac", "1", "-ar", str(SR), "-f", "s16le", "-acodec", "pcm_s16le", "pipe:1"]
    nbytes = 2 * HOP * round(chunk_seconds * SR / HOP)
    features, total = _Features(nmels), 0
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
                yield features.push(np.frombuffer(raw, "<i2").astype(np.float32) / 32768, last)
                if last:
                    return
        finally:
            proc.kill()


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

    thread = threading.Thread(target=run, name="segment-decode", daemon=True)
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
    """Per-frame log energy (10 ms) and network outputs (20 ms) of one file, on disk."""

    def __init__(self, folder: Path, columns: int) -> None:
        self.columns = columns
        self.loge = tempfile.TemporaryFile(dir=folder, buffering=0)
        self.pred = tempfile.TemporaryFile(dir=folder, buffering=0)
        self.energy_sum, self.energy_count = 0.0, 0

    def __enter__(self) -> "_FrameStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.loge.close()
        self.pred.close()

    def append(self, loge: np.ndarray, pred: np.ndarray) -> None:
        finite = loge[np.isfinite(loge)]
        self.energy_sum += float(finite.sum(dtype=np.float64))
        self.energy_count += len(finite)
        self.loge.write(loge.astype(np.float32).tobytes())
        self.pred.write(pred.astype(np.float32).tobytes())

    def frames(self) -> int:
        """How many 10 ms frames are stored."""
        return os.fstat(self.loge.fileno()).st_size // 4

    def read_loge(self, lo: int, hi: int) -> np.ndarray:
        return np.frombuffer(os.pread(self.loge.fileno(), 4 * (hi - lo), 4 * lo), np.float32)

    def read_pred(self, lo: int, hi: int, cols: slice) -> np.ndarray:
        row = 4 * self.columns
        data = np.frombuffer(os.pread(self.pred.fileno(), row * (hi - lo), row * lo), np.float32)
        return data.reshape(hi - lo, self.columns)[:, cols]


def _viterbi(emission: Callable[[int, int], np.ndarray], transition: np.ndarray,
             lo: int, hi: int, window: int, margin: int) -> Iterator[tuple[int, np.ndarray]]:
    """The package's Viterbi decoding of frames [lo, hi), window by window, each with
    ``margin`` frames of context either side; yields (first frame, states)."""
    from inaSpeechSegmenter.pyannote_viterbi import viterbi_decoding

    for a in range(lo, hi, window):
        b = min(a + window, hi)
        c, d = max(lo, a - margin), min(hi, b + margin)
        yield a, viterbi_decoding(emission(c, d), transition)[a - c: b - c]


def _runs(pieces: Iterator[tuple[int, np.ndarray]]) -> Iterator[tuple[float, int, int]]:
    """(state, start, stop) of each run of one state, joined across consecutive pieces."""
    from inaSpeechSegmenter.segmenter import _binidx2seglist

    state = start = stop = None
    for first, states in pieces:
        for s, a, b in _binidx2seglist(states):
            if s != state:
                if state is not None:
                    yield state, start, stop
                state, start = s, first + a
            stop = first + b
    if state is not None:
        yield state, start, stop
