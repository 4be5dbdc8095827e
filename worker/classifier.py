"""The image classifier: data from class folders, training, evaluation, loading for the
classify stage.  TensorFlow/Keras, imported here only (the login node never imports this
module for `classifier dataset` or for parsing arguments).

Preprocessing is the same everywhere: the image file decoded to RGB and resized (bilinear) to
the model's input size, values 0..255; the model rescales (CNN) or preprocesses (backbones)
itself, and its augmentation layers act in training only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tvseg  # noqa: E402
from tvseg.errors import ModelError, UsageError  # noqa: E402
from tvseg.journal import atomic_write_text  # noqa: E402
from tvseg.visual import (METRICS_FILE, MODEL_FILE, MODEL_INFO, PROGRESS_FILE, TITLE_CLASS, UNLABELLED,  # noqa: E402
                          TrainSettings)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


# --- data --------------------------------------------------------------------------------------


def class_images(data_dir: Path, classes: list[str] | None = None) -> tuple[list[str], list[int], list[str]]:
    """(image paths, label indexes, class names) from ``data_dir/<class>/`` (``unlabelled/`` and
    hidden folders are not classes).  With ``classes`` (a model's), a folder of another class is
    an error and the indexes are the model's."""
    if not data_dir.is_dir():
        raise UsageError(f"{data_dir}: no such folder (give the folder of class folders)")
    folders = sorted(p for p in data_dir.iterdir() if p.is_dir() and p.name != UNLABELLED and not p.name.startswith("."))
    if classes is None:
        classes = [p.name for p in folders]
    unknown = [p.name for p in folders if p.name not in classes]
    if unknown:
        raise UsageError(f"{data_dir}: class folder(s) {', '.join(unknown)} not among the model's classes "
                         f"({', '.join(classes)})")
    paths: list[str] = []
    labels: list[int] = []
    for folder in folders:
        images = sorted(str(p) for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        paths += images
        labels += [classes.index(folder.name)] * len(images)
    if not paths:
        raise UsageError(f"{data_dir}: no labelled images (class folders other than {UNLABELLED}/ hold none)")
    return paths, labels, list(classes)


def _load(path: tf.Tensor, size: int) -> tf.Tensor:
    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    return tf.image.resize(tf.cast(image, tf.float32), (size, size), method="bilinear")


def dataset(paths: list[str], labels: list[int] | None, size: int, batch_size: int,
            shuffle_seed: int | None = None) -> tf.data.Dataset:
    """Batches of (images, labels) (or images), decoded as needed: memory does not grow with the set."""
    ds = tf.data.Dataset.from_tensor_slices((paths, labels) if labels is not None else paths)
    if shuffle_seed is not None:
        ds = ds.shuffle(len(paths), seed=shuffle_seed, reshuffle_each_iteration=True)
    if labels is not None:
        ds = ds.map(lambda p, y: (_load(p, size), y), num_parallel_calls=tf.data.AUTOTUNE)
    else:
        ds = ds.map(lambda p: _load(p, size), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def load_images(paths: list[str], size: int) -> np.ndarray:
    """Images as one array (N, size, size, 3), preprocessed as in training."""
    return np.stack([_load(tf.constant(p), size).numpy() for p in paths]) if paths else np.zeros((0, size, size, 3))


# --- the model ---------------------------------------------------------------------------------


def build_model(n_classes: int, s: TrainSettings) -> keras.Model:
    inputs = keras.Input((s.image_size, s.image_size, 3), name="image")
    augment = keras.Sequential([
        keras.layers.RandomFlip("horizontal", seed=s.seed),
        keras.layers.RandomTranslation(0.1, 0.1, seed=s.seed),
        keras.layers.RandomZoom(0.1, seed=s.seed),
        keras.layers.RandomContrast(0.2, seed=s.seed),
    ], name="augment")
    x = augment(inputs)
    if s.backbone == "cnn":
        x = keras.layers.Rescaling(1 / 255)(x)
        for filters in (16, 32, 64):
            x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
            x = keras.layers.MaxPooling2D()(x)
        x = keras.layers.Conv2D(64, 3, padding="same", activation="relu")(x)
    else:
        base = _backbone(s)
        base.trainable = False
        x = base(x, training=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.3, seed=s.seed)(x)
    outputs = keras.layers.Dense(n_classes, activation="softmax", name="scores")(x)
    model = keras.Model(inputs, outputs, name=f"tvseg_{s.backbone}")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def _backbone(s: TrainSettings) -> keras.Model:
    """A keras.applications network without its top, its weights from the local file only."""
    weights = Path(s.backbone_weights or "")
    if not weights.is_file():
        raise UsageError(f"{weights}: no such weights file (--backbone-weights); nothing is downloaded")
    make = {"mobilenet_v3_small": keras.applications.MobileNetV3Small,
            "efficientnet_b0": keras.applications.EfficientNetB0}[s.backbone]
    try:
        return make(input_shape=(s.image_size, s.image_size, 3), include_top=False, weights=str(weights))
    except (ValueError, OSError) as exc:
        raise UsageError(f"{weights}: not weights of {s.backbone} without its top: {exc}") from None


class _Progress(keras.callbacks.Callback):
    """Rewrites progress.json after each epoch (followed by `classifier train --submit`)."""

    def __init__(self, model_dir: Path, epochs: int) -> None:
        super().__init__()
        self.path, self.epochs = model_dir / PROGRESS_FILE, epochs

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        record = {"epoch": epoch + 1, "epochs": self.epochs,
                  "logs": {k: round(float(v), 4) for k, v in (logs or {}).items()}}
        atomic_write_text(self.path, json.dumps(record))


# --- training and evaluation -------------------------------------------------------------------


def split(labels: list[int], s: TrainSettings) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indexes of the training, validation and held-out test images: stratified, seeded."""
    from sklearn.model_selection import train_test_split  # noqa: PLC0415

    index = np.arange(len(labels))
    y = np.asarray(labels)
    rest, test = train_test_split(index, test_size=s.test_fraction, stratify=y, random_state=s.seed)
    train, val = train_test_split(rest, test_size=s.validation_fraction, stratify=y[rest], random_state=s.seed)
    return train, val, test


def train(data_dir: Path, model_dir: Path, s: TrainSettings, progress: bool = False) -> dict:
    """Train on ``data_dir``'s class folders, save to ``model_dir``; returns the metrics report
    (on the held-out test images)."""
    started = time.monotonic()
    paths, labels, classes = class_images(data_dir)
    counts = {c: labels.count(i) for i, c in enumerate(classes)}
    if len(classes) < 2:
        raise UsageError(f"{data_dir}: {len(classes)} class folder(s) with images; training needs at least 2")
    few = {c: n for c, n in counts.items() if n < s.min_per_class}
    if few:
        raise UsageError(f"{data_dir}: too few images in {', '.join(f'{c}/ ({n})' for c, n in few.items())}; "
                         f"each class needs at least {s.min_per_class}")
    keras.utils.set_random_seed(s.seed)
    train_i, val_i, test_i = split(labels, s)
    pick = lambda idx: ([paths[i] for i in idx], [labels[i] for i in idx])  # noqa: E731
    model_dir.mkdir(parents=True, exist_ok=True)
    model = build_model(len(classes), s)
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=s.patience, restore_best_weights=True)
    history = model.fit(dataset(*pick(train_i), s.image_size, s.batch_size, shuffle_seed=s.seed),
                        validation_data=dataset(*pick(val_i), s.image_size, s.batch_size),
                        epochs=s.epochs, callbacks=[stop, _Progress(model_dir, s.epochs)],
                        verbose=(1 if sys.stdout.isatty() else 2) if progress else 0)
    test_paths, test_labels = pick(test_i)
    scores = model.predict(dataset(test_paths, None, s.image_size, s.batch_size), verbose=0)
    metrics = report(test_labels, scores.argmax(axis=1).tolist(), classes)
    tmp = model_dir / f".{MODEL_FILE}.tmp.keras"
    model.save(tmp)
    os.replace(tmp, model_dir / MODEL_FILE)
    info = {
        "classes": classes,
        "title_class": TITLE_CLASS if TITLE_CLASS in classes else None,
        "input_size": [s.image_size, s.image_size],
        "settings": dataclasses.asdict(s),
        "data": {"dir": str(data_dir), "images": counts,
                 "split": {"train": len(train_i), "validation": len(val_i), "test": len(test_i)}},
        "training": {"epochs_run": len(history.history["loss"]), "best_epoch": int(np.argmin(history.history["val_loss"])) + 1,
                     "seconds": round(time.monotonic() - started, 1)},
        "versions": {"tvseg": tvseg.__version__, "tensorflow": tf.__version__, "keras": keras.__version__},
    }
    atomic_write_text(model_dir / MODEL_INFO, json.dumps(info, indent=2))
    atomic_write_text(model_dir / METRICS_FILE, json.dumps(metrics, indent=2))
    return metrics


def report(y_true: list[int], y_pred: list[int], classes: list[str]) -> dict:
    """Accuracy, per-class precision/recall/F1/support and the confusion matrix (rows: truth)."""
    from sklearn.metrics import classification_report, confusion_matrix  # noqa: PLC0415

    labels = list(range(len(classes)))
    per = classification_report(y_true, y_pred, labels=labels, target_names=classes, output_dict=True,
                                zero_division=0)
    return {
        "accuracy": float(np.mean(np.asarray(y_true) == np.asarray(y_pred))) if y_true else 0.0,
        "n": len(y_true),
        "classes": classes,
        "per_class": {c: {"precision": per[c]["precision"], "recall": per[c]["recall"], "f1": per[c]["f1-score"],
                          "support": int(per[c]["support"])} for c in classes},
        "confusion": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_classifier(model_dir: Path, classes: list[str] | None = None,
                    title_class: str | None = None) -> tuple[keras.Model, dict[str, Any]]:
    """The model and its classifier.json, checked: a missing or corrupt file, an output that does
    not fit the classes, or classes other than ``classes`` are a ModelError naming the file."""
    info_path = model_dir / MODEL_INFO
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
        model_classes = [str(c) for c in info["classes"]]
        size = [int(v) for v in info["input_size"]]
    except FileNotFoundError:
        raise ModelError(f"classifier model missing: no {info_path} ({model_dir} is not a folder that "
                         "'orchestrate classifier train DATA_DIR --out MODEL_DIR' made)") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"classifier model unreadable: {info_path} is not a classifier description "
                         f"({type(exc).__name__}: {exc})") from None
    model_path = model_dir / MODEL_FILE
    if not model_path.is_file():
        raise ModelError(f"classifier model missing: no {model_path}")
    try:
        model = keras.saving.load_model(model_path, compile=False)
    except Exception as exc:  # noqa: BLE001 - Keras raises many kinds for a damaged file
        raise ModelError(f"classifier model unreadable: {model_path} is corrupt or not a Keras model ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:200] if str(exc) else 'no detail'})") from None
    if model.output_shape[-1] != len(model_classes) or list(model.input_shape[1:3]) != size:
        raise ModelError(f"classifier model inconsistent: {model_path}'s input {model.input_shape} and output {model.output_shape} do not fit "
                         f"{info_path} ({len(model_classes)} classes, input size {size})")
    if classes is not None and sorted(classes) != sorted(model_classes):
        raise ModelError(f"classifier classes mismatch: the model in {model_dir} has {', '.join(model_classes)}; "
                         f"the settings (classify.classes) expect {', '.join(classes)}")
    if title_class is not None and title_class not in model_classes:
        raise ModelError(f"classifier classes mismatch: the title class {title_class!r} is not among the classes "
                         f"of the model in {model_dir} ({', '.join(model_classes)})")
    info["sha256"] = sha256(model_path)
    return model, info


def evaluate(model_dir: Path, data_dir: Path, batch_size: int = 64) -> dict:
    """The metrics report of the model in ``model_dir`` on every labelled image of ``data_dir``."""
    model, info = load_classifier(model_dir)
    paths, labels, classes = class_images(data_dir, info["classes"])
    scores = model.predict(dataset(paths, None, info["input_size"][0], batch_size), verbose=0)
    return report(labels, scores.argmax(axis=1).tolist(), classes)
