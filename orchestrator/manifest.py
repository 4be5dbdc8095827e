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
from pathlib import Path
from typing import Any, Iterable, Sequence

from sqlalchemy import (
    bindparam,
    case,
    or_,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import DatabaseError

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
)

meta = Table("meta", metadata, Column("key", Text, primary_key=True), Column("value", Text, nullable=False))


@dataclass(frozen=True)
class InputFile:
    path: str
    size: int
    mtime: float | None  # None: the path does not exist (the worker quarantines it)


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
            cur.close()

        try:
            if create:
                metadata.create_all(self.engine)
                with self.engine.begin() as c:
                    if c.execute(select(meta.c.value).where(meta.c.key == "schema")).scalar() is None:
                        c.execute(insert(meta).values(key="schema", value=str(SCHEMA_VERSION)))
            with self.engine.connect() as c:
                version = c.execute(select(meta.c.value).where(meta.c.key == "schema")).scalar()
        except DatabaseError as exc:
            raise ManifestError(f"{path}: cannot open the manifest: {exc.orig}") from None
        if version != str(SCHEMA_VERSION):
            raise ManifestError(f"{path}: manifest schema {version}, this tvseg reads {SCHEMA_VERSION}")
        try:
            self._add_missing()
        except DatabaseError as exc:
            raise ManifestError(f"{path}: cannot add the columns this tvseg records: {exc.orig}") from None

    def _add_missing(self) -> None:
        """Columns and indexes added since a manifest was made (all nullable): created on open."""
        with self.engine.begin() as c:
            for table in metadata.sorted_tables:
                have = {row[1] for row in c.exec_driver_sql(f'PRAGMA table_info("{table.name}")')}
                for column in table.columns:
                    if column.name not in have:
                        kind = column.type.compile(dialect=self.engine.dialect)
                        c.exec_driver_sql(f'ALTER TABLE "{table.name}" ADD COLUMN "{column.name}" {kind}')
            metadata.create_all(c, checkfirst=True)

    def close(self) -> None:
        self.engine.dispose()

    # --- inputs and shards -------------------------------------------------------------

    def known_paths(self) -> set[str]:
        with self.engine.connect() as c:
            return set(c.execute(select(files.c.path)).scalars())

    def add_shards(self, plan: Sequence[Sequence[InputFile]]) -> list[int]:
        """Add new files, grouped into new shards (state created), in one transaction."""
        now = time.time()
        ids: list[int] = []
        with self.engine.begin() as c:
            for group in plan:
                shard_id = c.execute(
                    insert(shards).values(
                        state=ShardState.CREATED.value,
                        n_files=len(group),
                        bytes=sum(f.size for f in group),
                        created_at=now,
                    )
                ).inserted_primary_key[0]
                c.execute(
                    insert(files),
                    [
                        dict(
                            path=f.path, size=f.size, mtime=f.mtime, output_name=output_name(f.path),
                            state=FileState.PENDING.value, attempts=0, shard_id=shard_id, added_at=now,
                        )
                        for f in group
                    ],
                )
                ids.append(shard_id)
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
            for index, (shard_id, job_id) in enumerate(zip(shard_ids, job_ids, strict=True)):
                c.execute(
                    update(shards)
                    .where(shards.c.id == shard_id)
                    .values(submission_id=sub_id, array_index=index, job_id=job_id, state=ShardState.SUBMITTED.value)
                )
        return sub_id

    # --- folding journals --------------------------------------------------------------

    def journal_offsets(self) -> dict[str, int]:
        with self.engine.connect() as c:
            return {r.path: r.offset for r in c.execute(select(journal_offsets))}

    def apply_journals(self, batch: Iterable[tuple[int, str, list[dict[str, Any]], int]]) -> None:
        """Fold (shard id, journal, new records, new offset) items in one transaction."""
        with self.engine.begin() as c:
            for shard_id, journal, records, offset in batch:
                self._apply_journal(c, shard_id, journal, records, offset)

    def _apply_journal(self, c: Any, shard_id: int, journal: str, records: Iterable[dict[str, Any]],
                       offset: int) -> None:
        """Fold one journal's new records and move its offset, inside the caller's transaction.

        Idempotent: the offset moves with the records, a file only moves forward
        (pending -> running -> settled), and a record about a file no longer assigned
        to this shard (repacked by retry since) is ignored.  Records of one kind are
        applied together (executemany); within a journal a file's start precedes its
        end, so the outcome is that of applying them in order.
        """
        by_kind: dict[str, list[dict[str, Any]]] = {"task_start": [], "file_start": [], "file_end": [], "task_end": []}
        for rec in records:
            by_kind[rec["kind"]].append(rec)
        open_states = [FileState.PENDING.value, FileState.RUNNING.value]
        for rec in by_kind["task_start"]:
            c.execute(
                update(shards)
                .where(shards.c.id == shard_id, shards.c.state.in_([s.value for s in ACTIVE]))
                .values(state=ShardState.RUNNING.value, started_at=rec["time"], host=rec["host"], pid=rec["pid"])
            )
        if by_kind["file_start"]:
            c.execute(
                update(files)
                .where(files.c.id == bindparam("fid"), files.c.shard_id == shard_id,
                       files.c.state == FileState.PENDING.value)
                .values(state=FileState.RUNNING.value, attempts=files.c.attempts + 1, started_at=bindparam("t")),
                [{"fid": r["file_id"], "t": r["time"]} for r in by_kind["file_start"]],
            )
        if by_kind["file_end"]:
            c.execute(
                update(files)
                .where(files.c.id == bindparam("fid"), files.c.shard_id == shard_id,
                       or_(*(files.c.state == st for st in open_states)))  # IN cannot executemany
                .values(state=bindparam("st"), error_class=bindparam("ec"), error=bindparam("err"),
                        finished_at=bindparam("t"), seconds=bindparam("sec"), media_seconds=bindparam("media"),
                        outputs=bindparam("out"), stage_seconds=bindparam("sts"), stage_rss=bindparam("sr"),
                        peak_rss=bindparam("pr"), staged_bytes=bindparam("sb"), staging_seconds=bindparam("ss"),
                        compute_seconds=bindparam("cs")),
                [
                    {"fid": r["file_id"], "st": FileState(r["state"]).value, "ec": r.get("error_class"),
                     "err": r.get("error"), "t": r["time"], "sec": r.get("seconds", {}).get("total"),
                     "media": r.get("facts", {}).get("duration_s"), "out": json.dumps(r.get("outputs", [])),
                     "sts": json.dumps(r["seconds"]) if r.get("seconds") else None,
                     "sr": json.dumps(r["peak_rss"]) if r.get("peak_rss") else None,
                     "pr": max(r["peak_rss"].values()) if r.get("peak_rss") else None,
                     "sb": (r.get("staging") or {}).get("bytes"), "ss": (r.get("staging") or {}).get("seconds"),
                     "cs": _compute_seconds(r.get("seconds", {}))}
                    for r in by_kind["file_end"]
                ],
            )
        for rec in by_kind["task_end"]:
            if rec.get("peak_rss"):
                c.execute(update(shards).where(shards.c.id == shard_id)
                          .values(peak_rss=func.max(func.coalesce(shards.c.peak_rss, 0), int(rec["peak_rss"]))))
            if rec["reason"] == "requeued":  # the scheduler runs the task again; that attempt resumes the shard
                c.execute(
                    update(shards)
                    .where(shards.c.id == shard_id, shards.c.state.in_([s.value for s in ACTIVE]))
                    .values(state=ShardState.SUBMITTED.value)
                )
                continue
            reason = f"{rec['reason']}: {rec['detail']}" if rec.get("detail") else rec["reason"]
            self._end_shard(c, shard_id, reason, rec["time"])
        if c.execute(select(journal_offsets.c.path).where(journal_offsets.c.path == journal)).first():
            c.execute(update(journal_offsets).where(journal_offsets.c.path == journal).values(offset=offset))
        else:
            c.execute(insert(journal_offsets).values(path=journal, offset=offset))

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
            self._end_shard(c, shard_id, reason, time.time())

    def cancel_shards(self, shard_ids: Sequence[int], reason: str) -> None:
        """The tasks were cancelled: end the shards, their files in hand back to pending."""
        now = time.time()
        with self.engine.begin() as c:
            for shard_id in shard_ids:
                c.execute(
                    update(files)
                    .where(files.c.shard_id == shard_id, files.c.state == FileState.RUNNING.value)
                    .values(state=FileState.PENDING.value)
                )
                self._end_shard(c, shard_id, reason, now)

    @staticmethod
    def _end_shard(c: Any, shard_id: int, reason: str, when: float) -> None:
        ended = c.execute(
            update(shards)
            .where(shards.c.id == shard_id, shards.c.state != ShardState.ENDED.value)
            .values(state=ShardState.ENDED.value, ended_at=when, end_reason=reason)
        ).rowcount
        if not ended:
            return
        # The file in hand when the task ended failed with the task's reason (retryable);
        # files never reached stay pending, noted with why, for retry to pick up.
        c.execute(
            update(files)
            .where(files.c.shard_id == shard_id, files.c.state == FileState.RUNNING.value)
            .values(state=FileState.FAILED.value, error_class="TaskEnded",
                    error=f"the task ended while on this file: {reason}", finished_at=when)
        )
        if not reason.startswith("complete"):
            c.execute(
                update(files)
                .where(files.c.shard_id == shard_id, files.c.state == FileState.PENDING.value)
                .values(error_class="TaskEnded", error=f"not reached: {reason}")
            )

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
        with self.engine.connect() as c:
            found = dict(c.execute(select(files.c.state, func.count()).group_by(files.c.state)).all())
        return {s: found.get(s.value, 0) for s in FileState}

    def shard_counts(self) -> dict[ShardState, int]:
        with self.engine.connect() as c:
            found = dict(c.execute(select(shards.c.state, func.count()).group_by(shards.c.state)).all())
        return {s: found.get(s.value, 0) for s in ShardState}

    def shard_progress(self, limit: int) -> list[dict[str, Any]]:
        """Active shards first, then the most recent; files finished out of total."""
        finished = func.sum(files.c.state.in_([s.value for s in FINISHED]).cast(Integer))
        failed = func.sum((files.c.state == FileState.FAILED.value).cast(Integer))
        with self.engine.connect() as c:
            rows = c.execute(
                select(shards.c.id, shards.c.state, shards.c.job_id, shards.c.host, shards.c.end_reason,
                       shards.c.n_files, finished.label("finished"), failed.label("failed"))
                .select_from(shards.join(files, files.c.shard_id == shards.c.id))
                .group_by(shards.c.id)
                .order_by(shards.c.state.in_([s.value for s in ACTIVE]).desc(), shards.c.id.desc())
                .limit(limit)
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
            done = c.execute(
                select(func.count(), func.coalesce(func.sum(files.c.media_seconds), 0.0),
                       func.min(files.c.started_at), func.max(files.c.finished_at))
                .where(files.c.state.in_(settled), files.c.finished_at >= since)
            ).one()
            running_since = c.execute(
                select(func.min(files.c.started_at)).where(files.c.state == FileState.RUNNING.value)
            ).scalar_one()
            flow = c.execute(
                select(func.count(files.c.staged_bytes), func.sum(files.c.staged_bytes),
                       func.sum(files.c.staging_seconds), func.count(files.c.compute_seconds),
                       func.sum(case((files.c.compute_seconds.is_not(None), files.c.size))),
                       func.sum(files.c.compute_seconds))
                .where(files.c.state.in_(settled), files.c.finished_at >= since)
            ).one()
            remaining = c.execute(
                select(func.count())
                .select_from(files.join(shards, files.c.shard_id == shards.c.id))
                .where(files.c.state.in_(open_states), shards.c.state.in_([s.value for s in ACTIVE]))
            ).scalar_one()
        return {
            "files": done[0], "media_seconds": float(done[1]), "first_start": done[2], "last_end": done[3],
            "running_since": running_since, "remaining_files": remaining,
            "staged_files": flow[0], "staged_bytes": flow[1] or 0, "staging_seconds": flow[2] or 0.0,
            "computed_files": flow[3], "computed_bytes": flow[4] or 0, "compute_seconds": flow[5] or 0.0,
        }

    def top_errors(self, limit: int) -> list[tuple[str, int]]:
        """The most common reasons among failed and quarantined files (first line, trimmed)."""
        with self.engine.connect() as c:
            rows = c.execute(
                select(files.c.error_class, files.c.error)
                .where(files.c.state.in_([FileState.FAILED.value, FileState.QUARANTINED.value]))
            )
            reasons = Counter(f"{cls}: {reason_key(err)}" for cls, err in rows)
        return reasons.most_common(limit)

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


def reason_key(error: str | None) -> str:
    """Group errors that differ only by the file they name."""
    line = (error or "").splitlines()[0] if error else ""
    return line.split(": ", 1)[1][:120] if line.startswith("/") and ": " in line else line[:120]
