"""The visual half's contract: file names and columns the keyframes and classify stages write,
the class folder names, and the model folder's layout.

The orchestrator (``classifier dataset``, ``classifier train``) and the worker stages read and
write these; later stages (boundaries, reports) read them.  Pure Python, no heavy import.
"""

from __future__ import annotations

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
