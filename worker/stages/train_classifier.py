"""``train_classifier``: `orchestrate classifier train --submit` as a stage, so that training runs
as one task through the same executor (SLURM resources, GPU included), journaled and followed
like any run.  Its one input is the request file the orchestrator wrote (data folder, model
folder, TrainSettings as JSON); its output is the model folder, plus a copy of the metrics in
the task's output folder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tvseg.errors import BadInput, UsageError
from tvseg.visual import METRICS_FILE, TrainSettings
from worker.stages import FileContext, Stage, StageResult


class TrainClassifierStage(Stage):
    """Train the keyframe classifier from a request file (see orchestrator/classifier.py)."""

    name = "train_classifier"

    def setup(self) -> None:
        from worker import classifier  # noqa: PLC0415 - TensorFlow, on the compute node only

        self._train = classifier.train

    def process(self, ctx: FileContext) -> StageResult:
        try:
            request = json.loads(ctx.staged.read_text(encoding="utf-8"))
            settings = TrainSettings(**request["settings"])
            data_dir, model_dir = Path(request["data_dir"]), Path(request["model_dir"])
        except (ValueError, KeyError, TypeError) as exc:
            raise BadInput(f"{ctx.source}: not a training request ({type(exc).__name__}: {exc})") from None
        try:
            metrics = self._train(data_dir, model_dir, settings, progress=True)
        except UsageError as exc:  # the data: permanent, as a bad input is
            raise BadInput(str(exc)) from None
        shutil.copyfile(model_dir / METRICS_FILE, ctx.output_dir / METRICS_FILE)
        return StageResult((METRICS_FILE,), {"accuracy": metrics["accuracy"]})
