"""SLURM: the one module that knows sbatch, sacct, scontrol and scancel.

Submission.  The sbatch script is made by a pure function (`sbatch_script`, tested
against a golden file) and submitted with sbatch itself, so that a submission can be
split into arrays of at most MaxArraySize tasks (read from ``scontrol show config``),
each indexing from 0, and so that sbatch failures are retried and reported with
sbatch's own message.  Running a task is submitit's business: each task is a pickled
``submitit`` DelayedSubmission of ``worker.main.run_shard``, loaded on the node by
``python -m submitit.core._submit`` (submitit's job environment, result pickles and
requeue).  sbatch runs in ``<workdir>/logs``, which becomes the job's working
directory, so the script names no path but the Python interpreter's::

    <workdir>/logs/<label>.sbatch                  the script of one array
    <workdir>/logs/<array id>_<index>.log          stdout and stderr of one task (all attempts)
    <workdir>/logs/submitit/<array id>_<index>_submitted.pkl, ..._0_result.pkl

With an array-parallelism throttle, the arrays of one submission run one after the
other (``--dependency=afterany``) so that the throttle holds for the submission.

The time limit: SLURM sends the batch shell (the worker, which ``exec`` made it) USR2
``signal-delay`` seconds before the limit; the worker finishes the file in hand and
has itself requeued.

Reconciliation.  One ``sacct`` call per refresh covers every array asked about; its
states map onto TaskState.  Without cgroups SLURM reports a memory kill as FAILED
with signal 9: with MaxRSS at the requested memory this module calls it
OUT_OF_MEMORY, as SLURM does with cgroups.
"""

from __future__ import annotations

import os
import re
import sys
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Sequence

from orchestrator.environment import DETECT_RUNTIME, RUNTIME_WORD, Word, interpreter, shell_join
from orchestrator.task_state import TaskState
from tvseg.config import JobConfig, SlurmConfig, format_slurm_mem, parse_size
from tvseg.errors import ExecutorError
from tvseg.journal import atomic_write_text
from tvseg.slurm_client import backoff, call, is_transient, message, query
from tvseg.task import REQUEUE_SIGNAL, ShardTask

SUBMITIT_DIR = "submitit"  # under <workdir>/logs
SBATCH_ATTEMPTS = 5
SACCT_FIELDS = ("JobID", "State", "ExitCode", "DerivedExitCode", "MaxRSS", "ReqMem", "AllocCPUS", "Timelimit",
                "NodeList", "End")
STOPPING_MARGIN_S = 5.0  # after End + KillWait, for the last journal writes to reach the shared filesystem
TERMINAL = frozenset({"COMPLETED", "FAILED", "TIMEOUT", "OUT_OF_MEMORY", "CANCELLED", "PREEMPTED", "NODE_FAIL",
                      "BOOT_FAIL", "DEADLINE", "REVOKED"})
ACTIVE = frozenset({"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SUSPENDED",
                    "COMPLETING", "CONFIGURING", "SIGNALING", "STAGE_OUT", "STOPPED", "SPECIAL_EXIT",
                    "RESV_DEL_HOLD"})
MEMORY_KILL_RSS_FRACTION = 0.95  # MaxRSS is sampled: a kill for memory shows it at (or past) the request
_ARRAY_RANGE = re.compile(r"^(\d+)_\[([\d,\-]+)(?:%\d+)?\]$")


# --- the sbatch script (pure) ------------------------------------------------------------


@dataclass(frozen=True)
class ArraySpec:
    """One sbatch array: its name, its number of tasks (indexes 0..size-1), what it waits for."""

    name: str
    size: int
    depends_on: str | None = None  # an array job id to start after (all its tasks ended)


def array_chunks(n_tasks: int, max_array_size: int) -> list[range]:
    """Task positions per array: MaxArraySize caps an array's index, so at most that many each."""
    return [range(start, min(start + max_array_size, n_tasks)) for start in range(0, n_tasks, max_array_size)]


def sbatch_script(spec: ArraySpec, slurm: SlurmConfig, python: Sequence[Word]) -> str:
    """The sbatch script of one array.  Values were validated by the config loader (no line
    breaks, not both kinds of quote); sbatch itself strips the quotes put around a value.
    ``python``: the words that start the worker's Python (orchestrator/environment.py); its
    last line execs them, after the ``slurm.setup`` lines."""
    throttle = f"%{min(slurm.array_parallelism, spec.size)}" if slurm.array_parallelism else ""
    options: list[tuple[str, Any]] = [
        ("job-name", spec.name),
        ("array", f"0-{spec.size - 1}{throttle}"),
        ("output", "%A_%a.log"),
        ("open-mode", "append"),  # a requeued attempt adds to the log of the first
        ("requeue", ""),
        ("signal", f"B:{REQUEUE_SIGNAL}@{slurm.signal_delay}"),
        ("time", slurm.time),
        ("mem", slurm.mem),
        ("cpus-per-task", slurm.cpus_per_task),
    ]
    if slurm.gpus:
        options.append(("gres", f"gpu:{slurm.gpus}"))
    for option in ("partition", "account", "qos", "constraint"):
        if getattr(slurm, option) is not None:
            options.append((option, getattr(slurm, option)))
    if spec.depends_on:
        options.append(("dependency", f"afterany:{spec.depends_on}"))
    options += list(slurm.extra_sbatch.items())  # last: an extra option overrides one above
    lines = [
        "#!/bin/bash",
        "# A tvseg array, made by orchestrator/slurm.py; sbatch runs it in <workdir>/logs.",
        "# Task i loads submitit/<array id>_<i>_submitted.pkl and runs that shard.",
        *(_directive(option, value) for option, value in options),
        "export SUBMITIT_EXECUTOR=slurm",
        *slurm.setup,
        *(DETECT_RUNTIME if RUNTIME_WORD in python else []),
        "exec " + shell_join([*python, "-u", "-m", "submitit.core._submit", SUBMITIT_DIR]),
        "",
    ]
    return "\n".join(lines)


def _directive(option: str, value: Any) -> str:
    text = str(value)
    if text == "":
        return f"#SBATCH --{option}"
    if re.search(r"[\s'\"]", text):
        text = f'"{text}"' if '"' not in text else f"'{text}'"
    return f"#SBATCH --{option}={text}"


# --- sacct output -> task states (pure) --------------------------------------------------


def parse_sacct(text: str, job_ids: Sequence[str], now: datetime, stopping_s: float) -> dict[str, TaskState]:
    """Map ``sacct --parsable2 --noheader --format=SACCT_FIELDS`` output onto the asked array tasks.

    Tasks that never started show as one row for a range of indexes (``12_[3-9%2]``,
    pending or cancelled); steps (``12_3.batch``) carry MaxRSS and the signal of a kill.
    Tasks sacct does not list (not yet recorded) are left out.  SLURM records the end
    of a cancelled or timed-out task when it signals it, and kills it only KillWait
    later: until ``stopping_s`` after its End (``now`` being sacct's local time) a
    task in a final state is reported as not terminal, for it may still write.
    """
    tasks: dict[str, dict[str, str]] = {}
    steps: dict[str, list[dict[str, str]]] = {}
    ranges: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        row = dict(zip(SACCT_FIELDS, line.split("|")))
        job, dot, _step = row["JobID"].partition(".")
        if dot:
            steps.setdefault(job, []).append(row)
            continue
        match = _ARRAY_RANGE.match(job)
        if match:
            for index in _expand(match.group(2)):
                ranges[f"{match.group(1)}_{index}"] = row
        else:
            tasks[job] = row
    found = {}
    for job_id in job_ids:
        row = tasks.get(job_id) or ranges.get(job_id)
        if row is not None:
            state = _task_state(job_id, row, steps.get(job_id, []))
            if state.terminal and _end(row["End"]) + timedelta(seconds=stopping_s) > now:
                state = TaskState(job_id, state.state, terminal=False, reason=f"stopping ({state.reason})")
            found[job_id] = state
    return found


def _end(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:  # "Unknown": it never ran
        return datetime.min


def _expand(ranges: str) -> list[int]:
    out: list[int] = []
    for part in ranges.split(","):
        low, _, high = part.partition("-")
        out.extend(range(int(low), int(high or low) + 1))
    return out


def _task_state(job_id: str, row: dict[str, str], steps: list[dict[str, str]]) -> TaskState:
    word, _, by = row["State"].partition(" by ")
    rss = max((_bytes(s["MaxRSS"]) for s in steps), default=0)
    requested = _bytes(row["ReqMem"], cpus=int(row["AllocCPUS"] or 0))
    usage = f"MaxRSS {format_slurm_mem(rss)} of {format_slurm_mem(requested)} requested" if requested else ""
    if word == "OUT_OF_MEMORY" or any(s["State"] == "OUT_OF_MEMORY" for s in steps):
        return TaskState(job_id, "OUT_OF_MEMORY", terminal=True, reason=f"killed for memory: {usage}".rstrip(": "))
    killed = any(_signal(r["ExitCode"]) == 9 for r in (row, *steps)) or _signal(row["DerivedExitCode"]) == 9
    if word in ("FAILED", "CANCELLED") and killed and requested and rss >= MEMORY_KILL_RSS_FRACTION * requested:
        return TaskState(job_id, "OUT_OF_MEMORY", terminal=True,
                         reason=f"killed by signal 9 with {usage} (a memory kill, without cgroups)")
    if word not in TERMINAL:
        reason = "requeued" if word == "REQUEUED" else "" if word in ACTIVE else f"unrecognised SLURM state {word}"
        return TaskState(job_id, word, terminal=False, reason=reason)
    code, signal = _exit(row["ExitCode"])
    reasons = {
        "COMPLETED": "",
        "FAILED": f"killed by signal {signal}" if signal else f"exit code {code}",
        "TIMEOUT": f"time limit {row['Timelimit']} reached",
        "CANCELLED": f"cancelled by uid {by}" if by else "cancelled",
        "PREEMPTED": "preempted by another job",
        "NODE_FAIL": f"node failure ({row['NodeList']})",
        "BOOT_FAIL": f"node boot failure ({row['NodeList']})",
        "DEADLINE": "deadline reached",
        "REVOKED": "revoked by a federated cluster",
    }
    return TaskState(job_id, word, terminal=True, reason=reasons[word])


def _exit(text: str) -> tuple[int, int]:
    code, _, signal = text.partition(":")
    return (int(code) if code.isdigit() else 0), (int(signal) if signal.isdigit() else 0)


def _signal(text: str) -> int:
    return _exit(text)[1]


def _bytes(text: str, cpus: int = 1) -> int:
    """A sacct size ('136284K', '1.50G', '4000Mc' per CPU, '16Gn' per node) -> bytes; 0 if empty."""
    text = text.strip()
    per = text[-1:] if text[-1:] in ("n", "c") else ""
    try:
        size = parse_size(text[: len(text) - len(per)])
    except ValueError:
        return 0
    return size * max(cpus, 1) if per == "c" else size


class SlurmExecutor:
    """Submits shards as SLURM arrays and asks sacct about them (see the module docstring)."""

    name = "slurm"

    def __init__(self, config: JobConfig, python: str = sys.executable) -> None:
        self.config = config
        self.python = python
        self._settings: dict[str, str] | None = None

    def _setting(self, key: str) -> int:
        """A number from ``scontrol show config`` (read once): MaxArraySize, KillWait."""
        if self._settings is None:
            out = query(["scontrol", "show", "config"])
            self._settings = dict(re.findall(r"^(\w+)\s*=\s*(\d+)(?: sec)?\s*$", out, re.MULTILINE))
        if key not in self._settings:
            raise ExecutorError(f"'scontrol show config' does not show {key}")
        return int(self._settings[key])

    def max_array_size(self) -> int:
        return self._setting("MaxArraySize")

    def submit(self, tasks: Sequence[ShardTask], label: str) -> list[str]:
        from submitit.core.utils import DelayedSubmission  # noqa: PLC0415 - keep `status` free of submitit
        from worker.main import run_shard  # noqa: PLC0415

        logs = self.config.logs_dir
        folder = logs / SUBMITIT_DIR
        folder.mkdir(parents=True, exist_ok=True)
        chunks = array_chunks(len(tasks), self.max_array_size())
        arrays: list[str] = []
        job_ids: list[str] = []
        pickles: list[Path] = []
        try:
            for k, chunk in enumerate(chunks):
                name = label if len(chunks) == 1 else f"{label}.{k + 1}"
                after = arrays[-1] if arrays and self.config.slurm.array_parallelism else None
                script = logs / f"{name}.sbatch"
                atomic_write_text(script, sbatch_script(ArraySpec(name, len(chunk), after), self.config.slurm,
                                                        interpreter(self.config, self.python)))
                pickles = []
                for i in chunk:  # pickled before sbatch: a task may start at once (submitit waits for its file)
                    pickles.append(folder / f".{uuid.uuid4().hex}.pkl")
                    DelayedSubmission(run_shard, tasks[i]).dump(pickles[-1])
                array_id = self._sbatch(script, name)
                arrays.append(array_id)
                for index, path in enumerate(pickles):
                    path.rename(folder / f"{array_id}_{index}_submitted.pkl")
                pickles = []
                job_ids += [f"{array_id}_{index}" for index in range(len(chunk))]
        except ExecutorError as exc:
            for path in pickles:
                path.unlink(missing_ok=True)
            if not arrays:
                raise
            try:  # all or nothing: the shards stay unsubmitted in the manifest
                self.cancel(arrays)
                fate = "have been cancelled"
            except ExecutorError as cancel_exc:
                fate = f"could not be cancelled ({cancel_exc}): cancel them with scancel"
            raise ExecutorError(f"{exc}\n(array(s) {', '.join(arrays)}, submitted before in this submission, "
                                f"{fate})") from exc
        return job_ids

    def _sbatch(self, script: Path, name: str) -> str:
        """Submit one script; the array job id.  A transient failure may hide an accepted job
        (the answer was lost): before trying again, look for it by name and folder."""
        last = ""
        for attempt in range(SBATCH_ATTEMPTS):
            if attempt:
                backoff(attempt)
                found = self._queued_as(name, script.parent)
                if found:
                    return found
                if found is None:
                    continue  # cannot tell whether it was accepted: do not risk a second array
            proc = call(["sbatch", "--parsable", script.name], cwd=script.parent)
            if proc.returncode == 0:
                job = proc.stdout.strip().split(";")[0]
                if job.isdigit():
                    return job
                raise ExecutorError(f"sbatch gave no job id for array {name} (output: {proc.stdout.strip()!r}; "
                                    f"{message(proc)})")
            last = message(proc)
            if not is_transient(last):
                raise ExecutorError(f"sbatch rejected array {name}: {last}")
        raise ExecutorError(f"sbatch failed {SBATCH_ATTEMPTS} times for array {name}; the last time: {last}")

    @staticmethod
    def _queued_as(name: str, folder: Path) -> str | None:
        """The array job id squeue shows with this name, submitted from this folder; "" if
        none, None if squeue cannot say."""
        proc = call(["squeue", "--noheader", f"--name={name}", "--format=%F|%Z"])
        if proc.returncode != 0:
            return None
        for line in proc.stdout.splitlines():
            array_id, _, workdir = line.strip().partition("|")
            if array_id.isdigit() and os.path.realpath(workdir) == os.path.realpath(folder):
                return array_id
        return ""

    def states(self, job_ids: Sequence[str]) -> dict[str, TaskState]:
        if not job_ids:
            return {}
        arrays = sorted({j.split("_")[0] for j in job_ids}, key=int)
        out = query(["sacct", "--noheader", "--parsable2", f"--format={','.join(SACCT_FIELDS)}",
                      f"--jobs={','.join(arrays)}"])
        return parse_sacct(out, job_ids, datetime.now(), self._setting("KillWait") + STOPPING_MARGIN_S)

    def cancel(self, job_ids: Sequence[str]) -> None:
        if job_ids:
            query(["scancel", *job_ids])

    def resources(self) -> dict[str, Any]:
        s = self.config.slurm
        return {
            "executor": self.name, "time": s.time, "mem": s.mem, "cpus_per_task": s.cpus_per_task, "gpus": s.gpus,
            "partition": s.partition, "account": s.account, "qos": s.qos, "constraint": s.constraint,
            "array_parallelism": s.array_parallelism, "signal_delay": s.signal_delay,
            "extra_sbatch": dict(s.extra_sbatch),
        }
