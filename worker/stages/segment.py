"""The ``segment`` stage: inaSpeechSegmenter over whole recordings at constant memory.

The segmentation itself is ``worker.segmentation.ChunkedSegmenter``; this module holds
the stage's settings and its outputs, caching and provenance. It imports nothing heavy
at module level: the orchestrator loads it on a login node (no numpy, TensorFlow or
inaSpeechSegmenter there) to validate ``Settings`` from jobs.yaml; numpy and the
segmenter are imported in ``setup()``.
"""

from __future__ import annotations

import csv
import importlib.metadata
import io
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import tvseg
from tvseg.journal import atomic_write_text
from worker.stages import FileContext, Stage, StageResult

CSV, SUMMARY, PROVENANCE = "segments.csv", "segments.json", "provenance.json"
FEATURES = "features.npz"  # with the ``features`` setting (worker.segmentation.write_features)
OUTPUTS = (CSV, SUMMARY, PROVENANCE)
CSV_HEADER = ("labels", "start", "stop")


@dataclass(frozen=True)
class Settings:
    """Options of the segment stage (jobs.yaml ``stage_settings.segment``)."""

    model_dir: str = field(default="models", metadata={"path": True})  # relative to jobs.yaml's folder
    vad_engine: str = "smn"  # "smn" speech/music/noise, or "sm" speech/music
    detect_gender: bool = False  # split speech into female/male (the network then runs twice)
    batch_size: int = 256  # frames per network call (package: 32; 1024 only adds ~0.5 GB on a CPU)
    chunk_seconds: float = 60.0  # audio decoded and predicted at a time (memory), and decision window
    context_seconds: float = 30.0  # context either side of a decision window
    energy_ratio: float = 0.03  # the package's energy threshold, relative to the mean energy
    features: bool = False  # also write features.npz: 24 log mel bands + log energy a 10 ms frame, float16
    backend: str = "auto"  # network runtime: "tensorflow", "onnx", or "auto" (onnx if onnxruntime is installed)
    feature_workers: int = 1  # processes computing the features (the task's cores: slurm cpus-per-task)

    def __post_init__(self) -> None:
        if self.vad_engine not in ("sm", "smn"):
            raise ValueError(f"vad_engine must be 'sm' or 'smn', not {self.vad_engine!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {self.batch_size}")
        if self.chunk_seconds < 10:
            raise ValueError(f"chunk_seconds must be at least 10, not {self.chunk_seconds}")
        if self.context_seconds < 0:
            raise ValueError(f"context_seconds must not be negative, not {self.context_seconds}")
        if not 0 < self.energy_ratio < 1:
            raise ValueError(f"energy_ratio must be between 0 and 1, not {self.energy_ratio}")
        if self.backend not in ("auto", "tensorflow", "onnx"):
            raise ValueError(f"backend must be 'auto', 'tensorflow' or 'onnx', not {self.backend!r}")
        if self.feature_workers < 1:
            raise ValueError(f"feature_workers must be at least 1, not {self.feature_workers}")


class SegmentStage(Stage):
    """Label speech, music, noise and silence (noEnergy) with inaSpeechSegmenter."""

    name = "segment"
    Settings = Settings

    def setup(self) -> None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import numpy

        from worker.models import load_nets, resolve_backend
        from worker.segmentation import ChunkedSegmenter

        s = self.settings
        self._backend = resolve_backend(s.backend)
        nets, models = load_nets(Path(s.model_dir), s.vad_engine, s.detect_gender, s.batch_size, self._backend)
        self._segmenter = ChunkedSegmenter(nets, s.energy_ratio, s.chunk_seconds, s.context_seconds,
                                           s.feature_workers)
        packages = {"inaSpeechSegmenter": importlib.metadata.version("inaSpeechSegmenter"), "numpy": numpy.__version__}
        if self._backend == "tensorflow":
            import keras
            import tensorflow

            packages.update(tensorflow=tensorflow.__version__, keras=keras.__version__)
        else:
            import onnxruntime

            packages.update(onnxruntime=onnxruntime.__version__)
        self._provenance = {
            "tvseg": tvseg.__version__,
            "packages": packages,
            "backend": self._backend,
            "models": models,
            "model_dir": s.model_dir,
            "settings": {k: v for k, v in asdict(s).items() if k not in ("model_dir", "feature_workers")},
        }

    def close(self) -> None:
        if getattr(self, "_segmenter", None) is not None:
            self._segmenter.close()
            self._segmenter = None
            if self._backend == "tensorflow":
                import keras

                keras.backend.clear_session()

    @property
    def outputs(self) -> tuple[str, ...]:
        return OUTPUTS + ((FEATURES,) if self.settings.features else ())

    def process(self, ctx: FileContext) -> StageResult:
        cached = self._cached(ctx.output_dir)
        if cached:
            return cached
        features = ctx.output_dir / FEATURES if self.settings.features else None
        segments, seconds, chunks = self._segmenter.segment(ctx.staged, ctx.source, features)
        summary = self._summary(segments, seconds, chunks)
        atomic_write_text(ctx.output_dir / CSV, _segments_csv(segments))
        atomic_write_text(ctx.output_dir / SUMMARY, json.dumps(summary, indent=2))
        atomic_write_text(ctx.output_dir / PROVENANCE, json.dumps(self._provenance, indent=2))
        return StageResult(self.outputs, _facts(summary))

    def _cached(self, out: Path) -> StageResult | None:
        """The result of an earlier run with the same settings and models, if complete."""
        try:
            provenance = json.loads((out / PROVENANCE).read_text())
            summary = json.loads((out / SUMMARY).read_text())
        except (OSError, ValueError):
            return None
        same = all(provenance.get(k) == self._provenance[k] for k in ("settings", "models", "backend"))
        complete = all((out / name).is_file() for name in self.outputs)
        return StageResult(self.outputs, _facts(summary)) if same and complete else None

    def _summary(self, segments: list[tuple[str, float, float]], seconds: float, chunks: int) -> dict:
        totals = {"speech": 0.0, "female": 0.0, "male": 0.0, "music": 0.0, "noise": 0.0, "noEnergy": 0.0}
        for label, start, stop in segments:
            totals[label] += stop - start
        summary = {
            "duration_s": round(seconds, 3),
            "chunks": chunks,
            "speech_s": round(totals["speech"] + totals["female"] + totals["male"], 2),
            "music_s": round(totals["music"], 2),
            "noise_s": round(totals["noise"], 2),
            "silence_s": round(totals["noEnergy"], 2),
        }
        if self.settings.detect_gender:
            summary.update(female_s=round(totals["female"], 2), male_s=round(totals["male"], 2))
        return summary


def _segments_csv(segments: list[tuple[str, float, float]]) -> str:
    """``labels,start,stop`` and a row a segment; times in seconds, to the 20 ms frame."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    writer.writerows((label, f"{start:.2f}", f"{stop:.2f}") for label, start, stop in segments)
    return out.getvalue()


def _facts(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k.endswith("_s")}
