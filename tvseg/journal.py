"""Journals: how a worker reports, without touching the database.

Compute nodes share a network filesystem where SQLite locking is unreliable, so a
worker never opens the manifest.  Each array-task attempt appends JSON lines to its
own journal file (flushed and fsync'd per record) and rewrites a small heartbeat
file; the orchestrator folds journals into the manifest, idempotently, by byte
offset.

Layout under <workdir>/journals/::

    shard-<id>/attempt-<n>.jsonl   one per task attempt (a requeue is a new attempt)
    shard-<id>/heartbeat.json      {"host", "pid", "time", "journal"}, rewritten atomically

Record kinds (every record has "kind" and "time"; a reader skips kinds it does not
know, with a warning, so that a newer worker never bricks an older orchestrator)::

    task_start  shard, attempt, host, pid, job_id, skipped (file ids settled earlier),
                python (the worker's interpreter), tvseg (its version)
    file_start  file_id
    file_end    file_id, state (done|failed|quarantined), error_class, error,
                outputs, facts, seconds {"stage": s, "total": s},
                staging {"bytes", "seconds", "tries", and for rsync "literal": the bytes that came
                over the wire, fewer when a retry resumed a partial copy} (absent if nothing was staged)
                peak_rss {"stage": bytes} (the worker process's peak during each stage; newer workers)
    task_end    reason (complete|stopped|requeued|error), detail; "requeued": the scheduler runs
                the task again (a later task_end of the same attempt replaces it);
                peak_rss: bytes, the worker process's peak over the attempt (newer workers)

A journal is closed once its last task_end is not a requeue: its writer appends nothing
more.  After a requeue, the scheduler's next attempt writes a new journal.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import orjson

JOURNALS_DIR = "journals"
RECORD_KINDS = frozenset({"task_start", "file_start", "file_end", "task_end"})  # what a reader may rely on
_SHARD_DIR = re.compile(r"^shard-(\d+)$")
_ATTEMPT = re.compile(r"^attempt-(\d+)\.jsonl$")


def shard_dir(workdir: Path, shard_id: int) -> Path:
    return workdir / JOURNALS_DIR / f"shard-{shard_id}"


def shard_dirs(workdir: Path) -> list[tuple[int, str]]:
    """(shard id, folder path) of every shard that has journals under ``workdir``, by id.

    Plain strings, and the file type that comes with the listing: no object and no stat
    per folder (an archive has tens of thousands)."""
    try:
        with os.scandir(workdir / JOURNALS_DIR) as entries:
            found = [(int(m.group(1)), e.path) for e in entries if (m := _SHARD_DIR.match(e.name)) and e.is_dir()]
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(found)


def journal_key(path: Path) -> str:
    """How the manifest names a journal (for its folded offset): ``shard-<id>/attempt-<n>.jsonl``."""
    return f"{path.parent.name}/{path.name}"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write so that a reader sees the old content or the new, never half of it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    """``atomic_write_bytes`` of ``text`` in UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8"))


class JournalWriter:
    """Append-only, one record per line, each made durable before the call returns."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        attempt = 0
        while True:  # O_EXCL: two attempts never share a journal, even after a requeue race
            path = directory / f"attempt-{attempt}.jsonl"
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
                break
            except FileExistsError:
                attempt += 1
        self.attempt = attempt
        self.path = path
        self._fh = os.fdopen(fd, "a", encoding="utf-8")

    def write(self, kind: str, **fields: Any) -> None:
        record = {"kind": kind, "time": time.time(), **fields}
        self._fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def heartbeat(self) -> None:
        beat = {"host": socket.gethostname(), "pid": os.getpid(), "time": time.time(), "journal": self.path.name}
        atomic_write_text(self.directory / "heartbeat.json", json.dumps(beat))

    def close(self) -> None:
        self._fh.close()


def read_records(path: Path, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Complete records after byte ``offset``, and the offset after the last of them.

    A trailing line without its newline (a writer killed mid-write) is left unread.
    """
    with open(path, "rb") as fh:
        fh.seek(offset)
        data = fh.read()
    end = data.rfind(b"\n") + 1
    lines = [line for line in data[:end].splitlines() if line.strip()]
    return _parse_lines(lines), offset + end


def _parse_lines(lines: list[bytes]) -> list[Any]:
    """One JSON value per line; a line that is not JSON is skipped.

    All lines are parsed as one JSON array, by orjson (one call, not one per line, and
    at about 1.5x the standard library's rate); only if that fails, or finds more values
    than lines, are they parsed one by one - by the standard library where orjson refuses
    what it accepts (NaN, integers beyond 64 bits, lone surrogates).
    """
    try:
        values = orjson.loads(b"[" + b",".join(lines) + b"]")
        if len(values) == len(lines):
            return values
    except orjson.JSONDecodeError:
        pass
    records = []
    for line in lines:
        try:
            records.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            try:
                records.append(json.loads(line))
            except ValueError:
                continue  # a torn line from a crash, completed by garbage: skip, never stall
    return records


def journals(directory: Path) -> Iterator[Path]:
    """The attempt journals of one shard, oldest first."""
    found = [(int(m.group(1)), directory / name) for name in os.listdir(directory) if (m := _ATTEMPT.match(name))]
    return iter(p for _, p in sorted(found))


def last_task_end(records: list[Any]) -> str | None:
    """The reason of the last task_end among ``records`` (None: there is none)."""
    for record in reversed(records):
        if isinstance(record, dict) and record.get("kind") == "task_end":
            return str(record.get("reason"))
    return None


def is_closed(task_end: str | None) -> bool:
    """Whether a journal whose last task_end has this reason is closed (appended to no more)."""
    return task_end is not None and task_end != "requeued"


def settled_in_earlier_attempts(directory: Path) -> set[int]:
    """File ids that an earlier attempt of this shard already recorded an end for."""
    settled: set[int] = set()
    for path in journals(directory):
        records, _ = read_records(path)
        settled.update(r["file_id"] for r in records if r["kind"] == "file_end")
    return settled


@dataclass(frozen=True)
class Heartbeat:
    host: str
    pid: int
    time: float
    journal: str


def read_heartbeat(directory: Path) -> Heartbeat | None:
    try:
        data = json.loads((directory / "heartbeat.json").read_text(encoding="utf-8"))
        return Heartbeat(host=data["host"], pid=int(data["pid"]), time=float(data["time"]), journal=data["journal"])
    except (FileNotFoundError, ValueError, KeyError):
        return None
