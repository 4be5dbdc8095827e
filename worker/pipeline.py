"""The producer/consumer at the heart of a worker.

A producer thread stages inputs to scratch into a queue bounded by count and by the
scratch byte budget; the consumer (the calling thread) runs the stages on each
staged file in order and journals the outcome.  A staged copy is deleted as soon as
its file is done or failed, so memory and scratch stay flat however long the shard.

On stop (a signal), the producer stages nothing more, the consumer finishes the file
in hand and discards what is queued; files never reached are not journaled and so
stay pending in the manifest.
"""

from __future__ import annotations

import queue
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from tvseg.errors import BadInput, FileError, RetryableError
from tvseg.journal import JournalWriter
from tvseg.states import FileState
from tvseg.task import TaskFile
from worker.memory import PeakMemory
from worker.stages import FileContext, Stage, StageResult
from worker.staging import ByteBudget, CopyStager, Transfer


@dataclass(frozen=True)
class Staged:
    """One queue item: a file on scratch, or the reason it could not get there."""

    file: TaskFile
    path: Path | None
    size: int  # bytes held against the budget
    seconds: float
    error: FileError | None = None
    transfer: Transfer | None = None


_END = None  # the producer's last item


@dataclass
class Summary:
    outcomes: dict[str, int] = field(default_factory=lambda: {s.value: 0 for s in FileState})
    stopped: bool = False


def classify(exc: BaseException) -> FileState:
    """Retry policy, outside the loop: a bad input is permanent, anything else retryable."""
    if isinstance(exc, BadInput):
        return FileState.QUARANTINED
    return FileState.FAILED


class Pipeline:
    def __init__(
        self,
        files: Sequence[TaskFile],
        stages: Sequence[Stage],
        stager: CopyStager,
        journal: JournalWriter,
        outputs_root: Path,
        queue_depth: int,
        budget: ByteBudget,
        stop: threading.Event,
        memory: PeakMemory | None = None,
    ) -> None:
        self.files = files
        self.stages = stages
        self.stager = stager
        self.journal = journal
        self.outputs_root = outputs_root
        self.budget = budget
        self.stop = stop
        self.memory = memory or PeakMemory()
        self.queue: queue.Queue[Staged | None] = queue.Queue(maxsize=queue_depth)

    def run(self) -> Summary:
        summary = Summary()
        producer = threading.Thread(target=self._produce, name="tvseg-stager", daemon=True)
        producer.start()
        try:
            while (item := self.queue.get()) is not _END:
                if self.stop.is_set():
                    self._release(item)  # not reached: stays pending
                    continue
                state = self._consume(item)
                summary.outcomes[state.value] += 1
        finally:
            self.stop.set()  # on an exception too: the producer must not wait on a full queue
            while producer.is_alive() or not self.queue.empty():
                try:
                    item = self.queue.get(timeout=0.1)
                except queue.Empty:
                    continue
                if item is not _END:
                    self._release(item)
            producer.join()
        summary.stopped = sum(summary.outcomes.values()) < len(self.files)
        return summary

    # --- producer ----------------------------------------------------------------------

    def _produce(self) -> None:
        try:
            for f in self.files:
                if self.stop.is_set():
                    break
                item = self._stage(f)
                if item is None:  # stopped while waiting for budget
                    break
                self.queue.put(item)
        finally:
            self.queue.put(_END)

    def _stage(self, f: TaskFile) -> Staged | None:
        start = time.monotonic()
        try:
            size = self.stager.size_of(f)
        except FileError as exc:
            return Staged(f, None, 0, 0.0, exc)
        if not self.budget.fits(size):
            error = RetryableError(f"{f.path}: {size} bytes do not fit the scratch budget of {self.budget.limit} bytes")
            return Staged(f, None, 0, 0.0, error)
        if not self.budget.acquire(size, self.stop):
            return None
        try:
            transfer = self.stager.stage(f)
        except FileError as exc:
            self.budget.release(size)
            return Staged(f, None, 0, time.monotonic() - start, exc)
        return Staged(f, transfer.path, size, time.monotonic() - start, transfer=transfer)

    def _release(self, item: Staged) -> None:
        if item.path is not None:
            self.stager.discard(item.file.file_id)
        self.budget.release(item.size)

    # --- consumer ----------------------------------------------------------------------

    def _consume(self, item: Staged) -> FileState:
        f = item.file
        self.journal.write("file_start", file_id=f.file_id)
        seconds: dict[str, float] = {"staging": round(item.seconds, 3)}
        peak_rss: dict[str, int] = {}
        results: dict[str, StageResult] = {}
        record: dict = {}
        state = FileState.DONE
        try:
            if item.error is not None:
                raise item.error
            out_dir = self.outputs_root / f.output_name
            out_dir.mkdir(parents=True, exist_ok=True)
            for stage in self.stages:
                t0 = time.monotonic()
                self.memory.start()
                ctx = FileContext(f.file_id, f.path, item.path, out_dir, dict(results))
                try:
                    results[stage.name] = stage.process(ctx)
                finally:
                    peak_rss[stage.name] = self.memory.peak()
                seconds[stage.name] = round(time.monotonic() - t0, 3)
        except Exception as exc:  # noqa: BLE001 - every failure is recorded against this file
            state = classify(exc)
            record = {"error_class": type(exc).__name__, "error": _message(exc)}
        finally:
            seconds["total"] = round(sum(seconds.values()), 3)
            outputs = [f"{f.output_name}/{o}" for r in results.values() for o in r.outputs]
            facts = {k: v for r in results.values() for k, v in r.facts.items()}
            if item.transfer is not None:
                t = item.transfer
                record["staging"] = {"bytes": t.bytes, "seconds": round(t.seconds, 3), "tries": t.tries}
                if t.literal is not None:
                    record["staging"]["literal"] = t.literal
            self.journal.write("file_end", file_id=f.file_id, state=state.value, outputs=outputs, facts=facts,
                               seconds=seconds, peak_rss=peak_rss, **record)
            self._release(item)
            if not outputs:
                _remove_if_empty(self.outputs_root / f.output_name)
        return state


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass  # missing, or holds files


def _message(exc: BaseException) -> str:
    if isinstance(exc, (FileError, OSError)):
        return str(exc)
    # An unexpected error: keep where it came from, it is a bug or an environment fault.
    return f"{exc}\n{''.join(traceback.format_exception(exc)[-3:])}".strip()
