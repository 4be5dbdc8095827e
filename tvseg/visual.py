"""The visual half's contract: file names and columns the keyframes and classify stages write,
the class folder names, and the model folder's layout.

The orchestrator (``classifier dataset``, ``classifier train``) and the worker stages read and
write these; later stages (boundaries, reports) read them.  Pure Python, no heavy import.
"""

from __future__ import annotations

from dataclasses import dataclass

# Outputs of the keyframes stage, in the file's output folder.
KEYFRAMES_CSV = "keyframes.csv"  # one row a keyframe
KEYFRAMES_JSON = "keyframes.json"  # settings and counts (the stage's cache key)
KEYFRAMES_DIR = "keyframes"  # the JPEGs, named <segment>_<time>.jpg
KEYFRAMES_HEADER = ("segment", "time", "path")  # segment: the row's index in segments.csv (0-based);
# time: seconds from the recording's start; path: relative to the file's output folder

# Outputs of the classify stage.
CLASSIFIED_CSV = "classified.csv"
CLASSIFIED_JSON = "classified.json"
CLASSIFIED_HEADER = ("segment", "start", "stop", "label", "confidence", "title_score", "filtered")

# Class folders of a training data set (`classifier dataset` writes them, `train` reads them).
TITLE_CLASS = "title_sequence"
COMMERCIAL_CLASS = "commercial"
UNLABELLED = "unlabelled"  # never a class: frames nobody labelled yet

# A model folder (`classifier train --out`).
MODEL_FILE = "model.keras"
MODEL_INFO = "classifier.json"  # {"classes", "input_size": [h, w], "settings", "data", "versions"}
METRICS_FILE = "metrics.json"  # {"accuracy", "classes", "per_class", "confusion", "support"}
PROGRESS_FILE = "progress.json"  # rewritten each epoch while training: {"epoch", "epochs", "logs"}


def keyframe_name(segment: int, time: float) -> str:
    """A keyframe's file name: sortable, and saying which segment and when."""
    return f"{segment:05d}_{time:010.3f}.jpg"


def dataset_name(output_name: str, time: float) -> str:
    """A keyframe's name in a data set: the recording's output folder name and the time, stable
    across exports so that a frame moved to a class folder by hand is never exported twice."""
    hours, rest = divmod(time, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{output_name}_{int(hours):02d}h{int(minutes):02d}m{seconds:06.3f}s.jpg"


BACKBONES = ("cnn", "mobilenet_v3_small", "efficientnet_b0")  # cnn: a small CNN from scratch


@dataclass(frozen=True)
class TrainSettings:
    """How `classifier train` trains (saved in the model folder's classifier.json)."""

    backbone: str = "cnn"
    backbone_weights: str | None = None  # a local weights file: required for any backbone but cnn
    image_size: int = 96  # the network's input: image_size x image_size RGB
    epochs: int = 30
    batch_size: int = 32
    test_fraction: float = 0.2  # held out (stratified) for the metrics report
    validation_fraction: float = 0.2  # of the rest, for early stopping
    patience: int = 5  # epochs without a better validation loss before stopping
    seed: int = 0
    min_per_class: int = 5

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {', '.join(BACKBONES)}, not {self.backbone!r}")
        if self.backbone != "cnn" and not self.backbone_weights:
            raise ValueError(f"backbone {self.backbone} needs a local weights file (--backbone-weights FILE): "
                             "nothing is downloaded")
        if self.image_size < 32:
            raise ValueError(f"image size must be at least 32, not {self.image_size}")
        for name in ("test_fraction", "validation_fraction"):
            if not 0 < getattr(self, name) < 0.5:
                raise ValueError(f"{name.replace('_', ' ')} must be between 0 and 0.5, not {getattr(self, name)}")
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 1:
            raise ValueError("epochs, batch size and patience must be at least 1")
