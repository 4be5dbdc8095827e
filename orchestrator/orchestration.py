"""What the commands do: submit, reconcile (fold journals, notice dead tasks), retry, wait.

Each function takes a validated JobConfig and works through the Manifest and an
Executor; the CLI only parses arguments and prints what these return.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Callable, Sequence

import tvseg
from orchestrator.environment import check_environment
from orchestrator.executor import Executor, auto_choice, executor_kind, make_executor
from orchestrator.inputs import scan_inputs
from orchestrator.manifest import FileRow, InputFile, JournalMark, Manifest
from orchestrator.planning import Advice, advise, measure
from orchestrator.sharding import plan_shards, shard_count
from orchestrator.task_state import TaskState
from tvseg.config import JobConfig, format_slurm_mem, format_slurm_time, parse_slurm_mem, parse_slurm_time
from tvseg.errors import ExecutorError
from tvseg.journal import (
    RECORD_KINDS,
    is_closed,
    journal_key,
    journals,
    last_task_end,
    read_heartbeat,
    read_records,
    shard_dir,
    shard_dirs,
)
from tvseg.states import FileState, ShardState
from tvseg.task import ShardTask, TaskFile

CANCEL_PATIENCE_S = 180.0  # how long `cancel` waits for cancelled tasks to stop
FOLD_RECORDS = 50_000  # journal records folded per transaction (at least one journal): bounded memory
# A folder's mtime is trusted to show a new journal only once it is this old: a journal made
# within the same timestamp tick as the folder's last change would not move it.
CLOSED_DIR_SETTLE_NS = 2_000_000_000


@dataclass(frozen=True)
class SubmitPlan:
    known: int  # inputs already in the manifest (not submitted again)
    new: list[InputFile]  # in path order
    new_bytes: int
    n_shards: int  # how many shards the new files make (the shards are packed only to submit)
    files_per_shard: int | None
    bytes_per_shard: int | None
    resubmit: list[int] = field(default_factory=list)  # shards an earlier submit left unsubmitted
    advice: Advice | None = None  # from what finished files measured, when any did

    @cached_property
    def shards(self) -> list[list[InputFile]]:
        return plan_shards(self.new, lambda f: f.size, lambda f: f.path, self.files_per_shard, self.bytes_per_shard)


@dataclass(frozen=True)
class RetryPlan:
    files: list[FileRow]
    exhausted: list[FileRow]  # failed and out of attempts: left alone
    shards: list[list[FileRow]]
    resubmit: list[int] = field(default_factory=list)
    mem: str | None = None  # SLURM resources for the retry when not those of jobs.yaml
    time: str | None = None
    notes: list[str] = field(default_factory=list)  # why they changed, or could not
    advice: Advice | None = None  # from what finished files measured, when any did


@dataclass(frozen=True)
class Submitted:
    shard_ids: list[int]
    job_ids: list[str]


def open_manifest(config: JobConfig, create: bool = False) -> Manifest:
    return Manifest(config.manifest_path, create=create)


# --- submit ------------------------------------------------------------------------------


def plan_submit(config: JobConfig) -> SubmitPlan:
    """Check the worker's environment, scan the inputs and count the shards of what the
    manifest does not know yet (packed only to submit, or to plan from measured rates).
    Writes nothing."""
    check_environment(config)
    inputs = scan_inputs(config)
    known: set[str] = set()
    resubmit: list[int] = []
    advice = None
    sharding = config.sharding
    manifest = open_manifest(config) if config.manifest_path.exists() else None
    try:
        if manifest is not None:
            known = manifest.known_paths()
            resubmit = manifest.created_shards()
        new = [f for f in inputs if f.path not in known] if known else inputs
        new_bytes = sum(f.size for f in new)
        plan = SubmitPlan(known=len(inputs) - len(new), new=new, new_bytes=new_bytes,
                          n_shards=shard_count(len(new), new_bytes, sharding.files_per_shard, sharding.bytes_per_shard),
                          files_per_shard=sharding.files_per_shard, bytes_per_shard=sharding.bytes_per_shard,
                          resubmit=resubmit)
        measured = measure(manifest) if manifest is not None and (new or resubmit) else None
        if measured is not None:
            sizes = [[f.size for f in shard] for shard in plan.shards] + manifest.shard_sizes(resubmit)
            advice = advise(config, measured, sizes, slurm=executor_kind(config) == "slurm")
    finally:
        if manifest is not None:
            manifest.close()
    return replace(plan, advice=advice) if advice is not None else plan


def submit(config: JobConfig, plan: SubmitPlan, executor: Executor | None = None) -> Submitted:
    """Record the plan's new shards, then submit them (and any left unsubmitted) as one array."""
    executor = executor or make_executor(config)
    manifest = open_manifest(config, create=True)
    try:
        new_ids = manifest.add_shards(plan.shards) if plan.shards else []
        return _submit_shards(config, manifest, executor, [*plan.resubmit, *new_ids], kind="submit")
    finally:
        manifest.close()


def _submit_shards(config: JobConfig, manifest: Manifest, executor: Executor, shard_ids: Sequence[int],
                   kind: str) -> Submitted:
    if not shard_ids:
        return Submitted([], [])
    tasks = [
        ShardTask(
            shard_id=shard_id,
            workdir=str(config.workdir),
            files=tuple(TaskFile(f.id, f.path, f.size, f.output_name) for f in manifest.shard_files(shard_id)),
            worker=config.worker,
            ssh=config.ssh,
            tvseg_version=tvseg.__version__,
        )
        for shard_id in shard_ids
    ]
    label = f"{config.name}-s{manifest.next_submission_id()}"
    try:
        job_ids = executor.submit(tasks, label)
    except ExecutorError as exc:
        lines = [str(exc), auto_choice(config, executor),
                 f"{len(shard_ids)} shard(s) stay unsubmitted in the manifest; "
                 "'orchestrate submit' or 'orchestrate retry' submits them again"]
        raise ExecutorError("\n".join(line for line in lines if line)) from exc
    manifest.record_submission(kind, executor.name, shard_ids, job_ids, executor.resources())
    return Submitted(list(shard_ids), job_ids)


# --- reconcile ---------------------------------------------------------------------------


def reconcile(config: JobConfig, manifest: Manifest, executor: Executor | None = None) -> list[str]:
    """Bring the manifest up to date: fold new journal records, end tasks that died.

    The executor is asked first, the journals read second: a task seen dead has
    written all it ever will, so its journal is complete when folded.  Returns
    warnings for the user (the executor could not answer: heartbeats decide).
    """
    executor = executor or make_executor(config)
    active = manifest.active_shards()
    states: dict[str, TaskState] = {}
    warnings: list[str] = []
    own = [s.job_id for s in active if s.job_id and s.executor == executor.name]
    if own:
        try:
            states = executor.states(own)
        except ExecutorError as exc:
            warnings.append(f"the {executor.name} executor cannot tell the state of its tasks ({exc}); "
                            "judging running tasks by their heartbeats")
    fold_journals(config.workdir, manifest, warnings.append)
    stale_after = max(5 * config.worker.heartbeat_seconds, 30.0)
    now = time.time()
    for shard in manifest.active_shards():
        state = states.get(shard.job_id or "")
        if state is not None and state.terminal:
            detail = f": {state.reason}" if state.reason else ""
            manifest.end_shard(shard.id, f"{state.state}{detail}")
        elif shard.state is ShardState.RUNNING and (state is None or state.state == "UNKNOWN"):
            beat = read_heartbeat(shard_dir(config.workdir, shard.id))
            last = beat.time if beat else (shard.started_at or now)
            if now - last > stale_after:
                manifest.end_shard(shard.id, f"LOST: no heartbeat for {now - last:.0f} s")
    return warnings


def fold_journals(workdir: Path, manifest: Manifest, on_warning: Callable[[str], None] = lambda message: None) -> int:
    """Apply every journal's records past the stored offset; returns records applied.

    Records of a kind this version does not know (a newer worker's) are skipped,
    with one warning per journal that holds some.  A closed journal is not read again;
    a folder whose newest journal is closed, and every older one ended, is not listed
    again while its mtime stays what it was then (a new attempt's journal moves it).
    """
    directories = shard_dirs(workdir)
    if not directories:
        return 0
    marks = manifest.journal_marks()
    unchanged_at = _closed_dir_mtimes(marks)
    settled_before = time.time_ns() - CLOSED_DIR_SETTLE_NS
    batch: list[tuple[int, str, list[dict], int, str | None]] = []
    closed_dirs: dict[str, int] = {}
    in_batch = 0
    applied = 0
    for shard_id, folder in directories:
        try:
            dir_mtime = os.stat(folder).st_mtime_ns  # before listing: a journal made later moves it
        except FileNotFoundError:
            continue
        if unchanged_at.get(os.path.basename(folder)) == dir_mtime:
            continue
        directory = Path(folder)
        ends: dict[str, str | None] = {}  # journal -> reason of its last task_end, oldest journal first
        for path in journals(directory):
            key = journal_key(path)
            mark = marks.get(key)
            offset = mark.offset if mark else 0
            ends[key] = mark.task_end if mark else None
            if is_closed(ends[key]) or path.stat().st_size <= offset:
                continue
            records, new_offset = read_records(path, offset)
            ends[key] = last_task_end(records) or ends[key]
            known = [r for r in records if isinstance(r, dict) and r.get("kind") in RECORD_KINDS]
            if len(known) < len(records):
                kinds = sorted({repr(r.get("kind")) if isinstance(r, dict) else "no kind" for r in records}
                               - {repr(k) for k in RECORD_KINDS})
                on_warning(f"{path}: skipped {len(records) - len(known)} record(s) of unknown kind "
                           f"{', '.join(kinds)} (written by a newer worker?)")
                records = known
            if new_offset != offset:
                batch.append((shard_id, key, records, new_offset, last_task_end(records)))
                applied += len(records)
                in_batch += len(records)
            if in_batch >= FOLD_RECORDS:  # a few large transactions (one fsync each), bounded memory
                manifest.apply_journals(batch)
                batch, in_batch = [], 0
        reasons = list(ends.values())
        if reasons and is_closed(reasons[-1]) and None not in reasons and dir_mtime < settled_before:
            closed_dirs.update(dict.fromkeys(ends, dir_mtime))
    if batch:
        manifest.apply_journals(batch)
    if closed_dirs:
        manifest.note_closed_dirs(closed_dirs)
    return applied


def _closed_dir_mtimes(marks: dict[str, JournalMark]) -> dict[str, int]:
    """Journal folder name -> the mtime it had when it was seen closed (folders whose known
    journals are all noted with the same mtime)."""
    found: dict[str, int | None] = {}
    for key, mark in marks.items():
        folder = key.split("/", 1)[0]
        found[folder] = mark.dir_mtime_ns if found.get(folder, mark.dir_mtime_ns) == mark.dir_mtime_ns else None
    return {folder: mtime for folder, mtime in found.items() if mtime is not None}


# --- retry -------------------------------------------------------------------------------


def plan_retry(config: JobConfig, manifest: Manifest, include_quarantined: bool, mem: str | None = None,
               time_limit: str | None = None) -> RetryPlan:
    """What retry would do.  ``mem``/``time_limit`` (SLURM values) override what jobs.yaml and
    the tasks' ends call for: after OUT_OF_MEMORY or TIMEOUT, the memory or time of that
    task times slurm.grow-factor, up to slurm.max-mem / slurm.max-time."""
    check_environment(config)
    files, exhausted = manifest.retry_candidates(config.worker.max_attempts, include_quarantined)
    shards = plan_shards(files, lambda f: f.size, lambda f: f.path,
                         config.sharding.files_per_shard, config.sharding.bytes_per_shard)
    notes: list[str] = []
    if files and (mem is None or time_limit is None):
        grown_mem, grown_time, notes = _grow(config, manifest.retry_causes())
        mem = mem if mem is not None else grown_mem
        time_limit = time_limit if time_limit is not None else grown_time
    resubmit = manifest.created_shards()
    advice = None
    measured = measure(manifest) if shards or resubmit else None
    if measured is not None:
        sizes = [[f.size for f in shard] for shard in shards] + manifest.shard_sizes(resubmit)
        advice = advise(config, measured, sizes, slurm=executor_kind(config) == "slurm", time_limit=time_limit,
                        mem=mem)
    return RetryPlan(files=files, exhausted=exhausted, shards=shards, resubmit=resubmit,
                     mem=mem, time=time_limit, notes=notes, advice=advice)


def _grow(config: JobConfig, causes: list[tuple[str, dict]]) -> tuple[str | None, str | None, list[str]]:
    """Memory and time for a retry after tasks ended OUT_OF_MEMORY or TIMEOUT (None: as configured)."""
    slurm = config.slurm
    limits = {  # SLURM word -> (resource, parse, format, configured, cap)
        "OUT_OF_MEMORY": ("mem", parse_slurm_mem, format_slurm_mem, slurm.mem, slurm.max_mem),
        "TIMEOUT": ("time", parse_slurm_time, format_slurm_time, slurm.time, slurm.max_time),
    }
    grown: dict[str, str | None] = {"mem": None, "time": None}
    notes: list[str] = []
    for word, (key, parse, fmt, configured, cap) in limits.items():
        used = [parse(res[key]) for reason, res in causes if reason.startswith(f"{word}:") and key in res]
        if not used:
            continue
        want = max(int(max(used) * slurm.grow_factor), parse(configured))
        option = f"slurm.max-{key}"
        if cap is None:
            notes.append(f"{word}: {option} is not set, so {key} stays {configured} (or give retry --{key})")
        elif max(used) >= parse(cap):
            notes.append(f"{word}: {key} was already at {option} ({cap}); it stays there (or give retry --{key})")
            grown[key] = cap
        else:
            grown[key] = fmt(min(want, parse(cap)))
            notes.append(f"{word}: {key} raised from {fmt(max(used))} to {grown[key]} "
                         f"(x{slurm.grow_factor:g}, at most {option} {cap})")
    return grown["mem"], grown["time"], notes


def retry(config: JobConfig, manifest: Manifest, plan: RetryPlan, executor: Executor | None = None) -> Submitted:
    """Repack and submit the plan's files; with the plan's memory and time unless an executor is given."""
    if plan.mem is not None or plan.time is not None:
        slurm = dataclasses.replace(config.slurm, mem=plan.mem or config.slurm.mem, time=plan.time or config.slurm.time)
        config = dataclasses.replace(config, slurm=slurm)
    executor = executor or make_executor(config)
    new_ids = manifest.reshard([[f.id for f in group] for group in plan.shards]) if plan.shards else []
    return _submit_shards(config, manifest, executor, [*plan.resubmit, *new_ids], kind="retry")


# --- cancel ------------------------------------------------------------------------------


def cancel(config: JobConfig, manifest: Manifest, executor: Executor | None = None,
           patience_s: float = CANCEL_PATIENCE_S,
           on_warning: Callable[[str], None] = lambda message: None) -> list[int]:
    """Cancel every active task of this run; their shards end, their unfinished files go back
    to pending.  Returns the ids of the shards cancelled.

    A cancelled task finishes the file in hand if it can: the journals are folded once the
    executor says the tasks are over (or after ``patience_s``), so that a file finished
    meanwhile counts as done, not as pending to be run again.
    """
    executor = executor or make_executor(config)
    shards = [s for s in manifest.active_shards() if s.job_id and s.executor == executor.name]
    job_ids = [s.job_id for s in shards]
    executor.cancel(job_ids)
    deadline = time.monotonic() + patience_s
    while job_ids and time.monotonic() < deadline:
        try:
            states = executor.states(job_ids)
        except ExecutorError:
            break  # cannot tell: what the journals hold now is what counts
        if all(j in states and states[j].terminal for j in job_ids):
            break
        time.sleep(1.0)
    fold_journals(config.workdir, manifest, on_warning)
    still = {s.id for s in manifest.active_shards()}
    manifest.cancel_shards([s.id for s in shards if s.id in still], "CANCELLED: by orchestrate cancel")
    return [s.id for s in shards]


# --- wait --------------------------------------------------------------------------------


def wait(config: JobConfig, manifest: Manifest, on_progress: Callable[[dict[FileState, int]], None],
         poll_seconds: float = 2.0, executor: Executor | None = None,
         on_warning: Callable[[str], None] = lambda message: None) -> dict[FileState, int]:
    """Reconcile until no shard is active; returns the final counts by state."""
    executor = executor or make_executor(config)
    while True:
        for message in reconcile(config, manifest, executor):
            on_warning(message)
        counts = manifest.counts()
        on_progress(counts)
        if not manifest.active_shards():
            return counts
        time.sleep(poll_seconds)


def all_done(counts: dict[FileState, int]) -> bool:
    """Every file is done: the exit-0 condition of a wait."""
    return sum(counts.values()) == counts[FileState.DONE]
