"""The manifest: one SQLite file per job, and the only module that speaks SQL.

Every state change is one transaction behind a method of `Manifest`.  Only the
orchestrator opens this database; workers report through journals
(tvseg.journal), which `apply_journal` folds in idempotently.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import orjson
from sqlalchemy import (
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    case,
    create_engine,
    event,
    func,
    insert,
    inspect,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DatabaseError
from sqlalchemy.schema import CreateColumn

from tvseg.errors import ManifestError, UsageError
from tvseg.states import ACTIVE, FINISHED, FileState, ShardState

SCHEMA_VERSION = 1
metadata = MetaData()

files = Table(
    "files",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("path", Text, nullable=False, unique=True),
    Column("size", Integer, nullable=False),
    Column("mtime", Float),
    Column("output_name", Text, nullable=False, unique=True),
    Column("state", String(16), nullable=False, index=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("shard_id", Integer, ForeignKey("shards.id"), index=True),
    Column("error_class", Text),
    Column("error", Text),
    Column("error_key", Text),  # what `status` groups errors by (error_key()); NULL: not computed
    Column("started_at", Float),
    Column("finished_at", Float),
    Column("seconds", Float),
    Column("media_seconds", Float),
    Column("outputs", Text),  # JSON list of paths relative to the file's output folder
    Column("added_at", Float, nullable=False),
    # Added later (nullable, created when an older manifest is opened): what the worker measured.
    Column("stage_seconds", Text),  # JSON {"stage": seconds, ..., "total": seconds}
    Column("stage_rss", Text),  # JSON {"stage": peak bytes of the worker process during that stage}
    Column("peak_rss", Integer),  # the largest of stage_rss
    Column("staged_bytes", Integer),  # bytes the last transfer to scratch brought
    Column("staging_seconds", Float),  # how long that transfer took
    Column("compute_seconds", Float),  # the stages' time (seconds total minus staging)
)
Index("files_state_finished", files.c.state, files.c.finished_at)
# Folding and ending shards look up one shard's files in one state.
Index("files_shard_state", files.c.shard_id, files.c.state)
# The most common errors, counted along the index (and those not keyed yet found by it).
Index("files_state_reason", files.c.state, files.c.error_key, files.c.error_class)

shards = Table(
    "shards",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("submission_id", Integer, ForeignKey("submissions.id")),
    Column("array_index", Integer),
    Column("job_id", Text),  # the executor's id of this array task, e.g. "1234_5"
    Column("state", String(16), nullable=False, index=True),
    Column("n_files", Integer, nullable=False),
    Column("bytes", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float),
    Column("ended_at", Float),
    Column("end_reason", Text),
    Column("host", Text),
    Column("pid", Integer),
    Column("peak_rss", Integer),  # added later: the worker process's peak over the task's attempts
)

submissions = Table(
    "submissions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("kind", String(16), nullable=False),  # submit | retry
    Column("executor", String(16), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("job_ids", Text, nullable=False),  # JSON list of executor job ids
    Column("resources", Text, nullable=False),  # JSON of what was asked for
)

journal_offsets = Table(
    "journal_offsets",
    metadata,
    Column("path", Text, primary_key=True),  # relative to <workdir>/journals
    Column("offset", Integer, nullable=False),
    Column("task_end", Text),  # the reason of the last task_end folded (tvseg.journal.is_closed)
    # Once the folder's newest journal is closed and every older one has a task_end: the
    # folder's mtime (ns) then.  While the folder keeps it, it has no new journal and the
    # fold need not list it again.
    Column("dir_mtime_ns", Integer),
)

meta = Table("meta", metadata, Column("key", Text, primary_key=True), Column("value", Text, nullable=False))


class InputFile(NamedTuple):  # a tuple: a million of them are made in a second, not several
    path: str
    size: int
    mtime: float | None  # None: the path does not exist (the worker quarantines it)


class JournalMark(NamedTuple):  # a tuple: one per journal, read at every fold
    offset: int  # bytes folded
    task_end: str | None  # the reason of the last task_end folded
    dir_mtime_ns: int | None  # see journal_offsets


@dataclass(frozen=True)
class FileRow:
    id: int
    path: str
    size: int
    output_name: str
    state: FileState
    attempts: int


@dataclass(frozen=True)
class ShardRow:
    id: int
    state: ShardState
    job_id: str | None
    executor: str | None
    started_at: float | None


def output_name(path: str) -> str:
    """A folder name for a file's outputs: readable, and unique even for equal basenames."""
    stem = Path(path).name.rsplit(".", 1)[0][:80] or "input"
    return f"{stem}-{hashlib.sha1(path.encode('utf-8', 'surrogateescape')).hexdigest()[:10]}"


class Manifest:
    def __init__(self, path: Path, create: bool = False) -> None:
        if not create and not path.exists():
            raise UsageError(f"no manifest at {path}: run 'orchestrate submit' first")
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        # The database lives on the login node's view of the workdir; a generous busy
        # timeout lets `status` and a `--wait` loop share it without lock errors.
        self.engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 60})

        @event.listens_for(self.engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA cache_size=-65536")
            cur.close()

        try:
            if create:
                metadata.create_all(self.engine)
                with self.engine.begin() as c:
                    if c.execute(select(meta.c.value).where(meta.c.key == "schema")).scalar() is None:
                        c.execute(insert(meta).values(key="schema", value=str(SCHEMA_VERSION)))
            with self.engine.connect() as c:
                version = c.execute(select(meta.c.value).where(meta.c.key == "schema")).scalar()
            if version == str(SCHEMA_VERSION):
                _upgrade(self.engine)
        except DatabaseError as exc:
            raise ManifestError(f"{path}: cannot open the manifest: {exc.orig}") from None
        if version != str(SCHEMA_VERSION):
            raise ManifestError(f"{path}: manifest schema {version}, this tvseg reads {SCHEMA_VERSION}")

    def close(self) -> None:
        self.engine.dispose()

    # --- inputs and shards -------------------------------------------------------------

    def known_paths(self) -> set[str]:
        with self.engine.connect() as c:
            return set(c.execute(select(files.c.path)).scalars())

    def add_shards(self, plan: Sequence[Sequence[InputFile]]) -> list[int]:
        """Add new files, grouped into new shards (state created), in one transaction."""
        if not plan:
            return []
        now = time.time()
        with self.engine.begin() as c:
            ids = list(c.execute(
                insert(shards).returning(shards.c.id, sort_by_parameter_order=True),
                [dict(state=ShardState.CREATED.value, n_files=len(group), bytes=sum(f.size for f in group),
                      created_at=now) for group in plan],
            ).scalars())
            _executemany(c, _ADD_FILE, [
                (f.path, f.size, f.mtime, output_name(f.path), shard_id, now)
                for shard_id, group in zip(ids, plan, strict=True) for f in group
            ])
        return ids

    def reshard(self, plan: Sequence[Sequence[int]]) -> list[int]:
        """Move existing files (by id) into new shards, back to pending; one transaction."""
        now = time.time()
        ids: list[int] = []
        with self.engine.begin() as c:
            for group in plan:
                size = c.execute(select(func.coalesce(func.sum(files.c.size), 0)).where(files.c.id.in_(group))).scalar()
                shard_id = c.execute(
                    insert(shards).values(state=ShardState.CREATED.value, n_files=len(group), bytes=size, created_at=now)
                ).inserted_primary_key[0]
                c.execute(
                    update(files).where(files.c.id.in_(group)).values(shard_id=shard_id, state=FileState.PENDING.value)
                )
                ids.append(shard_id)
        return ids

    def created_shards(self) -> list[int]:
        """Shards in the manifest that no executor has accepted yet."""
        with self.engine.connect() as c:
            return list(
                c.execute(select(shards.c.id).where(shards.c.state == ShardState.CREATED.value).order_by(shards.c.id)).scalars()
            )

    def shard_files(self, shard_id: int) -> list[FileRow]:
        with self.engine.connect() as c:
            rows = c.execute(
                select(files.c.id, files.c.path, files.c.size, files.c.output_name, files.c.state, files.c.attempts)
                .where(files.c.shard_id == shard_id)
                .order_by(files.c.id)
            )
            return [FileRow(r.id, r.path, r.size, r.output_name, FileState(r.state), r.attempts) for r in rows]

    def next_submission_id(self) -> int:
        """The id the next recorded submission will get (names its jobs before it is recorded)."""
        with self.engine.connect() as c:
            return (c.execute(select(func.max(submissions.c.id))).scalar() or 0) + 1

    def record_submission(
        self, kind: str, executor: str, shard_ids: Sequence[int], job_ids: Sequence[str], resources: dict[str, Any]
    ) -> int:
        """The executor accepted these shards as these array tasks (same order)."""
        with self.engine.begin() as c:
            sub_id = c.execute(
                insert(submissions).values(
                    kind=kind, executor=executor, created_at=time.time(),
                    job_ids=json.dumps(sorted(set(j.split("_")[0] for j in job_ids))),
                    resources=json.dumps(resources, sort_keys=True),
                )
            ).inserted_primary_key[0]
            _executemany(c, _SUBMIT_SHARD, [
                (shard_id, sub_id, index, job_id)
                for index, (shard_id, job_id) in enumerate(zip(shard_ids, job_ids, strict=True))
            ])
        return sub_id

    # --- folding journals --------------------------------------------------------------

    def journal_marks(self) -> dict[str, JournalMark]:
        """How far each journal is folded, by its name relative to <workdir>/journals."""
        with self.engine.connect() as c:
            rows = c.execute(select(journal_offsets.c.path, journal_offsets.c.offset, journal_offsets.c.task_end,
                                    journal_offsets.c.dir_mtime_ns)).all()
        return {path: JournalMark(offset, task_end, mtime) for path, offset, task_end, mtime in rows}

    def apply_journals(self, batch: Sequence[tuple[int, str, list[dict[str, Any]], int, str | None]]) -> None:
        """Fold (shard id, journal, new records, new offset, reason of its last task_end among
        them) items, in order, in one transaction.

        Idempotent: the offsets move with the records, a file only moves forward
        (pending -> running -> settled), and a record about a file no longer assigned
        to the journal's shard (repacked by retry since) is ignored.

        Few statements, many rows: the journals of different shards touch disjoint rows
        (a record moves only the files its shard holds, and that shard), so the items
        are applied in rounds - every shard's first journal of the batch, then every
        second one, ... - each round a handful of executemany statements over all its
        journals.  Within a journal a task_start precedes its file records and a
        task_end follows them, so applying the records kind by kind gives the outcome
        of applying them in order.
        """
        rounds: list[list[tuple[int, list[dict[str, Any]]]]] = []
        seen: Counter[int] = Counter()
        offsets: dict[str, tuple[str, int, str | None]] = {}
        for shard_id, journal, records, offset, task_end in batch:
            index = seen[shard_id]
            seen[shard_id] += 1
            if index == len(rounds):
                rounds.append([])
            rounds[index].append((shard_id, records))
            offsets[journal] = (journal, offset, task_end)
        with self.engine.begin() as c:
            for items in rounds:
                _fold_round(c, items)
            _executemany(c, _MOVE_OFFSET, list(offsets.values()))

    def note_closed_dirs(self, dir_mtimes: dict[str, int]) -> None:
        """Record, on journals (by name), the mtime (ns) their folder had when it was seen closed."""
        with self.engine.begin() as c:
            _executemany(c, _NOTE_DIR, list(dir_mtimes.items()))

    # --- ending shards -----------------------------------------------------------------

    def active_shards(self) -> list[ShardRow]:
        with self.engine.connect() as c:
            rows = c.execute(
                select(shards, submissions.c.executor)
                .select_from(shards.outerjoin(submissions))
                .where(shards.c.state.in_([s.value for s in ACTIVE]))
                .order_by(shards.c.id)
            )
            return [
                ShardRow(r.id, ShardState(r.state), r.job_id, r.executor, r.started_at)
                for r in rows
            ]

    def end_shard(self, shard_id: int, reason: str) -> None:
        """The task is over without (or before) saying so: release its files."""
        with self.engine.begin() as c:
            _end_shards(c, [(shard_id, reason, time.time())])

    def cancel_shards(self, shard_ids: Sequence[int], reason: str) -> None:
        """The tasks were cancelled: end the shards, their files in hand back to pending."""
        if not shard_ids:
            return
        now = time.time()
        with self.engine.begin() as c:
            _executemany(c, _RELEASE_IN_HAND, [(shard_id,) for shard_id in shard_ids])
            _end_shards(c, [(shard_id, reason, now) for shard_id in shard_ids])

    # --- retry -------------------------------------------------------------------------

    def retry_candidates(self, max_attempts: int, include_quarantined: bool) -> tuple[list[FileRow], list[FileRow]]:
        """(files to run again, failed files out of attempts).

        A candidate is not finished and its shard has ended (files of shards not yet
        submitted are resubmitted as they are); quarantined files only when asked.
        """
        states = [FileState.PENDING.value, FileState.RUNNING.value, FileState.FAILED.value]
        if include_quarantined:
            states.append(FileState.QUARANTINED.value)
        with self.engine.connect() as c:
            rows = c.execute(
                select(files.c.id, files.c.path, files.c.size, files.c.output_name, files.c.state, files.c.attempts)
                .select_from(files.join(shards, files.c.shard_id == shards.c.id))
                .where(files.c.state.in_(states), shards.c.state == ShardState.ENDED.value)
                .order_by(files.c.id)
            )
            found = [FileRow(r.id, r.path, r.size, r.output_name, FileState(r.state), r.attempts) for r in rows]
        retry = [f for f in found if f.state is not FileState.FAILED or f.attempts < max_attempts]
        exhausted = [f for f in found if f.state is FileState.FAILED and f.attempts >= max_attempts]
        return retry, exhausted

    def retry_causes(self) -> list[tuple[str, dict[str, Any]]]:
        """(end reason, submission resources) of each ended shard that left files unfinished."""
        unfinished = [FileState.PENDING.value, FileState.RUNNING.value, FileState.FAILED.value]
        with self.engine.connect() as c:
            rows = c.execute(
                select(shards.c.end_reason, submissions.c.resources).distinct()
                .select_from(shards.join(submissions).join(files, files.c.shard_id == shards.c.id))
                .where(shards.c.state == ShardState.ENDED.value, files.c.state.in_(unfinished))
            )
            return [(r.end_reason or "", json.loads(r.resources)) for r in rows]

    # --- reading for status ------------------------------------------------------------

    def counts(self) -> dict[FileState, int]:
        """Files by state, in one statement: each state but done counted over its stretch of
        the state index, done as the rest of the table's count (which SQLite takes from the
        table's pages, not its rows) - done is the bulk of a run's files."""
        others = [s for s in FileState if s is not FileState.DONE]
        per_state = [select(func.count()).where(files.c.state == s.value).scalar_subquery() for s in others]
        with self.engine.connect() as c:
            total, *found = c.execute(select(select(func.count()).select_from(files).scalar_subquery(),
                                             *per_state)).one()
        counts = dict(zip(others, found))
        return {s: total - sum(found) if s is FileState.DONE else counts[s] for s in FileState}

    def shard_counts(self) -> dict[ShardState, int]:
        with self.engine.connect() as c:
            found = dict(c.execute(select(shards.c.state, func.count()).group_by(shards.c.state)).all())
        return {s: found.get(s.value, 0) for s in ShardState}

    def shard_progress(self, limit: int) -> list[dict[str, Any]]:
        """Active shards first, then the most recent; files finished out of total.

        The shards are chosen first (those that still hold files), then only their files
        are counted: the cost does not grow with the archive.
        """
        chosen = (
            select(shards.c.id, shards.c.state, shards.c.job_id, shards.c.host, shards.c.end_reason, shards.c.n_files)
            .where(select(files.c.id).where(files.c.shard_id == shards.c.id).exists())
            .order_by(shards.c.state.in_([s.value for s in ACTIVE]).desc(), shards.c.id.desc())
            .limit(limit)
            .subquery()
        )

        def files_of_chosen(states: Sequence[FileState]) -> Any:
            return (select(func.count()).select_from(files)
                    .where(files.c.shard_id == chosen.c.id, files.c.state.in_([s.value for s in states]))
                    .scalar_subquery())

        with self.engine.connect() as c:
            rows = c.execute(
                select(chosen, files_of_chosen(sorted(FINISHED)).label("finished"),
                       files_of_chosen([FileState.FAILED]).label("failed"))
                .order_by(chosen.c.state.in_([s.value for s in ACTIVE]).desc(), chosen.c.id.desc())
            )
            return [dict(r._mapping) for r in rows]

    def throughput(self, since: float) -> dict[str, Any]:
        """What a rate is measured from: the files finished since ``since`` (how many, their
        media seconds, the earliest start and the last end among them), the earliest start
        among files running now, and the files the active shards have still to finish; and
        among the files finished since ``since``, the bytes and seconds of their transfers to
        scratch and the bytes and seconds of their stages."""
        settled = [s.value for s in FINISHED]
        open_states = [FileState.PENDING.value, FileState.RUNNING.value]
        with self.engine.connect() as c:
            # One pass over the window's files (a tenth of an archive can be in it) for all sums.
            done = c.execute(
                select(func.count(), func.coalesce(func.sum(files.c.media_seconds), 0.0),
                       func.min(files.c.started_at), func.max(files.c.finished_at),
                       func.count(files.c.staged_bytes), func.sum(files.c.staged_bytes),
                       func.sum(files.c.staging_seconds), func.count(files.c.compute_seconds),
                       func.sum(case((files.c.compute_seconds.is_not(None), files.c.size))),
                       func.sum(files.c.compute_seconds))
                .where(files.c.state.in_(settled), files.c.finished_at >= since)
            ).one()
            flow = done[4:]
            running_since = c.execute(
                select(func.min(files.c.started_at)).where(files.c.state == FileState.RUNNING.value)
            ).scalar_one()
            active = select(shards.c.id).where(shards.c.state.in_([s.value for s in ACTIVE]))
            remaining = c.execute(  # by the active shards' files, not by every open file of the archive
                select(func.count()).where(files.c.shard_id.in_(active), files.c.state.in_(open_states))
            ).scalar_one()
        return {
            "files": done[0], "media_seconds": float(done[1]), "first_start": done[2], "last_end": done[3],
            "running_since": running_since, "remaining_files": remaining,
            "staged_files": flow[0], "staged_bytes": flow[1] or 0, "staging_seconds": flow[2] or 0.0,
            "computed_files": flow[3], "computed_bytes": flow[4] or 0, "compute_seconds": flow[5] or 0.0,
        }

    def top_errors(self, limit: int) -> list[tuple[str, int]]:
        """The most common reasons among failed and quarantined files ("class: reason", see
        error_key), counted along an index; errors an older tvseg left without a key are
        keyed here."""
        reasons: Counter[str] = Counter()
        with self.engine.connect() as c:
            for state in (FileState.FAILED.value, FileState.QUARANTINED.value):
                rows = c.execute(
                    select(files.c.error_class, files.c.error_key, func.count())
                    .where(files.c.state == state, files.c.error_key.is_not(None))
                    .group_by(files.c.error_key, files.c.error_class)  # the index's order: no sorting
                )
                for cls, key, n in rows:
                    reasons[f"{cls}: {key}"] += n
                unkeyed = c.execute(
                    select(files.c.error_class, files.c.error)
                    .where(files.c.state == state, files.c.error_key.is_(None))
                )
                reasons.update(f"{cls}: {error_key(err)}" for cls, err in unkeyed)
        return sorted(reasons.items(), key=lambda item: (-item[1], item[0]))[:limit]

    def stage_figures(self) -> dict[str, Any] | None:
        """What a plan is made from, over the done files whose worker measured its stages (None:
        there are none): ``files``, ``media_seconds``, ``seconds`` (all stages), the median bytes
        per media second, and per stage (JSON keys of stage_seconds/stage_rss, aggregated by
        SQLite): files, seconds, media seconds, the 90th percentile of seconds per media hour,
        peak bytes."""
        done = "f.state = :done AND f.media_seconds > 0 AND f.stage_seconds IS NOT NULL"
        args = {"done": FileState.DONE.value}
        with self.engine.connect() as c:
            n, media, seconds = c.exec_driver_sql(
                f"SELECT count(*), sum(f.media_seconds), sum(f.seconds) FROM files f WHERE {done}", args).one()
            if not n:
                return None
            middle = [r[0] for r in c.exec_driver_sql(
                f"SELECT f.size * 1.0 / f.media_seconds AS r FROM files f WHERE {done} ORDER BY r "
                "LIMIT :k OFFSET :skip", {**args, "k": 2 - n % 2, "skip": (n - 1) // 2})]
            stages = {key: {"files": k, "seconds": total, "media_seconds": m, "p90": None, "peak_rss": None}
                      for key, k, total, m in c.exec_driver_sql(
                          f"SELECT j.key, count(*), sum(j.value), sum(f.media_seconds) "
                          f"FROM files f, json_each(f.stage_seconds) j WHERE {done} AND j.key != 'total' "
                          "GROUP BY j.key", args)}
            for key, rate in c.exec_driver_sql(
                    "SELECT key, r FROM (SELECT j.key AS key, j.value * 3600.0 / f.media_seconds AS r, "
                    "row_number() OVER (PARTITION BY j.key ORDER BY j.value / f.media_seconds) AS rn, "
                    "count(*) OVER (PARTITION BY j.key) AS n "
                    f"FROM files f, json_each(f.stage_seconds) j WHERE {done} AND j.key != 'total') "
                    "WHERE rn = min(n, CAST(0.9 * n AS INTEGER) + 1)", args):
                stages[key]["p90"] = rate
            for key, peak in c.exec_driver_sql(
                    f"SELECT j.key, max(j.value) FROM files f, json_each(f.stage_rss) j WHERE {done} GROUP BY j.key",
                    args):
                if key in stages:
                    stages[key]["peak_rss"] = int(peak)
        return {"files": n, "media_seconds": media, "seconds": seconds or 0.0,
                "bytes_per_media_second": sum(middle) / len(middle), "stages": stages}

    def shard_peaks(self) -> list[int]:
        """The peak memory each task reported (shards whose worker measured it)."""
        with self.engine.connect() as c:
            return list(c.execute(select(shards.c.peak_rss).where(shards.c.peak_rss.is_not(None))).scalars())

    def shard_sizes(self, shard_ids: Sequence[int]) -> list[list[int]]:
        """The file sizes of each of these shards (in the given order)."""
        by_shard: dict[int, list[int]] = {i: [] for i in shard_ids}
        ids = list(by_shard)
        with self.engine.connect() as c:
            for k in range(0, len(ids), 500):  # bounded: SQLite limits the parameters of a statement
                rows = c.execute(select(files.c.shard_id, files.c.size).where(files.c.shard_id.in_(ids[k:k + 500])))
                for shard_id, size in rows:
                    by_shard[shard_id].append(size)
        return [by_shard[i] for i in shard_ids]

    def report_files(self) -> list[tuple]:
        """Every file, for the run report: (path, size, state, shard id, error class, error,
        finished at, seconds, media seconds, stage_seconds JSON, peak rss, outputs JSON, output name)."""
        with self.engine.connect() as c:
            return [tuple(r) for r in c.execute(
                select(files.c.path, files.c.size, files.c.state, files.c.shard_id, files.c.error_class, files.c.error,
                       files.c.finished_at, files.c.seconds, files.c.media_seconds, files.c.stage_seconds,
                       files.c.peak_rss, files.c.outputs, files.c.output_name).order_by(files.c.id))]

    def report_shards(self) -> list[dict[str, Any]]:
        """Every shard with the resources its submission asked for (JSON) and its submission's kind."""
        with self.engine.connect() as c:
            rows = c.execute(
                select(shards.c.id, shards.c.state, shards.c.job_id, shards.c.n_files, shards.c.started_at,
                       shards.c.ended_at, shards.c.end_reason, shards.c.host, shards.c.peak_rss,
                       shards.c.submission_id, submissions.c.kind, submissions.c.resources)
                .select_from(shards.outerjoin(submissions)).order_by(shards.c.id))
            return [dict(r._mapping) for r in rows]

    def files_in(self, states: Sequence[FileState]) -> list[dict[str, Any]]:
        with self.engine.connect() as c:
            rows = c.execute(select(files).where(files.c.state.in_([s.value for s in states])).order_by(files.c.id))
            return [dict(r._mapping) for r in rows]


def _compute_seconds(seconds: dict[str, float]) -> float | None:
    """The stages' share of a file's time: every entry but staging and the total."""
    stages = [v for k, v in seconds.items() if k not in ("staging", "total")]
    return sum(stages) if stages else None


def error_key(error: str | None) -> str:
    """What errors are grouped by: the first line, without the path it starts with
    ("/...: reason" -> "reason"), at most 120 characters; errors that differ only by the
    file they name get one key."""
    line = error.splitlines()[0] if error else ""
    return line.split(": ", 1)[1][:120] if line.startswith("/") and ": " in line else line[:120]


def _key_errors(c: Any) -> None:
    """Fill error_key where an older tvseg left an error without one."""
    rows = c.execute(select(files.c.id, files.c.error).where(files.c.error.is_not(None), files.c.error_key.is_(None)))
    _executemany(c, _KEY_ERROR, [(fid, error_key(error)) for fid, error in rows.all()])


def _upgrade(engine: Any) -> None:
    """Bring a manifest an older tvseg made up to this schema, in place and additively:
    missing tables, columns (every later column is nullable) and indexes are created;
    nothing is dropped or changed, so the older tvseg still reads it."""
    with engine.begin() as c:
        inspector = inspect(c)
        present = set(inspector.get_table_names())
        quote = c.dialect.identifier_preparer
        for table in metadata.sorted_tables:
            if table.name not in present:
                table.create(c)
                continue
            columns = {column["name"] for column in inspector.get_columns(table.name)}
            for column in table.columns:
                if column.name not in columns:
                    ddl = CreateColumn(column).compile(dialect=c.dialect)
                    c.exec_driver_sql(f"ALTER TABLE {quote.format_table(table)} ADD COLUMN {ddl}")
                    if column is files.c.error_key:
                        _key_errors(c)
            indexes = {index["name"] for index in inspector.get_indexes(table.name)}
            for index in table.indexes:
                if index.name not in indexes:
                    index.create(c)


# --- statements executed over many rows (_executemany) ------------------------------------
# Bound names never equal a column's name (SQLAlchemy keeps those for SET values).
# ``IN`` cannot be executed many times over with one parameter list: equalities OR'ed instead.


class _Bulk(NamedTuple):
    """A statement executed over many rows: each row a tuple of the values bound to ``names``."""

    statement: Any
    names: tuple[str, ...]


_PENDING, _RUNNING = FileState.PENDING.value, FileState.RUNNING.value
_ADD_FILE = _Bulk(insert(files).values(
    path=bindparam("b_path"), size=bindparam("b_size"), mtime=bindparam("b_mtime"), output_name=bindparam("b_name"),
    state=_PENDING, attempts=0, shard_id=bindparam("sid"), added_at=bindparam("t"),
), ("b_path", "b_size", "b_mtime", "b_name", "sid", "t"))
_KEY_ERROR = _Bulk(update(files).where(files.c.id == bindparam("fid")).values(error_key=bindparam("key")),
                   ("fid", "key"))
_SUBMIT_SHARD = _Bulk(update(shards).where(shards.c.id == bindparam("sid")).values(
    submission_id=bindparam("b_sub"), array_index=bindparam("b_index"), job_id=bindparam("b_job"),
    state=ShardState.SUBMITTED.value,
), ("sid", "b_sub", "b_index", "b_job"))
_OPEN = or_(files.c.state == _PENDING, files.c.state == _RUNNING)
_SHARD_ACTIVE = or_(*(shards.c.state == s.value for s in sorted(ACTIVE)))

_START_TASK = _Bulk(
    update(shards)
    .where(shards.c.id == bindparam("sid"), _SHARD_ACTIVE)
    .values(state=ShardState.RUNNING.value, started_at=bindparam("t"), host=bindparam("b_host"),
            pid=bindparam("b_pid")),
    ("sid", "t", "b_host", "b_pid"),
)
_START_FILE = _Bulk(
    update(files)
    .where(files.c.id == bindparam("fid"), files.c.shard_id == bindparam("sid"), files.c.state == _PENDING)
    .values(state=_RUNNING, attempts=files.c.attempts + 1, started_at=bindparam("t")),
    ("sid", "fid", "t"),
)
# A file's end, and its start when the same journal holds it ("ts" not null): a start applies
# only to a pending file, an end to a pending or running one; SET reads the row as it was.
_END_FILE = _Bulk(
    update(files)
    .where(files.c.id == bindparam("fid"), files.c.shard_id == bindparam("sid"), _OPEN)
    .values(
        state=bindparam("st"), error_class=bindparam("ec"), error=bindparam("err"), error_key=bindparam("ek"),
        finished_at=bindparam("t"),
        seconds=bindparam("sec"), media_seconds=bindparam("media"), outputs=bindparam("out"),
        stage_seconds=bindparam("sts"), stage_rss=bindparam("sr"), peak_rss=bindparam("pr"),
        staged_bytes=bindparam("sb"), staging_seconds=bindparam("ss"), compute_seconds=bindparam("cs"),
        attempts=files.c.attempts + case((files.c.state == _PENDING, bindparam("inc", type_=Integer)), else_=0),
        started_at=case((files.c.state == _PENDING, func.coalesce(bindparam("ts", type_=Float), files.c.started_at)),
                        else_=files.c.started_at),
    ),
    ("sid", "fid", "st", "ec", "err", "ek", "t", "sec", "media", "out", "ts", "inc", "sts", "sr", "pr", "sb", "ss",
     "cs"),
)
_REQUEUE_TASK = _Bulk(update(shards).where(shards.c.id == bindparam("sid"), _SHARD_ACTIVE).values(
    state=ShardState.SUBMITTED.value), ("sid",))
_TASK_RSS = _Bulk(update(shards).where(shards.c.id == bindparam("sid")).values(
    peak_rss=func.max(func.coalesce(shards.c.peak_rss, 0), bindparam("b_rss", type_=Integer))), ("sid", "b_rss"))
_RELEASE_IN_HAND = _Bulk(update(files).where(files.c.shard_id == bindparam("sid"), files.c.state == _RUNNING).values(
    state=_PENDING), ("sid",))
# Ending a shard moves its files only if it has not ended before (then the shard itself).
_NOT_ENDED = (
    select(shards.c.state).where(shards.c.id == bindparam("sid")).scalar_subquery() != ShardState.ENDED.value
)
_FAIL_IN_HAND = _Bulk(
    update(files)
    .where(files.c.shard_id == bindparam("sid"), files.c.state == _RUNNING, _NOT_ENDED)
    .values(state=FileState.FAILED.value, error_class="TaskEnded", error=bindparam("in_hand"),
            error_key=bindparam("in_hand_key"), finished_at=bindparam("t")),
    ("sid", "t", "in_hand", "in_hand_key"),
)
_NOTE_UNREACHED = _Bulk(
    update(files)
    .where(files.c.shard_id == bindparam("sid"), files.c.state == _PENDING, _NOT_ENDED)
    .values(error_class="TaskEnded", error=bindparam("note"), error_key=bindparam("note_key")),
    ("sid", "note", "note_key"),
)
_END_SHARD = _Bulk(
    update(shards)
    .where(shards.c.id == bindparam("sid"), shards.c.state != ShardState.ENDED.value)
    .values(state=ShardState.ENDED.value, ended_at=bindparam("t"), end_reason=bindparam("reason")),
    ("sid", "t", "reason"),
)
_ADD_OFFSET = sqlite_insert(journal_offsets).values(path=bindparam("key"), offset=bindparam("b_offset"),
                                                    task_end=bindparam("b_end"))
_MOVE_OFFSET = _Bulk(_ADD_OFFSET.on_conflict_do_update(
    index_elements=[journal_offsets.c.path],
    set_={"offset": _ADD_OFFSET.excluded.offset,
          "task_end": func.coalesce(_ADD_OFFSET.excluded.task_end, journal_offsets.c.task_end)},
), ("key", "b_offset", "b_end"))
_NOTE_DIR = _Bulk(update(journal_offsets).where(journal_offsets.c.path == bindparam("key")).values(
    dir_mtime_ns=bindparam("mtime")), ("key", "mtime"))

# (statement, dialect name) -> its SQL and, per placeholder in order: the row's index of its
# value (None: a constant of the statement), the constant, the type's bind processor.
_COMPILED: dict[tuple[Any, str], tuple[str, list[tuple[int | None, Any, Any]]]] = {}


def _compiled(c: Any, bulk: _Bulk) -> tuple[str, list[tuple[int | None, Any, Any]]]:
    key = (bulk.statement, c.dialect.name)
    if key not in _COMPILED:
        compiled = bulk.statement.compile(dialect=c.dialect)
        if not compiled.positiontup:  # a driver with named placeholders: not SQLite's
            raise ManifestError(f"{c.dialect.name}: bulk statements need positional placeholders")
        index = {name: i for i, name in enumerate(bulk.names)}
        plan = []
        for name in compiled.positiontup:
            bind = compiled.binds[name]
            if name not in index and bind.required:
                raise ManifestError(f"bulk statement: no value for {name!r} among {bulk.names}")
            plan.append((index.get(name), bind.value, bind.type.dialect_impl(c.dialect).bind_processor(c.dialect)))
        _COMPILED[key] = (compiled.string, plan)
    return _COMPILED[key]


def _executemany(c: Any, bulk: _Bulk, rows: Sequence[tuple[Any, ...]]) -> None:
    """Execute a Core statement once per row, as one executemany of the driver.

    SQLAlchemy's own executemany builds and type-processes a parameter dict per row in
    Python, which at journal scale (hundreds of thousands of rows) costs more than
    SQLite spends updating them.  Here the statement is compiled once, and the rows
    become the driver's tuples column by column: each placeholder's column taken from
    the rows (or its constant repeated), its type's processor (e.g. Float's, which stores
    an int time as a float) mapped over it, the columns zipped back into tuples - loops
    that run in C, not a Python step per value.
    """
    if not rows:
        return
    sql, plan = _compiled(c, bulk)
    given = list(zip(*rows))
    columns = []
    for index, constant, processor in plan:
        column = repeat(constant, len(rows)) if index is None else given[index]
        columns.append(column if processor is None else map(processor, column))
    c.exec_driver_sql(sql, list(zip(*columns)))


def _json(value: Any) -> str:
    """``value`` as JSON text, for the manifest's JSON columns (orjson: a tenth of the
    standard library's time, which at journal scale is seconds; the standard library for
    what orjson does not write, such as an integer beyond 64 bits)."""
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        return json.dumps(value)


_FILE_STATES = {s.value: s.value for s in FileState}


def _fold_round(c: Any, items: Sequence[tuple[int, list[dict[str, Any]]]]) -> None:
    """Apply (shard id, records) items of distinct shards: one executemany per statement kind."""
    task_starts: list[tuple[Any, ...]] = []
    file_starts: list[tuple[Any, ...]] = []
    file_ends: list[tuple[Any, ...]] = []
    requeues: list[tuple[int]] = []
    task_rss: list[tuple[int, int]] = []
    ends: list[tuple[int, str, float]] = []
    for shard_id, records in items:
        task_start: dict[str, Any] | None = None
        started: dict[int, float] = {}
        ended: dict[int, dict[str, Any]] = {}
        requeued = False
        task_end: tuple[int, str, float] | None = None
        for rec in records:
            kind = rec["kind"]
            if kind == "file_start":  # the first start is the one that can apply
                if rec["file_id"] not in started:
                    started[rec["file_id"]] = rec["time"]
            elif kind == "file_end":  # so is the first end
                if rec["file_id"] not in ended:
                    ended[rec["file_id"]] = rec
            elif kind == "task_start":  # each applies while the shard is active: the last one wins
                task_start = rec
            else:  # task_end: its peak memory counts whether or not it ends the shard
                if rec.get("peak_rss"):
                    task_rss.append((shard_id, int(rec["peak_rss"])))
                if task_end is not None:  # the first that is not a requeue ends the shard
                    continue
                if rec["reason"] == "requeued":  # the scheduler runs the task again; that attempt resumes
                    requeued = True
                else:
                    reason = f"{rec['reason']}: {rec['detail']}" if rec.get("detail") else rec["reason"]
                    task_end = (shard_id, reason, rec["time"])
        if task_start is not None:
            task_starts.append((shard_id, task_start["time"], task_start["host"], task_start["pid"]))
        file_starts += [(shard_id, fid, t) for fid, t in started.items() if fid not in ended]
        for fid, rec in ended.items():
            ts = started.get(fid)
            seconds = rec.get("seconds", {})
            rss = rec.get("peak_rss")
            staging = rec.get("staging") or {}
            error = rec.get("error")
            file_ends.append((
                shard_id, fid, _FILE_STATES.get(rec["state"]) or FileState(rec["state"]).value,
                rec.get("error_class"), error, error_key(error), rec["time"], seconds.get("total"),
                rec.get("facts", {}).get("duration_s"), _json(rec.get("outputs", [])), ts, 0 if ts is None else 1,
                _json(seconds) if seconds else None, _json(rss) if rss else None, max(rss.values()) if rss else None,
                staging.get("bytes"), staging.get("seconds"), _compute_seconds(seconds),
            ))
        if task_end is not None:  # a requeue before it is overwritten by the end
            ends.append(task_end)
        elif requeued:
            requeues.append((shard_id,))
    for bulk, rows in ((_START_TASK, task_starts), (_START_FILE, file_starts), (_END_FILE, file_ends),
                       (_REQUEUE_TASK, requeues), (_TASK_RSS, task_rss)):
        _executemany(c, bulk, rows)
    _end_shards(c, ends)


def _end_shards(c: Any, ends: Sequence[tuple[int, str, float]]) -> None:
    """End these (shard id, reason, time) shards, those not ended before, inside the caller's
    transaction.  The file in hand when a task ended failed with the task's reason
    (retryable); files never reached stay pending, noted with why, for retry to pick up."""
    if not ends:
        return
    in_hand = [(sid, f"the task ended while on this file: {reason}", when) for sid, reason, when in ends]
    _executemany(c, _FAIL_IN_HAND, [(sid, when, error, error_key(error)) for sid, error, when in in_hand])
    unreached = [(sid, f"not reached: {reason}") for sid, reason, _ in ends if not reason.startswith("complete")]
    _executemany(c, _NOTE_UNREACHED, [(sid, note, error_key(note)) for sid, note in unreached])
    _executemany(c, _END_SHARD, [(sid, when, reason) for sid, reason, when in ends])
