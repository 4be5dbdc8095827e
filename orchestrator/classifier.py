"""The classifier commands' library side: export keyframes into class folders (weakly labelled
from caption files), train locally or as one job through the run's executor, evaluate.

Nothing here imports TensorFlow: training and evaluation import worker/classifier.py inside
the functions that need it, so `classifier dataset` and argument parsing stay light on a
login node.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from orchestrator import orchestration
from orchestrator.manifest import InputFile, Manifest
from tvseg.captions import caption_file, parse_captions, weak_label
from tvseg.config import JobConfig
from tvseg.errors import UsageError
from tvseg.journal import atomic_write_text
from tvseg.states import FileState
from tvseg.visual import (COMMERCIAL_CLASS, KEYFRAMES_CSV, METRICS_FILE, PROGRESS_FILE, TITLE_CLASS, UNLABELLED,
                          TrainSettings, dataset_name)

DATASET_REPORT = "dataset.json"
CLASS_FOLDERS = (TITLE_CLASS, COMMERCIAL_CLASS, UNLABELLED)
NO_CAPTIONS = "no captions"


@dataclass
class DatasetReport:
    out_dir: Path
    files: int = 0  # finished files looked at
    without_keyframes: int = 0  # finished, but no keyframes.csv (the keyframes stage did not run)
    by_source: dict[str, Counter] = field(default_factory=dict)  # source -> class -> frames exported
    files_by_source: Counter = field(default_factory=Counter)
    already_there: int = 0  # frames whose name is in a class folder already (e.g. labelled by hand)
    bad_lines: int = 0
    bad_examples: list[str] = field(default_factory=list)  # "path:line: why", the first few

    def as_dict(self) -> dict:
        return {"out_dir": str(self.out_dir), "files": self.files, "without_keyframes": self.without_keyframes,
                "frames": {src: dict(c) for src, c in self.by_source.items()},
                "files_by_source": dict(self.files_by_source), "already_there": self.already_there,
                "bad_caption_lines": self.bad_lines, "bad_caption_examples": self.bad_examples}


def export_dataset(config: JobConfig, out_dir: Path, title_seconds: float = 20.0,
                   on_file: Callable[[int, int], None] = lambda done, total: None) -> DatasetReport:
    """Copy the keyframes of every finished file into ``out_dir/<class>/``.

    The class comes from the recording's caption file when it has one (``weak_label``), else
    ``unlabelled``.  Names are stable (``dataset_name``): a frame already in any class folder
    (say, moved there by hand) is left where it is.  Writes ``dataset.json`` (the report).
    """
    if not config.manifest_path.exists():
        raise UsageError(f"{config.manifest_path}: no manifest yet; run 'orchestrate submit {config.source}' first")
    manifest = Manifest(config.manifest_path)
    try:
        rows = manifest.files_in([FileState.DONE])
    finally:
        manifest.close()
    for name in CLASS_FOLDERS:
        (out_dir / name).mkdir(parents=True, exist_ok=True)
    present = {entry.name for folder in out_dir.iterdir() if folder.is_dir() for entry in folder.iterdir()}
    report = DatasetReport(out_dir)
    for n, row in enumerate(rows, 1):
        report.files += 1
        folder = config.workdir / "outputs" / row["output_name"]
        if not (folder / KEYFRAMES_CSV).is_file():
            report.without_keyframes += 1
            continue
        captions_path = caption_file(row["path"])
        captions = parse_captions(captions_path) if captions_path else None
        source = f"captions {captions_path.suffix}" if captions_path else NO_CAPTIONS
        report.files_by_source[source] += 1
        counts = report.by_source.setdefault(source, Counter())
        if captions is not None:
            report.bad_lines += len(captions.bad_lines)
            for number, why in captions.bad_lines[: max(0, 5 - len(report.bad_examples))]:
                report.bad_examples.append(f"{captions_path}:{number}: {why}")
        with open(folder / KEYFRAMES_CSV, newline="", encoding="utf-8") as fh:
            for frame in csv.DictReader(fh):
                time = float(frame["time"])
                name = dataset_name(row["output_name"], time)
                if name in present:
                    report.already_there += 1
                    continue
                label = (weak_label(captions, time, title_seconds) if captions else None) or UNLABELLED
                shutil.copyfile(folder / frame["path"], out_dir / label / name)
                present.add(name)
                counts[label] += 1
        on_file(n, len(rows))
    atomic_write_text(out_dir / DATASET_REPORT, json.dumps(report.as_dict(), indent=2, ensure_ascii=False))
    return report


# --- training and evaluation ------------------------------------------------------------------


def train_here(data_dir: Path, model_dir: Path, settings: TrainSettings) -> dict:
    """Train in this process (TensorFlow imported here); returns the metrics report."""
    from worker.classifier import train  # noqa: PLC0415 - TensorFlow: only when training

    return train(data_dir, model_dir, settings, progress=True)


def evaluate(model_dir: Path, data_dir: Path) -> dict:
    """The metrics report of a trained model on the labelled class folders of ``data_dir``."""
    from worker.classifier import evaluate as run  # noqa: PLC0415 - TensorFlow: only when evaluating

    return run(model_dir, data_dir)


TRAIN_STAGE = "train_classifier"
REQUEST_FILE = "train-request.json"
RUN_DIR = "run"  # under the model folder: the training job's manifest, journals and logs


def training_config(config: JobConfig, model_dir: Path) -> JobConfig:
    """The run's jobs.yaml turned into a one-job run: its executor and SLURM resources (GPU
    included), the train stage alone, work folder ``<model_dir>/run``."""
    from worker.stages import NoSettings  # noqa: PLC0415 - light

    worker = dataclasses.replace(config.worker, stages=(TRAIN_STAGE,), stage_settings={TRAIN_STAGE: NoSettings()},
                                 queue_depth=1, scratch_budget=None, max_attempts=1)
    return dataclasses.replace(config, name=f"{config.name}-train", workdir=model_dir / RUN_DIR, inputs=(),
                               inputs_from=None, worker=worker)


def submit_training(config: JobConfig, data_dir: Path, model_dir: Path, settings: TrainSettings) -> JobConfig:
    """Write the training request and submit it as one task through the run's executor; returns
    the training run's config (to wait on).  A run still active in ``model_dir`` is an error."""
    run = training_config(config, model_dir)
    if run.manifest_path.exists():
        manifest = Manifest(run.manifest_path)
        try:
            orchestration.reconcile(run, manifest)
            if manifest.active_shards():
                raise UsageError(f"{model_dir}: a training job is still running there (its files: {run.workdir})")
        finally:
            manifest.close()
        shutil.rmtree(run.workdir)
    run.workdir.mkdir(parents=True)
    request = run.workdir / REQUEST_FILE
    atomic_write_text(request, json.dumps({"data_dir": str(data_dir.resolve()), "model_dir": str(model_dir.resolve()),
                                           "settings": dataclasses.asdict(settings)}, indent=2))
    stat = request.stat()
    plan = orchestration.SubmitPlan(known=0, new=[InputFile(str(request), stat.st_size, stat.st_mtime)],
                                    new_bytes=stat.st_size, n_shards=1, files_per_shard=1, bytes_per_shard=None)
    orchestration.submit(run, plan)
    return run


def read_progress(model_dir: Path) -> dict | None:
    """The last epoch a training reported (rewritten each epoch), or None."""
    try:
        return json.loads((model_dir / PROGRESS_FILE).read_text())
    except (OSError, ValueError):
        return None


def training_outcome(run: JobConfig, model_dir: Path) -> dict:
    """The metrics of a finished training job; UsageError with the job's reason if it failed."""
    manifest = Manifest(run.manifest_path)
    try:
        rows = manifest.files_in([FileState.FAILED, FileState.QUARANTINED, FileState.PENDING, FileState.RUNNING])
    finally:
        manifest.close()
    if rows:
        raise UsageError(f"the training job did not finish: {rows[0].get('error') or rows[0]['state']} "
                         f"(logs: {run.logs_dir})")
    return json.loads((model_dir / METRICS_FILE).read_text())


# --- what the CLI prints ----------------------------------------------------------------------


def dataset_table(report: DatasetReport):
    """Frames exported per label source and class, and the caption lines that did not parse."""
    from rich.console import Group  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415
    from rich.text import Text  # noqa: PLC0415

    table = Table(title=f"keyframes exported to {report.out_dir}")
    table.add_column("source")
    table.add_column("files", justify="right")
    for name in CLASS_FOLDERS:
        table.add_column(name, justify="right")
    for source, counts in sorted(report.by_source.items()):
        table.add_row(source, str(report.files_by_source[source]), *(str(counts.get(c, 0)) for c in CLASS_FOLDERS))
    lines = [f"{report.files} finished file(s); {report.without_keyframes} without keyframes (no keyframes stage); "
             f"{report.already_there} frame(s) already in a class folder, left there",
             f"{report.bad_lines} caption line(s) could not be parsed (skipped)"]
    lines += [f"  {example}" for example in report.bad_examples]
    return Group(table, *(Text(line) for line in lines))


def metrics_tables(metrics: dict, title: str) -> list:
    """Per-class precision/recall/F1 and the confusion matrix, as rich tables."""
    from rich.table import Table  # noqa: PLC0415

    per = Table(title=f"{title}: accuracy {metrics['accuracy']:.3f} on {metrics['n']} image(s)")
    for column in ("class", "precision", "recall", "F1", "support"):
        per.add_column(column, justify="left" if column == "class" else "right")
    for c in metrics["classes"]:
        m = metrics["per_class"][c]
        per.add_row(c, f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}", str(m["support"]))
    confusion = Table(title="confusion matrix (rows: true class, columns: predicted)")
    confusion.add_column("true \\ predicted")
    for c in metrics["classes"]:
        confusion.add_column(c, justify="right")
    for c, row in zip(metrics["classes"], metrics["confusion"]):
        confusion.add_row(c, *(str(v) for v in row))
    return [per, confusion]
