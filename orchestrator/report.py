"""What `status` shows: a snapshot of the manifest as a dict (for --json) and as rich tables."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from orchestrator.manifest import Manifest
from tvseg.states import ACTIVE, FINISHED, FileState, ShardState

if TYPE_CHECKING:
    from rich.console import Group

THROUGHPUT_WINDOW_S = 3600.0
SHARD_ROWS = 15
ERROR_ROWS = 5


def snapshot(manifest: Manifest, now: float | None = None) -> dict[str, Any]:
    """Counts by state, shard progress, throughput over the last hour, ETA, top errors."""
    now = time.time() if now is None else now
    counts = manifest.counts()
    shard_counts = manifest.shard_counts()
    flow = manifest.throughput(now - THROUGHPUT_WINDOW_S)
    seconds = measured_seconds(flow, now, working=any(shard_counts[s] for s in ACTIVE))
    files_per_hour = flow["files"] / seconds * 3600 if seconds else 0.0
    media_hours_per_hour = flow["media_seconds"] / seconds if seconds else 0.0
    remaining = flow["remaining_files"]
    running = shard_counts[ShardState.RUNNING] > 0
    return {
        "total": sum(counts.values()),
        "files": {s.value: counts[s] for s in FileState},
        "finished": sum(counts[s] for s in FINISHED),
        "shards": {s.value: n for s, n in shard_counts.items()},
        "throughput": {"files_per_hour": round(files_per_hour, 2), "media_hours_per_hour": round(media_hours_per_hour, 3),
                       "seconds": round(seconds)},
        # Only while a worker runs: a rate of work that has stopped says nothing about the rest.
        "eta_seconds": round(remaining / files_per_hour * 3600) if running and files_per_hour and remaining else None,
        # Per task, over the files finished in the window: how fast inputs reach scratch and how
        # fast the stages get through them.  Staging below compute: the stages wait for inputs.
        "staging": _rate(flow["staged_files"], flow["staged_bytes"], flow["staging_seconds"]),
        "compute": _rate(flow["computed_files"], flow["computed_bytes"], flow["compute_seconds"]),
        "errors": [{"reason": reason, "files": n} for reason, n in manifest.top_errors(ERROR_ROWS)],
        "shard_progress": manifest.shard_progress(SHARD_ROWS),
    }


def _rate(n_files: int, n_bytes: int, seconds: float) -> dict[str, Any]:
    return {"files": n_files, "bytes": n_bytes, "seconds": round(seconds, 3),
            "bytes_per_s": round(n_bytes / seconds, 1) if seconds > 0 else None}


def measured_seconds(flow: dict[str, Any], now: float, working: bool) -> float:
    """The time work was running in the window, which the files finished in it are divided by.

    From the first start among those files and the files running now (or the window's
    start, if that was earlier) to now while shards are active, else to the last end.
    0 when nothing finished in the window: no rate.
    """
    if not flow["files"]:
        return 0.0
    starts = [t for t in (flow["first_start"], flow["running_since"]) if t is not None]
    begin = max(now - THROUGHPUT_WINDOW_S, min(starts)) if starts else now - THROUGHPUT_WINDOW_S
    end = now if working else flow["last_end"]
    return max(end - begin, 0.0)


_STATE_STYLE = {
    FileState.PENDING: "white", FileState.RUNNING: "cyan", FileState.DONE: "green",
    FileState.FAILED: "red", FileState.QUARANTINED: "yellow",
}


def render(snap: dict[str, Any], title: str) -> Group:
    from rich.console import Group  # noqa: PLC0415 - rich only where tables are drawn (not for --json)
    from rich.table import Table  # noqa: PLC0415

    states = Table(title=f"{title}: {snap['finished']}/{snap['total']} finished", title_justify="left")
    for state in FileState:
        states.add_column(state.value, justify="right", style=_STATE_STYLE[state])
    states.add_column("total", justify="right", style="bold")
    states.add_row(*(str(snap["files"][s.value]) for s in FileState), str(snap["total"]))

    flow = snap["throughput"]
    eta = snap["eta_seconds"]
    speed = Table.grid(padding=(0, 2))
    speed.add_row("throughput", f"{flow['files_per_hour']:.1f} files/h", f"{flow['media_hours_per_hour']:.2f} media h/h",
                  f"over {_duration(flow['seconds'])} of work" if flow["seconds"] else "nothing finished in the last hour")
    speed.add_row("staging", _per_s(snap["staging"], "transfer"), "compute", _per_s(snap["compute"], "file"))
    speed.add_row("ETA", _duration(eta) if eta is not None else "-",
                  "shards: " + ", ".join(f"{n} {s}" for s, n in snap["shards"].items() if n))

    shards = Table(title="shards (active first)", title_justify="left")
    for name in ("shard", "state", "job", "host", "finished", "failed", "note"):
        shards.add_column(name, justify="right" if name in ("shard", "finished", "failed") else "left")
    for row in snap["shard_progress"]:
        shards.add_row(str(row["id"]), row["state"], row["job_id"] or "-", row["host"] or "-",
                       f"{row['finished']}/{row['n_files']}", str(row["failed"]),
                       "" if row["state"] != ShardState.ENDED.value else (row["end_reason"] or "")[:60])

    parts: list[Any] = [states, speed, shards]
    if snap["errors"]:
        errors = Table(title="most common errors", title_justify="left")
        errors.add_column("files", justify="right")
        errors.add_column("reason")
        for item in snap["errors"]:
            errors.add_row(str(item["files"]), item["reason"])
        parts.append(errors)
    return Group(*parts)


def _per_s(rate: dict[str, Any], what: str) -> str:
    speed = rate["bytes_per_s"]
    if speed is None:
        return "-"
    unit, scale = next((u, s) for u, s in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3), ("B", 1.0)) if speed >= s or s == 1)
    count = f"{rate['files']} {what}{'s' if rate['files'] != 1 else ''}"
    return f"{speed / scale:.{0 if scale == 1 else 1}f} {unit}/s per task ({count})"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"
