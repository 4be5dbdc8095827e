"""Folding journals into the manifest: batched folds equal folds record by record,
re-folds change nothing, torn journals lose nothing, older manifests are upgraded.

Journals are written line by line here (as a worker's JournalWriter would, with the
times the test chooses) and folded into real SQLite manifests on disk.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

from sqlalchemy import event

from orchestrator.manifest import InputFile, Manifest
from orchestrator.orchestration import fold_journals
from tvseg.journal import journal_key, read_records, shard_dir
from tvseg.states import FileState

T0 = 1_700_000_000  # an int on purpose: times are stored as floats all the same
N_SHARDS = 8
FILES_PER_SHARD = 6
# Columns set from the wall clock when rows are made, not from journals: never compared.
CLOCK_COLUMNS = {"added_at", "created_at"}


def new_manifest(workdir: Path) -> tuple[Manifest, list[int], list[list[int]]]:
    """N_SHARDS submitted shards of FILES_PER_SHARD files; (manifest, shard ids, file ids per shard)."""
    manifest = Manifest(workdir / "manifest.sqlite", create=True)
    plan = [[InputFile(f"/archive/ch {s}/rec {i} 'é'.mp4", 1000 + i, 1.0) for i in range(FILES_PER_SHARD)]
            for s in range(N_SHARDS)]
    shards = manifest.add_shards(plan)
    manifest.record_submission("submit", "slurm", shards, [f"77_{i}" for i in range(len(shards))], {"mem": "4G"})
    return manifest, shards, [[f.id for f in manifest.shard_files(s)] for s in shards]


def story(shards: list[int], ids: list[list[int]]) -> list[tuple[int, int, dict]]:
    """(shard, attempt, record) in the order workers would write them: every record kind,
    requeues, a retried file in hand, duplicates, foreign and unknown records."""
    t = iter(range(T0, T0 + 10_000))
    out: list[tuple[int, int, dict]] = []

    def rec(in_shard: int, in_attempt: int, kind: str, **fields) -> None:
        out.append((in_shard, in_attempt, {"kind": kind, "time": next(t), **fields}))

    def start(shard: int, attempt: int) -> None:
        rec(shard, attempt, "task_start", shard=shard, attempt=attempt, host=f"node{attempt}", pid=100 + attempt,
            job_id="77", skipped=[])

    def done(shard: int, attempt: int, fid: int, state: str = "done", **error) -> None:
        rec(shard, attempt, "file_start", file_id=fid)
        rec(shard, attempt, "file_end", file_id=fid, state=state, outputs=[f"{fid}/probe.json"],
            facts={"duration_s": 600.5}, seconds={"probe": 1.5, "total": 2.25}, **error)

    s, f = shards, ids
    # 0: complete, with every file outcome and a file_end repeated
    start(s[0], 0)
    done(s[0], 0, f[0][0])
    done(s[0], 0, f[0][1], "failed", error_class="RetryableError", error="/archive/x.mp4: staging: No space left")
    done(s[0], 0, f[0][2], "quarantined", error_class="BadInput", error="/archive/y.mp4: no audio stream")
    rec(s[0], 0, "file_end", file_id=f[0][2], state="done", outputs=[])  # a second end changes nothing
    for fid in f[0][3:]:
        done(s[0], 0, fid)
    rec(s[0], 0, "task_end", reason="complete", detail="")
    # 1: requeued with a file in hand; the next attempt finishes it and the rest
    start(s[1], 0)
    done(s[1], 0, f[1][0])
    rec(s[1], 0, "file_start", file_id=f[1][1])
    rec(s[1], 0, "task_end", reason="requeued", detail="SIGUSR2 (time limit near): the next attempt goes on")
    start(s[1], 1)
    for fid in f[1][1:]:
        done(s[1], 1, fid)
    rec(s[1], 1, "task_end", reason="complete", detail="")
    # 2: stopped at the time limit: the file in hand fails, the rest stay pending with a note
    start(s[2], 0)
    done(s[2], 0, f[2][0])
    rec(s[2], 0, "file_start", file_id=f[2][1])
    rec(s[2], 0, "task_end", reason="stopped", detail="TIMEOUT")
    # 3: the requeue failed: a second end of the same attempt replaces it
    start(s[3], 0)
    done(s[3], 0, f[3][0])
    rec(s[3], 0, "task_end", reason="requeued", detail="SIGUSR2")
    rec(s[3], 0, "task_end", reason="stopped", detail="scontrol requeue failed")
    # 4: still running, one file in hand; a record about another shard's file is ignored
    start(s[4], 0)
    done(s[4], 0, f[4][0])
    rec(s[4], 0, "file_start", file_id=f[4][1])
    rec(s[4], 0, "file_end", file_id=f[5][0], state="done", outputs=[])
    rec(s[4], 0, "file_progress", file_id=f[4][1], fraction=0.5)  # a newer worker's kind
    # 5: an error ends the task
    start(s[5], 0)
    done(s[5], 0, f[5][1])
    rec(s[5], 0, "task_end", reason="error", detail="MemoryError: ")
    # 6: requeued, and nothing more yet
    start(s[6], 0)
    done(s[6], 0, f[6][0])
    rec(s[6], 0, "task_end", reason="requeued", detail="SIGUSR2")
    # 7: no journal at all
    return out


def write(workdir: Path, shard: int, attempt: int, record: dict) -> None:
    folder = shard_dir(workdir, shard)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"attempt-{attempt}.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, ensure_ascii=False) + "\n")


def offsets(manifest: Manifest) -> dict[str, int]:
    return {key: mark.offset for key, mark in manifest.journal_marks().items()}


def dump(path: Path) -> dict[str, list[dict]]:
    """Every table's rows, without the columns the wall clock sets."""
    db = sqlite3.connect(path)
    try:
        out = {}
        for table in ("files", "shards", "submissions", "journal_offsets"):
            columns = [r[1] for r in db.execute(f"PRAGMA table_info({table})") if r[1] not in CLOCK_COLUMNS]
            rows = db.execute(f"SELECT {', '.join(f'{c!r}'.replace(chr(39), chr(34)) for c in columns)} "
                              f"FROM {table} ORDER BY 1").fetchall()
            out[table] = [dict(zip(columns, row)) for row in rows]
        return out
    finally:
        db.close()


def test_batched_fold_equals_record_by_record(tmp_path):
    """One fold of everything gives the manifest that folding after every single record gives."""
    at_once, by_record = tmp_path / "at once", tmp_path / "by record"
    m1, shards, ids = new_manifest(at_once)
    m2, _, _ = new_manifest(by_record)
    records = story(shards, ids)
    for shard, attempt, record in records:
        write(at_once, shard, attempt, record)
        write(by_record, shard, attempt, record)
        fold_journals(by_record, m2)
    assert fold_journals(at_once, m1) == len(records) - 1  # all but the unknown kind
    m1.close()
    m2.close()
    got = dump(at_once / "manifest.sqlite")
    assert got == dump(by_record / "manifest.sqlite")

    # And what that manifest says is what the journals say (both ways could be wrong alike).
    shard = {r["id"]: r for r in got["shards"]}
    assert [shard[s]["state"] for s in shards] == ["ended", "ended", "ended", "ended", "running", "ended",
                                                  "submitted", "submitted"]
    assert [shard[s]["end_reason"] for s in shards[2:4]] == ["stopped: TIMEOUT", "stopped: scontrol requeue failed"]
    assert shard[shards[5]]["end_reason"] == "error: MemoryError: "
    assert (shard[shards[1]]["host"], shard[shards[1]]["pid"]) == ("node1", 101)  # the second attempt's start
    file = {r["id"]: r for r in got["files"]}
    assert [file[i]["state"] for i in ids[0]] == ["done", "failed", "quarantined", "done", "done", "done"]
    assert file[ids[0][1]]["error"] == "/archive/x.mp4: staging: No space left"
    assert [file[i]["state"] for i in ids[1]] == ["done"] * 6
    assert file[ids[1][1]]["attempts"] == 1  # in hand at the requeue: started once, by the first attempt
    assert [file[i]["state"] for i in ids[2][:3]] == ["done", "failed", "pending"]
    assert file[ids[2][1]]["error"] == "the task ended while on this file: stopped: TIMEOUT"
    assert file[ids[2][2]]["error"] == "not reached: stopped: TIMEOUT"
    assert [file[i]["state"] for i in ids[4][:3]] == ["done", "running", "pending"]
    assert file[ids[5][0]]["state"] == "pending"  # shard 4's record about it was ignored
    assert [file[i]["state"] for i in ids[5][:3]] == ["pending", "done", "pending"]
    assert file[ids[5][2]]["error"] == "not reached: error: MemoryError: "
    done_row = file[ids[0][0]]
    assert (done_row["media_seconds"], done_row["seconds"], json.loads(done_row["outputs"])) == (
        600.5, 2.25, [f"{ids[0][0]}/probe.json"])
    assert all(isinstance(r["finished_at"], float) for r in got["files"] if r["state"] == "done")


def test_refold_changes_nothing(tmp_path):
    manifest, shards, ids = new_manifest(tmp_path)
    for shard, attempt, record in story(shards, ids):
        write(tmp_path, shard, attempt, record)
    fold_journals(tmp_path, manifest)
    before = dump(tmp_path / "manifest.sqlite")
    assert fold_journals(tmp_path, manifest) == 0
    with manifest.engine.begin() as c:  # forget the offsets: every record is folded again
        c.exec_driver_sql("DELETE FROM journal_offsets")
    assert fold_journals(tmp_path, manifest) > 0
    manifest.close()
    assert dump(tmp_path / "manifest.sqlite") == before


def test_a_journal_cut_mid_line_loses_nothing(tmp_path):
    """A worker killed mid-write leaves half a line: the fold stops before it and takes the
    line once it is whole; a torn line completed by garbage is skipped, the rest is read."""
    manifest, shards, ids = new_manifest(tmp_path)
    sid, (f0, f1, f2) = shards[0], ids[0][:3]
    write(tmp_path, sid, 0, {"kind": "task_start", "time": T0, "shard": sid, "attempt": 0, "host": "n", "pid": 1,
                             "job_id": "77", "skipped": []})
    write(tmp_path, sid, 0, {"kind": "file_start", "time": T0 + 1, "file_id": f0})
    journal = shard_dir(tmp_path, sid) / "attempt-0.jsonl"
    whole = journal.stat().st_size
    line = json.dumps({"kind": "file_end", "time": T0 + 2, "file_id": f0, "state": "done", "outputs": []}) + "\n"
    with open(journal, "a", encoding="utf-8") as fh:
        fh.write(line[:25])
    assert fold_journals(tmp_path, manifest) == 2
    assert offsets(manifest) == {journal_key(journal): whole}
    assert manifest.counts()["running"] == 1
    with open(journal, "a", encoding="utf-8") as fh:
        fh.write(line[25:])
        fh.write('{"kind": "file_start", "time": 1, "fi\x00\x01garbage}\n')  # torn, then written over
    write(tmp_path, sid, 0, {"kind": "file_start", "time": T0 + 3, "file_id": f1})
    write(tmp_path, sid, 0, {"kind": "file_end", "time": T0 + 4, "file_id": f1, "state": "done", "outputs": []})
    assert fold_journals(tmp_path, manifest) == 3
    counts = manifest.counts()
    assert (counts["done"], counts["running"], counts["pending"]) == (2, 0, FILES_PER_SHARD * N_SHARDS - 2)
    assert offsets(manifest) == {journal_key(journal): journal.stat().st_size}
    assert [r["file_id"] for r in read_records(journal)[0] if r["kind"] == "file_end"] == [f0, f1]
    assert f2 not in {f.id for f in manifest.shard_files(sid) if f.state != "pending"}
    manifest.close()


def test_statements_do_not_grow_with_journals(tmp_path):
    """Folding 8 shards' journals or 64 executes the same few statements (rows, not statements, grow)."""

    def statements(n_shards: int, root: Path) -> int:
        manifest = Manifest(root / "manifest.sqlite", create=True)
        shards = manifest.add_shards([[InputFile(f"/a/{s}/{i}.mp4", 10, 1.0) for i in range(4)]
                                      for s in range(n_shards)])
        manifest.record_submission("submit", "slurm", shards, [f"9_{i}" for i in range(n_shards)], {})
        for shard in shards:
            write(root, shard, 0, {"kind": "task_start", "time": T0, "shard": shard, "attempt": 0, "host": "n",
                                   "pid": 1, "job_id": "9", "skipped": []})
            for f in manifest.shard_files(shard):
                write(root, shard, 0, {"kind": "file_start", "time": T0, "file_id": f.id})
                write(root, shard, 0, {"kind": "file_end", "time": T0, "file_id": f.id, "state": "done",
                                       "outputs": []})
            write(root, shard, 0, {"kind": "task_end", "time": T0, "reason": "stopped", "detail": "TIMEOUT"})
        executed = []
        event.listen(manifest.engine, "before_cursor_execute", lambda *args: executed.append(args[2]))
        assert fold_journals(root, manifest) == n_shards * 10
        assert manifest.counts()["done"] == n_shards * 4
        manifest.close()
        return len(executed)

    few, many = statements(8, tmp_path / "few"), statements(64, tmp_path / "many")
    assert few == many <= 12, (few, many)


def test_an_older_manifest_is_upgraded_in_place(tmp_path):
    """A manifest without this version's index and a later nullable column opens, gains them,
    and keeps its rows."""
    manifest, shards, ids = new_manifest(tmp_path)
    manifest.close()
    path = tmp_path / "manifest.sqlite"
    db = sqlite3.connect(path)
    db.execute("DROP INDEX files_shard_state")
    db.execute("ALTER TABLE files DROP COLUMN media_seconds")  # stands for a column added later
    db.execute("UPDATE files SET error = ? WHERE id = ?", ("/archive/x.mp4: no audio stream", ids[1][0]))
    db.execute("DROP INDEX files_state_reason")
    db.execute("ALTER TABLE files DROP COLUMN error_key")
    db.commit()
    db.close()
    before = dump(path)

    manifest = Manifest(path)
    write(tmp_path, shards[0], 0, {"kind": "file_end", "time": T0, "file_id": ids[0][0], "state": "done",
                                   "outputs": [], "facts": {"duration_s": 12.5}})
    assert fold_journals(tmp_path, manifest) == 1
    manifest.close()
    db = sqlite3.connect(path)
    indexes = {r[1] for r in db.execute("PRAGMA index_list(files)")}
    plan = db.execute("EXPLAIN QUERY PLAN SELECT id FROM files WHERE shard_id = 1 AND state = 'running'").fetchall()
    media = db.execute("SELECT media_seconds FROM files WHERE id = ?", (ids[0][0],)).fetchone()[0]
    keys = db.execute("SELECT DISTINCT error_key FROM files WHERE error IS NOT NULL").fetchall()
    db.close()
    assert {"files_shard_state", "files_state_reason"} <= indexes and "files_shard_state" in str(plan)
    assert media == 12.5
    assert keys == [("no audio stream",)]  # errors already there were keyed when the column came
    after = dump(path)
    assert len(after["files"]) == len(before["files"]) and after["shards"] == before["shards"]


def test_closed_folders_are_not_read_again_until_a_journal_appears(tmp_path):
    """Once every journal of a shard is closed (a task_end that is not a requeue) and its
    folder has settled, the fold neither reads nor lists it again - until the folder's
    mtime moves, as it does when a new attempt's journal is made."""
    manifest, shards, ids = new_manifest(tmp_path)
    sid, fids = shards[0], ids[0]

    def task(attempt: int, reason: str, files: list[int], at: int) -> None:
        write(tmp_path, sid, attempt, {"kind": "task_start", "time": at, "shard": sid, "attempt": attempt,
                                       "host": "n", "pid": 1, "job_id": "77", "skipped": []})
        for fid in files:
            write(tmp_path, sid, attempt, {"kind": "file_start", "time": at, "file_id": fid})
            write(tmp_path, sid, attempt, {"kind": "file_end", "time": at + 1, "file_id": fid, "state": "done",
                                           "outputs": []})
        write(tmp_path, sid, attempt, {"kind": "task_end", "time": at + 2, "reason": reason, "detail": ""})

    folder = shard_dir(tmp_path, sid)
    task(0, "requeued", fids[:2], T0)
    assert fold_journals(tmp_path, manifest) == 6
    assert manifest.journal_marks()["shard-1/attempt-0.jsonl"].task_end == "requeued"  # not closed: still read
    settled = folder.stat().st_mtime_ns - 10_000_000_000
    os.utime(folder, ns=(settled, settled))
    assert fold_journals(tmp_path, manifest) == 0
    assert {m.dir_mtime_ns for m in manifest.journal_marks().values()} == {None}  # the newest is not closed
    task(1, "complete", fids[2:4], T0 + 10)
    assert fold_journals(tmp_path, manifest) == 6
    assert {m.dir_mtime_ns for m in manifest.journal_marks().values()} == {None}  # changed just now
    os.utime(folder, ns=(settled, settled))
    assert fold_journals(tmp_path, manifest) == 0
    assert {m.dir_mtime_ns for m in manifest.journal_marks().values()} == {settled}

    # Closed journals are not read again: a line appended to one is ignored ...
    with open(folder / "attempt-1.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"kind": "file_start", "time": T0 + 20, "file_id": fids[4]}) + "\n")
    os.utime(folder, ns=(settled, settled))
    assert fold_journals(tmp_path, manifest) == 0
    # ... and neither is the folder, while its mtime stays: a journal the fold would read is missed ...
    (folder / "attempt-2.jsonl").write_text(json.dumps({"kind": "file_start", "time": T0, "file_id": fids[4]}) + "\n")
    os.utime(folder, ns=(settled, settled))
    assert fold_journals(tmp_path, manifest) == 0
    # ... until the mtime moves, as making that journal did.
    os.utime(folder, ns=(settled + 1, settled + 1))
    assert fold_journals(tmp_path, manifest) == 1
    assert [f.state for f in manifest.shard_files(sid)][:5] == ["done"] * 4 + ["running"]  # the new journal
    assert manifest.counts()["done"] == 4
    manifest.close()


def test_most_common_errors_group_what_differs_only_by_path(tmp_path):
    """Errors are counted by class and reason (first line, the file's path cut off), keyed when
    folded; a row an older tvseg wrote without a key counts the same."""
    manifest, shards, ids = new_manifest(tmp_path)
    sid, fids = shards[0], ids[0]
    write(tmp_path, sid, 0, {"kind": "task_start", "time": T0, "shard": sid, "attempt": 0, "host": "n", "pid": 1,
                             "job_id": "77", "skipped": []})
    ends = [("quarantined", "BadInput", f"/archive/ch 1/rec {i}: no audio stream\nffprobe said: nothing") for i in
            range(3)] + [("failed", "RetryableError", "staging: No space left on device")]
    for fid, (state, cls, error) in zip(fids, ends):
        write(tmp_path, sid, 0, {"kind": "file_start", "time": T0, "file_id": fid})
        write(tmp_path, sid, 0, {"kind": "file_end", "time": T0 + 1, "file_id": fid, "state": state,
                                 "error_class": cls, "error": error, "outputs": []})
    write(tmp_path, sid, 0, {"kind": "file_start", "time": T0 + 2, "file_id": fids[4]})
    write(tmp_path, sid, 0, {"kind": "task_end", "time": T0 + 3, "reason": "stopped", "detail": "TIMEOUT"})
    fold_journals(tmp_path, manifest)
    expected = [("BadInput: no audio stream", 3), ("RetryableError: staging: No space left on device", 1),
                ("TaskEnded: the task ended while on this file: stopped: TIMEOUT", 1)]
    assert manifest.top_errors(5) == expected
    assert manifest.top_errors(1) == expected[:1]
    with manifest.engine.begin() as c:  # as an older tvseg leaves them
        c.exec_driver_sql("UPDATE files SET error_key = NULL WHERE id IN (?, ?)", (fids[0], fids[3]))
    assert manifest.top_errors(5) == expected
    manifest.close()


def test_records_only_the_standard_json_reader_accepts_are_folded(tmp_path):
    """Python's json writes NaN (and integers beyond 64 bits), which the fast reader refuses:
    such a line is read all the same, neither skipped nor stalling the journal."""
    manifest, shards, ids = new_manifest(tmp_path)
    sid, (f0, f1) = shards[0], ids[0][:2]
    write(tmp_path, sid, 0, {"kind": "task_start", "time": T0, "shard": sid, "attempt": 0, "host": "n", "pid": 1,
                             "job_id": "77", "skipped": []})
    write(tmp_path, sid, 0, {"kind": "file_start", "time": T0 + 1, "file_id": f0})
    write(tmp_path, sid, 0, {"kind": "file_end", "time": T0 + 2, "file_id": f0, "state": "done", "outputs": [],
                             "facts": {"duration_s": 60.0, "loudness": float("nan")},
                             "seconds": {"probe": 1.0, "queued_ns": 2**70, "total": 1.0}})
    write(tmp_path, sid, 0, {"kind": "file_start", "time": T0 + 3, "file_id": f1})
    assert fold_journals(tmp_path, manifest) == 4
    rows = {r["id"]: r for r in manifest.files_in([FileState.DONE, FileState.RUNNING])}
    assert (rows[f0]["state"], rows[f0]["media_seconds"], rows[f1]["state"]) == ("done", 60.0, "running")
    assert json.loads(rows[f0]["stage_seconds"]) == {"probe": 1.0, "queued_ns": 2**70, "total": 1.0}
    manifest.close()
