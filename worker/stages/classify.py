"""The ``classify`` stage: score every keyframe of each music segment with the trained image
classifier, label the segment by the mean score, and mark (never delete) the segments whose
title-sequence score is below the threshold as filtered.

The model is loaded and checked once per worker, in ``setup()``: a missing or corrupt model
file, or classes other than the settings', stop the worker with that message before it takes
any file.  Reads ``keyframes.csv`` (the keyframes stage) and ``segments.csv`` (the segment
stage) in the file's output folder; writes ``classified.csv`` and ``classified.json``
(tvseg/visual.py).  Imports nothing heavy at module level.
"""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from tvseg.errors import RetryableError
from tvseg.journal import atomic_write_text
from tvseg.visual import (CLASSIFIED_CSV, CLASSIFIED_HEADER, CLASSIFIED_JSON, COMMERCIAL_CLASS, KEYFRAMES_CSV,
                          TITLE_CLASS)
from worker.stages import FileContext, Stage, StageResult
from worker.stages.keyframes import SEGMENTS_CSV

OUTPUTS = (CLASSIFIED_CSV, CLASSIFIED_JSON)


@dataclass(frozen=True)
class Settings:
    """Options of the classify stage (jobs.yaml ``stage_settings.classify``)."""

    model_dir: str = field(default="classifier", metadata={"path": True})  # made by `classifier train --out`
    classes: str = f"{TITLE_CLASS},{COMMERCIAL_CLASS}"  # what the model must tell apart (comma-separated)
    title_class: str = TITLE_CLASS
    threshold: float = 0.5  # a segment whose mean title score is below this is marked filtered
    batch_size: int = 64  # keyframes a network call

    def __post_init__(self) -> None:
        names = self.class_list
        if len(names) < 2 or len(set(names)) != len(names):
            raise ValueError(f"classes must name at least two different classes, not {self.classes!r}")
        if self.title_class not in names:
            raise ValueError(f"title_class {self.title_class!r} is not among classes ({', '.join(names)})")
        if not 0 < self.threshold < 1:
            raise ValueError(f"threshold must be between 0 and 1, not {self.threshold}")

    @property
    def class_list(self) -> list[str]:
        return [c.strip() for c in self.classes.split(",") if c.strip()]


class ClassifyStage(Stage):
    """Title sequence or not, for each music segment with keyframes."""

    name = "classify"
    Settings = Settings

    def setup(self) -> None:
        from worker import classifier  # noqa: PLC0415 - TensorFlow, on the compute node only

        s = self.settings
        self._model, info = classifier.load_classifier(Path(s.model_dir), s.class_list, s.title_class)
        self._classes = list(info["classes"])
        self._size = int(info["input_size"][0])
        self._load = classifier.load_images
        self._header = {"classes": self._classes, "title_class": s.title_class, "threshold": s.threshold,
                        "model": {"dir": s.model_dir, "sha256": info["sha256"]}}

    def close(self) -> None:
        if getattr(self, "_model", None) is not None:
            import keras  # noqa: PLC0415

            self._model = None
            keras.backend.clear_session()

    def process(self, ctx: FileContext) -> StageResult:
        out = ctx.output_dir
        for name, stage in ((KEYFRAMES_CSV, "keyframes"), (SEGMENTS_CSV, "segment")):
            if not (out / name).is_file():
                raise RetryableError(f"{ctx.source}: no {name} in {out}: run the {stage} stage before classify "
                                     "(worker.stages)")
        with open(out / SEGMENTS_CSV, newline="", encoding="utf-8") as fh:
            bounds = [(float(r["start"]), float(r["stop"])) for r in csv.DictReader(fh)]
        frames: dict[int, list[tuple[float, str]]] = defaultdict(list)
        with open(out / KEYFRAMES_CSV, newline="", encoding="utf-8") as fh:
            for r in csv.DictReader(fh):
                frames[int(r["segment"])].append((float(r["time"]), r["path"]))
        order = sorted(frames)
        paths = [str(out / p) for i in order for _, p in frames[i]]
        scores = self._scores(paths)
        segments, k = [], 0
        title = self._classes.index(self.settings.title_class)
        for i in order:
            mine = scores[k: k + len(frames[i])]
            k += len(frames[i])
            mean = [sum(s[c] for s in mine) / len(mine) for c in range(len(self._classes))]
            best = max(range(len(mean)), key=mean.__getitem__)  # ties: the first class
            segments.append({
                "segment": i, "start": bounds[i][0], "stop": bounds[i][1], "label": self._classes[best],
                "confidence": round(mean[best], 4), "title_score": round(mean[title], 4),
                "filtered": mean[title] < self.settings.threshold,
                "keyframes": [{"time": t, "path": p, "scores": {c: round(s[j], 4) for j, c in enumerate(self._classes)}}
                              for (t, p), s in zip(frames[i], mine)],
            })
        atomic_write_text(out / CLASSIFIED_CSV, _csv(segments))
        atomic_write_text(out / CLASSIFIED_JSON, json.dumps({**self._header, "segments": segments}, indent=2))
        kept = sum(not s["filtered"] for s in segments)
        return StageResult(OUTPUTS, {"classified": len(segments), "kept": kept, "filtered": len(segments) - kept})

    def _scores(self, paths: list[str]) -> list[list[float]]:
        """Class scores of each keyframe, a batch at a time."""
        import numpy as np  # noqa: PLC0415

        n = self.settings.batch_size
        found: list[list[float]] = []
        for start in range(0, len(paths), n):
            batch = self._load(paths[start: start + n], self._size)
            padded = np.concatenate([batch, np.zeros((n - len(batch), *batch.shape[1:]), batch.dtype)])
            found += self._model.predict_on_batch(padded)[: len(batch)].astype(float).tolist()  # one shape: one trace
        return found


def _csv(segments: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CLASSIFIED_HEADER)
    writer.writerows((s["segment"], f"{s['start']:.2f}", f"{s['stop']:.2f}", s["label"], f"{s['confidence']:.4f}",
                      f"{s['title_score']:.4f}", str(s["filtered"]).lower()) for s in segments)
    return out.getvalue()
