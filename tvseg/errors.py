"""Every error tvseg raises on purpose, and the exit codes the CLI maps them to.

The CLI catches `TvsegError` once and prints its message; anything else is an
internal error (exit 1) reported with its class and message, not a traceback.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0  # every settled file is done
    INTERNAL = 1  # a bug or an unexpected environment problem
    USAGE = 2  # bad command line or bad jobs.yaml; nothing was written
    FAILURES = 3  # settled, but some files failed or were quarantined
    INTERRUPTED = 130  # Ctrl-C while waiting


class TvsegError(Exception):
    """Base of every error the CLI turns into a message."""

    exit_code: ExitCode = ExitCode.INTERNAL


class ConfigError(TvsegError):
    """jobs.yaml (or a file it names) is invalid. The message names file, line and key."""

    exit_code = ExitCode.USAGE


class UsageError(TvsegError):
    """The command line asks for something that cannot be done."""

    exit_code = ExitCode.USAGE


class ManifestError(TvsegError):
    """The manifest database is missing, locked beyond patience, or inconsistent."""


class ExecutorError(TvsegError):
    """The executor (local or SLURM) refused or failed a submission or a query."""


class VersionMismatch(TvsegError):
    """The worker's environment holds another tvseg than the orchestrator that submitted the task."""


class ModelError(TvsegError):
    """A stage's model files are missing or do not match their checksums."""


# --- per-file outcomes raised inside the worker --------------------------------------


class FileError(TvsegError):
    """A failure that concerns one input file, never the whole shard."""


class BadInput(FileError):
    """The input itself is unusable (corrupt, empty, no audio, missing): permanent.

    The file is quarantined and never retried automatically.
    """


class RetryableError(FileError):
    """An infrastructure fault (scratch full, copy failed, node trouble): try again."""
