"""`orchestrate`: parse arguments, call the library, turn domain errors into messages.

Exit codes are tvseg.errors.ExitCode: 0 all settled files done, 3 settled with
failures (with --wait), 2 bad usage or jobs.yaml, 1 internal error.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from orchestrator import orchestration, planning, report
from orchestrator.config import load_config
from tvseg.config import parse_slurm_mem, parse_slurm_time
from tvseg.errors import ExitCode, TvsegError, UsageError
from tvseg.states import FileState
from tvseg.visual import BACKBONES, TrainSettings

if TYPE_CHECKING:
    from rich.console import Console

DEFAULT_JOBS = "jobs.yaml"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orchestrate", description="Run the TV segmentation pipeline over many recordings.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str, *first: tuple[str, dict]) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        for arg, options in first:  # positionals that come before JOBS_YAML
            p.add_argument(arg, **options)
        p.add_argument("jobs", nargs="?", default=DEFAULT_JOBS, metavar="JOBS_YAML",
                       help=f"the job description (default: ./{DEFAULT_JOBS})")
        return p

    p = command("submit", "Scan the inputs, add new ones to the manifest as shards, submit them as an array job.")
    p.add_argument("--dry-run", action="store_true", help="show the plan; write and submit nothing")
    p.add_argument("--wait", action="store_true", help="block with a progress bar until every file is settled")

    p = command("status", "Fold worker journals into the manifest, notice dead tasks, show progress.")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.add_argument("--watch", action="store_true", help="refresh until interrupted")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between refreshes with --watch (default 5)")

    p = command("retry", "Resubmit failed (retryable) and unfinished files, repacked into new shards.")
    p.add_argument("--dry-run", action="store_true", help="show the plan; change and submit nothing")
    p.add_argument("--wait", action="store_true", help="block with a progress bar until every file is settled")
    p.add_argument("--include-quarantined", action="store_true", help="also retry files quarantined as bad input")
    p.add_argument("--mem", type=_slurm_value(parse_slurm_mem), metavar="MEM",
                   help="SLURM memory per task for this retry, e.g. 32G (default: slurm.mem, raised by "
                        "slurm.grow-factor up to slurm.max-mem after tasks killed for memory)")
    p.add_argument("--time", type=_slurm_value(parse_slurm_time), metavar="TIME",
                   help="SLURM time limit for this retry, e.g. 08:00:00 (default: slurm.time, raised by "
                        "slurm.grow-factor up to slurm.max-time after tasks that timed out)")

    p = command("models", "Fill (fetch) or check (verify) the segmenter's model folder, by sha256.",
                ("action", {"choices": ["fetch", "verify"], "help": "fetch: fill the folder; verify: check it"}))
    p.add_argument("--dir", type=Path, help="the model folder (default: stage_settings.segment.model_dir of JOBS_YAML)")
    p.add_argument("--worker-python", metavar="PYTHON",
                   help="the worker environment's python, which converts the weights to ONNX with TensorFlow and "
                        "tf2onnx (default: this command's python)")

    command("cancel", "Cancel the run's queued and running tasks; their unfinished files go back to pending.")

    p = command("report", "Write one self-contained HTML report of the run (plots embedded) from the manifest.")
    p.add_argument("--out", type=Path, metavar="PATH", help="where to write it (default: <workdir>/report.html)")

    _classifier_parser(sub)
    return parser


def _classifier_parser(sub) -> None:
    text = "Build a training set from keyframes, train the keyframe classifier, evaluate it."
    p = sub.add_parser("classifier", help=text, description=text)
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    text = ("Copy the keyframes of finished files into OUT_DIR/<class>/ (unlabelled/ unless a sibling caption "
            "file labels them).")
    d = actions.add_parser("dataset", help=text, description=text)
    d.add_argument("jobs", metavar="JOBS_YAML", help="the run whose finished files to export")
    d.add_argument("out", type=Path, metavar="OUT_DIR", help="the data set folder (class folders inside)")
    d.add_argument("--title-seconds", type=float, default=20.0, metavar="S",
                   help="frames within S seconds of a caption's story start go to title_sequence/ (default 20)")
    text = "Train an image classifier on DATA_DIR's class folders; save it in MODEL_DIR."
    t = actions.add_parser("train", help=text, description=text)
    t.add_argument("data", type=Path, metavar="DATA_DIR", help="class folders of images (unlabelled/ is left out)")
    t.add_argument("--out", type=Path, required=True, metavar="MODEL_DIR", help="where to save the model")
    t.add_argument("--backbone", choices=BACKBONES, help="cnn: a small CNN from scratch (default); the others need "
                   "--backbone-weights")
    t.add_argument("--backbone-weights", metavar="FILE", help="a local weights file of the backbone without its top "
                   "(default backbone then: mobilenet_v3_small); nothing is ever downloaded")
    t.add_argument("--image-size", type=int, default=96, metavar="PX", help="the network's input, PX x PX (default 96)")
    t.add_argument("--epochs", type=int, default=30, help="at most this many epochs (default 30)")
    t.add_argument("--batch-size", type=int, default=32, help="images a step (default 32)")
    t.add_argument("--patience", type=int, default=5, help="early stopping: epochs without a better validation "
                   "loss (default 5)")
    t.add_argument("--test-fraction", type=float, default=0.2, help="held out for the report (default 0.2)")
    t.add_argument("--seed", type=int, default=0, help="of the split, the shuffling and the weights (default 0)")
    t.add_argument("--submit", metavar="JOBS_YAML", help="train as one job through this run's executor and "
                   "resources (SLURM: its mem, time and gpus), following its progress")
    text = "Print the metrics of MODEL_DIR's classifier on the labelled images of DATA_DIR."
    e = actions.add_parser("evaluate", help=text, description=text)
    e.add_argument("model", type=Path, metavar="MODEL_DIR", help="a folder made by 'classifier train'")
    e.add_argument("data", type=Path, metavar="DATA_DIR", help="class folders of images")
    e.add_argument("--json", action="store_true", help="print the report as JSON instead of tables")


def _slurm_value(parse):
    def check(text: str) -> str:
        try:
            parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return text

    return check


def _console(stderr: bool = False) -> Console:
    """A rich Console, imported when something is printed through one: `status --json`
    prints none, and rich's import is a tenth of its time."""
    from rich.console import Console  # noqa: PLC0415

    return Console(stderr=stderr, highlight=False)


def _to_stderr(label: str, colour: str, message: str) -> None:
    """``label: message`` on stderr, the label in bold ``colour``, the message never read as markup."""
    from rich.markup import escape  # noqa: PLC0415

    _console(stderr=True).print(f"[bold {colour}]{label}:[/] {escape(message)}", markup=True, soft_wrap=True)


def _warn(message: str) -> None:
    _to_stderr("warning", "yellow", message)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # Every command prints through rich but `status --json`, which prints one JSON object.
    out = None if args.command == "status" and args.json else _console()
    try:
        if args.command == "classifier":
            return int(_classifier(args, out))
        if args.command == "models" and args.dir is not None:
            return int(_models(None, args, out))  # a folder given: no jobs.yaml needed
        config = load_config(Path(args.jobs))
        return int(_COMMANDS[args.command](config, args, out))
    except TvsegError as exc:
        _to_stderr("error", "red", str(exc))
        return int(exc.exit_code)
    except KeyboardInterrupt:
        _console(stderr=True).print("interrupted")
        return int(ExitCode.INTERRUPTED)
    except Exception as exc:  # noqa: BLE001 - an internal error gets a message, not a traceback
        _to_stderr("internal error", "red", f"{type(exc).__name__}: {exc}")
        return int(ExitCode.INTERNAL)


def _submit(config, args, out: Console) -> ExitCode:
    plan = orchestration.plan_submit(config)
    n_bytes = f"{plan.new_bytes / 1e9:.2f} GB"
    out.print(f"{config.name}: {len(plan.new)} new file(s), {n_bytes}, in {plan.n_shards} new shard(s); "
              f"{plan.known} already in the manifest"
              + (f"; {len(plan.resubmit)} shard(s) left unsubmitted earlier" if plan.resubmit else ""))
    _advice(plan.advice, args.dry_run, out)
    if args.dry_run:
        out.print("dry run: nothing written, nothing submitted")
        return ExitCode.OK
    done = orchestration.submit(config, plan)
    if done.job_ids:
        out.print(f"submitted {len(done.job_ids)} array task(s): {_job_summary(done.job_ids)}")
    else:
        out.print("nothing to submit")
    return _wait(config, out) if args.wait else ExitCode.OK


def _status(config, args, out: Console | None) -> ExitCode:
    manifest = orchestration.open_manifest(config)
    try:
        while True:
            for message in orchestration.reconcile(config, manifest):
                _warn(message)
            snap = report.snapshot(manifest)
            if args.json:
                print(json.dumps(snap, default=str))
            else:
                if args.watch:
                    out.clear()
                out.print(report.render(snap, config.name))
            if not args.watch:
                return ExitCode.OK
            time.sleep(args.interval)
    finally:
        manifest.close()


def _retry(config, args, out: Console) -> ExitCode:
    if args.time is not None and parse_slurm_time(args.time) <= config.slurm.signal_delay:
        raise UsageError(f"--time {args.time} is not longer than slurm.signal-delay ({config.slurm.signal_delay} s)")
    manifest = orchestration.open_manifest(config)
    try:
        for message in orchestration.reconcile(config, manifest):
            _warn(message)
        plan = orchestration.plan_retry(config, manifest, args.include_quarantined, args.mem, args.time)
        by_state: dict[str, int] = {}
        for f in plan.files:
            by_state[f.state.value] = by_state.get(f.state.value, 0) + 1
        detail = ", ".join(f"{n} {s}" for s, n in sorted(by_state.items())) or "none"
        out.print(f"{config.name}: {len(plan.files)} file(s) to retry ({detail}) in {len(plan.shards)} new shard(s)"
                  + (f"; {len(plan.resubmit)} shard(s) left unsubmitted earlier" if plan.resubmit else ""))
        if plan.exhausted:
            out.print(f"{len(plan.exhausted)} failed file(s) have used all {config.worker.max_attempts} attempts "
                      "and are left alone (raise worker.max_attempts to try them again)")
        for note in plan.notes:
            out.print(note, markup=False)
        if plan.mem or plan.time:
            out.print(f"this retry asks for mem={plan.mem or config.slurm.mem} time={plan.time or config.slurm.time}")
        _advice(plan.advice, args.dry_run, out)
        if args.dry_run:
            for f in plan.files:
                out.print(f"  {f.state.value:<11} attempts={f.attempts} {f.path}", markup=False)
            out.print("dry run: nothing changed, nothing submitted")
            return ExitCode.OK
        done = orchestration.retry(config, manifest, plan)
        if done.job_ids:
            out.print(f"submitted {len(done.job_ids)} array task(s): {_job_summary(done.job_ids)}")
        else:
            out.print("nothing to retry")
    finally:
        manifest.close()
    return _wait(config, out) if args.wait else ExitCode.OK


def _advice(advice, dry_run: bool, out: Console) -> None:
    """The plan from what was measured (dry runs), and its warnings (always)."""
    if advice is None:
        return
    if dry_run:
        for line in planning.describe(advice):
            out.print(line, markup=False, soft_wrap=True)
    for warning in advice.warnings:
        _warn(warning)


def _wait(config, out: Console) -> ExitCode:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    manifest = orchestration.open_manifest(config)
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TextColumn("{task.fields[detail]}"), console=out, transient=False) as progress:
            bar = progress.add_task("settled", total=None, detail="")

            def show(counts: dict[FileState, int]) -> None:
                settled = counts[FileState.DONE] + counts[FileState.FAILED] + counts[FileState.QUARANTINED]
                detail = " ".join(f"{s.value}={n}" for s, n in counts.items() if n)
                progress.update(bar, total=sum(counts.values()), completed=settled, detail=detail)

            warned: set[str] = set()

            def warn(message: str) -> None:
                if message not in warned:
                    warned.add(message)
                    _warn(message)

            counts = orchestration.wait(config, manifest, show, on_warning=warn)
    finally:
        manifest.close()
    out.print(" ".join(f"{s.value}={n}" for s, n in counts.items()))
    return ExitCode.OK if orchestration.all_done(counts) else ExitCode.FAILURES


def _job_summary(job_ids: Sequence[str]) -> str:
    arrays = sorted({j.split("_")[0] for j in job_ids})
    return ", ".join(arrays) if len(arrays) <= 5 else f"{', '.join(arrays[:5])}, ... ({len(arrays)} jobs)"


def _cancel(config, args, out: Console) -> ExitCode:
    manifest = orchestration.open_manifest(config)
    try:
        for message in orchestration.reconcile(config, manifest):
            _warn(message)
        cancelled = orchestration.cancel(config, manifest, on_warning=_warn)
    finally:
        manifest.close()
    if cancelled:
        out.print(f"{config.name}: cancelled {len(cancelled)} task(s); their unfinished files are pending again "
                  "('orchestrate retry' runs them)")
    else:
        out.print(f"{config.name}: no queued or running task to cancel")
    return ExitCode.OK


def _report(config, args, out: Console) -> ExitCode:
    from orchestrator.run_report import build_report  # noqa: PLC0415 - matplotlib only for this command

    manifest = orchestration.open_manifest(config)
    try:
        for message in orchestration.reconcile(config, manifest):
            _warn(message)
        built = build_report(config, manifest, args.out or config.workdir / "report.html")
    finally:
        manifest.close()
    out.print(f"report: {built.path} ({built.files} file(s), {built.timelines} timeline(s), "
              f"{built.bytes / 1e6:.1f} MB, {built.seconds:.1f} s)", markup=False, soft_wrap=True)
    return ExitCode.OK


def _models(config, args, out: Console) -> ExitCode:
    from worker.models import ONNX_MANIFEST, fetch_models, verify_model_dir, verify_onnx  # noqa: PLC0415 - pip, hashlib

    folder = args.dir
    if folder is None:
        segment = config.worker.stage_settings.get("segment")
        if segment is None:
            raise UsageError(f"{config.source}: worker.stages has no 'segment' stage, so no model_dir; use --dir")
        folder = Path(segment.model_dir)
    if args.action == "fetch":
        fetch_models(folder, args.worker_python)
    digests = verify_model_dir(folder)
    if args.action == "fetch" or (folder / ONNX_MANIFEST).exists():
        digests.update(verify_onnx(folder))  # the ONNX backend's files, converted by fetch
    for name, digest in digests.items():
        out.print(f"{digest}  {folder / name}", markup=False, soft_wrap=True)
    out.print(f"model folder {folder}: every file matches its sha256", markup=False, soft_wrap=True)
    return ExitCode.OK


def _classifier(args, out: Console) -> ExitCode:
    from orchestrator import classifier  # noqa: PLC0415 - light; TensorFlow only inside train/evaluate

    if args.action == "dataset":
        config = load_config(Path(args.jobs))
        rep = classifier.export_dataset(config, args.out, args.title_seconds)
        out.print(classifier.dataset_table(rep))
        return ExitCode.OK
    if args.action == "evaluate":
        metrics = classifier.evaluate(args.model, args.data)
        if args.json:
            print(json.dumps(metrics))
        else:
            out.print(*classifier.metrics_tables(metrics, f"{args.model} on {args.data}"))
        return ExitCode.OK
    backbone = args.backbone or ("mobilenet_v3_small" if args.backbone_weights else "cnn")
    weights = str(Path(args.backbone_weights).resolve()) if args.backbone_weights else None
    try:
        settings = TrainSettings(backbone=backbone, backbone_weights=weights, image_size=args.image_size,
                                 epochs=args.epochs, batch_size=args.batch_size, patience=args.patience,
                                 test_fraction=args.test_fraction, seed=args.seed)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.submit is None:
        metrics = classifier.train_here(args.data, args.out, settings)
    else:
        run = classifier.submit_training(load_config(Path(args.submit)), args.data, args.out, settings)
        out.print(f"training submitted as one {run.executor} job; its files: {run.workdir}", markup=False)
        _wait_training(run, args.out, out)
        metrics = classifier.training_outcome(run, args.out)
    out.print(*classifier.metrics_tables(metrics, f"held-out test images of {args.data}"))
    out.print(f"model saved in {args.out}", markup=False, soft_wrap=True)
    return ExitCode.OK


def _wait_training(run, model_dir: Path, out: Console) -> None:
    """Follow the training job: its state, and the last epoch it reported."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from orchestrator.classifier import read_progress  # noqa: PLC0415

    manifest = orchestration.open_manifest(run)
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TextColumn("{task.fields[detail]}"), console=out, transient=False) as progress:
            bar = progress.add_task("epochs", total=None, detail="queued")
            shown = [0]

            def show(counts: dict[FileState, int]) -> None:
                state = next((s.value for s in (FileState.RUNNING, FileState.DONE, FileState.FAILED,
                                                FileState.QUARANTINED) if counts[s]), "queued")
                epoch = read_progress(model_dir)
                if epoch:
                    logs = " ".join(f"{k}={v:.3f}" for k, v in epoch["logs"].items())
                    progress.update(bar, total=epoch["epochs"], completed=epoch["epoch"], detail=f"{state} {logs}")
                    if epoch["epoch"] != shown[0]:  # a line an epoch: also where no bar is drawn (a log)
                        shown[0] = epoch["epoch"]
                        progress.console.print(f"epoch {epoch['epoch']}/{epoch['epochs']}: {logs}", markup=False)
                else:
                    progress.update(bar, detail=state)

            orchestration.wait(run, manifest, show, on_warning=_warn)
    finally:
        manifest.close()


_COMMANDS = {"submit": _submit, "status": _status, "retry": _retry, "models": _models, "cancel": _cancel,
             "report": _report}


if __name__ == "__main__":
    sys.exit(main())
