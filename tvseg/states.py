"""The one definition of file and shard states, used by status, retry and the worker."""

from __future__ import annotations

from enum import Enum


class FileState(str, Enum):
    """Where an input file stands.  Transitions are documented in docs/lifecycle.md."""

    PENDING = "pending"  # waiting for a worker (new, or returned by a stopped/dead task)
    RUNNING = "running"  # a worker has started on it
    DONE = "done"  # every stage succeeded; outputs are complete
    FAILED = "failed"  # an infrastructure fault or an unexpected error: retryable
    QUARANTINED = "quarantined"  # the input itself is bad: never retried automatically


# A finished file needs no more work: `retry` never picks it up again (quarantined
# ones only with --include-quarantined).
FINISHED = frozenset({FileState.DONE, FileState.QUARANTINED})


class ShardState(str, Enum):
    """Where one shard (one array task) stands."""

    CREATED = "created"  # in the manifest, not (yet) accepted by an executor
    SUBMITTED = "submitted"  # accepted by the executor; no worker has reported yet
    RUNNING = "running"  # a worker reported (journal or heartbeat)
    ENDED = "ended"  # the task is over: cleanly, stopped, or dead (see end_reason)


# An active shard may still change the state of its files.
ACTIVE = frozenset({ShardState.SUBMITTED, ShardState.RUNNING})
