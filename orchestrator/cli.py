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
from typing import Sequence

from rich.console import Console

from orchestrator import orchestration, report
from orchestrator.config import load_config
from tvseg.errors import ExitCode, TvsegError
from tvseg.states import FileState

DEFAULT_JOBS = "jobs.yaml"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orchestrate", description="Run the TV segmentation pipeline over many recordings.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    out = Console(highlight=False)
    err = Console(stderr=True, highlight=False)
    try:
        config = load_config(Path(args.jobs))
        return int(_COMMANDS[args.command](config, args, out))
    except TvsegError as exc:
        err.print(f"[bold red]error:[/] {exc}", markup=True, soft_wrap=True)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted")
        return int(ExitCode.INTERRUPTED)
    except Exception as exc:  # noqa: BLE001 - an internal error gets a message, not a traceback
        err.print(f"[bold red]internal error:[/] {type(exc).__name__}: {exc}", markup=True, soft_wrap=True)
        return int(ExitCode.INTERNAL)


def _submit(config, args, out: Console) -> ExitCode:
    plan = orchestration.plan_submit(config)
    n_bytes = f"{plan.new_bytes / 1e9:.2f} GB"
    out.print(f"{config.name}: {plan.new_files} new file(s), {n_bytes}, in {len(plan.shards)} new shard(s); "
              f"{plan.known} already in the manifest"
              + (f"; {len(plan.resubmit)} shard(s) left unsubmitted earlier" if plan.resubmit else ""))
    if args.dry_run:
        out.print("dry run: nothing written, nothing submitted")
        return ExitCode.OK
    done = orchestration.submit(config, plan)
    if done.job_ids:
        out.print(f"submitted {len(done.job_ids)} array task(s): {_job_summary(done.job_ids)}")
    else:
        out.print("nothing to submit")
    return _wait(config, out) if args.wait else ExitCode.OK


def _status(config, args, out: Console) -> ExitCode:
    manifest = orchestration.open_manifest(config)
    try:
        while True:
            orchestration.reconcile(config, manifest)
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
    manifest = orchestration.open_manifest(config)
    try:
        orchestration.reconcile(config, manifest)
        plan = orchestration.plan_retry(config, manifest, args.include_quarantined)
        by_state: dict[str, int] = {}
        for f in plan.files:
            by_state[f.state.value] = by_state.get(f.state.value, 0) + 1
        detail = ", ".join(f"{n} {s}" for s, n in sorted(by_state.items())) or "none"
        out.print(f"{config.name}: {len(plan.files)} file(s) to retry ({detail}) in {len(plan.shards)} new shard(s)"
                  + (f"; {len(plan.resubmit)} shard(s) left unsubmitted earlier" if plan.resubmit else ""))
        if plan.exhausted:
            out.print(f"{len(plan.exhausted)} failed file(s) have used all {config.worker.max_attempts} attempts "
                      "and are left alone (raise worker.max_attempts to try them again)")
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

            counts = orchestration.wait(config, manifest, show)
    finally:
        manifest.close()
    out.print(" ".join(f"{s.value}={n}" for s, n in counts.items()))
    return ExitCode.OK if orchestration.all_done(counts) else ExitCode.FAILURES


def _job_summary(job_ids: Sequence[str]) -> str:
    arrays = sorted({j.split("_")[0] for j in job_ids})
    return ", ".join(arrays) if len(arrays) <= 5 else f"{', '.join(arrays[:5])}, ... ({len(arrays)} jobs)"


_COMMANDS = {"submit": _submit, "status": _status, "retry": _retry}


if __name__ == "__main__":
    sys.exit(main())
