"""Getting an input onto node-local scratch, within a byte budget, and off it again.

``CopyStager`` copies a file the node can read; ``RsyncStager`` also fetches inputs
written ``host:/path`` with rsync over ssh (tvseg/remote.py builds its arguments):
``--secluded-args`` so no remote shell sees a name, a partial-transfer folder so a
retried transfer resumes, a size check against what ``submit`` listed, and retries
with a doubling delay on transient faults (ssh cannot connect, the connection
breaks or stalls).  A file gone from its host is a bad input: that file is
quarantined with the reason, the shard goes on.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tvseg.errors import BadInput, RetryableError
from tvseg.remote import SshConfig, rsync_rsh, rsync_source, split_remote
from tvseg.task import TaskFile

PARTIAL_DIR = ".rsync-partial"  # in the file's scratch folder: what a broken transfer got so far
# rsync's exit codes for faults that may pass: socket I/O (10), protocol data stream (12, also
# what ssh failing to connect gives), partial transfer (23, unless the file is gone), timeout in
# data send/receive (30) or waiting for the daemon (35); and ssh's own failure (255).
TRANSIENT_EXITS = frozenset({10, 12, 23, 30, 35, 255})
MAX_RETRY_DELAY_S = 60.0
_GONE = ("No such file or directory", "file has vanished")
_LITERAL = re.compile(rb"^Literal data: ([\d,.]+) bytes", re.MULTILINE)


@dataclass(frozen=True)
class Transfer:
    """A staged copy and what getting it took (for the journal)."""

    path: Path
    bytes: int
    seconds: float  # of the transfer that succeeded
    tries: int = 1
    literal: int | None = None  # bytes that came over the wire (rsync's "Literal data"): fewer on a resume


class ByteBudget:
    """Bytes of scratch in use, never above ``limit`` (None: unlimited)."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.used = 0
        self._cond = threading.Condition()

    def fits(self, size: int) -> bool:
        return self.limit is None or size <= self.limit

    def acquire(self, size: int, stop: threading.Event) -> bool:
        """Wait until ``size`` bytes fit; False if ``stop`` was set meanwhile."""
        with self._cond:
            while self.limit is not None and self.used + size > self.limit:
                if stop.is_set():
                    return False
                self._cond.wait(timeout=0.2)
            if stop.is_set():
                return False
            self.used += size
            return True

    def release(self, size: int) -> None:
        with self._cond:
            self.used -= size
            self._cond.notify_all()


class CopyStager:
    """Stage by a plain copy (the input's filesystem is mounted on the node)."""

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch

    def size_of(self, f: TaskFile) -> int:
        """The bytes staging will take.  A missing or unreadable input is a bad input."""
        source = f.path
        try:
            return os.stat(source).st_size
        except FileNotFoundError:
            raise BadInput(f"{source}: input not found") from None
        except PermissionError:
            raise BadInput(f"{source}: input not readable (permission denied)") from None

    def stage(self, f: TaskFile) -> Transfer:
        file_id, source = f.file_id, f.path
        start = time.monotonic()
        dest_dir = self.scratch / str(file_id)
        dest = dest_dir / Path(source).name
        try:
            dest_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, dest)
        except FileNotFoundError as exc:
            if not os.path.exists(source):
                raise BadInput(f"{source}: input not found") from None
            raise RetryableError(f"{source}: staging to {dest} failed: {exc}") from None
        except IsADirectoryError:
            raise BadInput(f"{source}: is a directory, not a media file") from None
        except OSError as exc:
            self.discard(file_id)
            if exc.errno == errno.ENOSPC:
                raise RetryableError(f"{source}: scratch {self.scratch} is full: {exc.strerror}") from None
            raise RetryableError(f"{source}: staging to {dest} failed: {exc}") from None
        return Transfer(dest, dest.stat().st_size, time.monotonic() - start)

    def discard(self, file_id: int) -> None:
        shutil.rmtree(self.scratch / str(file_id), ignore_errors=True)


class RsyncStager(CopyStager):
    """Stages ``host:/path`` inputs with rsync over ssh, local ones as CopyStager does."""

    def __init__(self, scratch: Path, ssh: SshConfig, stop: threading.Event) -> None:
        super().__init__(scratch)
        self.ssh = ssh
        self.stop = stop

    def size_of(self, f: TaskFile) -> int:
        """For a remote input, the size ``submit`` listed (checked after the transfer)."""
        return f.size if split_remote(f.path) else super().size_of(f)

    def argv(self, host: str, path: str, dest_dir: Path) -> list[str]:
        return ["rsync", "--secluded-args", f"--partial-dir={PARTIAL_DIR}", f"--timeout={3 * self.ssh.connect_timeout}",
                "--stats", "-e", rsync_rsh(self.ssh), *self.ssh.rsync_options, "--", rsync_source(host, path),
                f"{dest_dir}/"]

    def stage(self, f: TaskFile) -> Transfer:
        remote = split_remote(f.path)
        if remote is None:
            return super().stage(f)
        host, path = remote
        dest_dir = self.scratch / str(f.file_id)
        dest = dest_dir / PurePosixPath(path).name
        try:
            dest_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RetryableError(f"{f.path}: cannot make the scratch folder {dest_dir}: {exc}") from None
        delay = self.ssh.retry_delay
        tries = 0
        while True:
            tries += 1
            start = time.monotonic()
            code, said, literal = self._rsync(self.argv(host, path, dest_dir))
            seconds = time.monotonic() - start
            if code == 0:
                size = dest.stat().st_size if dest.exists() else -1
                if size == f.size:
                    return Transfer(dest, size, seconds, tries, literal)
                code, said = -1, f"{dest.name} has {size} bytes on scratch, {f.size} when submit listed it"
            elif code == 23 and any(g in said for g in _GONE):
                self.discard(f.file_id)
                raise BadInput(f"{f.path}: not found on {host}: gone since submit listed it, or never there "
                               f"(rsync: {said})")
            elif code == 23 and "Permission denied" in said:
                self.discard(f.file_id)
                raise BadInput(f"{f.path}: not readable on {host} ({said})")
            if code not in TRANSIENT_EXITS and code != -1:
                self.discard(f.file_id)
                raise RetryableError(f"{f.path}: rsync failed (exit {code}): {said}")
            if tries > self.ssh.retries:
                self.discard(f.file_id)
                raise RetryableError(f"{f.path}: staging from {host} failed {tries} times; the last time "
                                     f"(rsync exit {code}): {said}")
            if self.stop.wait(delay):
                raise RetryableError(f"{f.path}: stopped while retrying the transfer")
            delay = min(delay * 2, MAX_RETRY_DELAY_S)

    def _rsync(self, argv: list[str]) -> tuple[int, str, int | None]:
        """Run rsync; its exit code, the gist of what it said, and the bytes it sent literally
        (from --stats).  A stop signal ends it (what it got so far stays in the partial folder
        until the worker removes its scratch)."""
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            try:
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
            except OSError as exc:  # no rsync on this node
                raise RetryableError(f"cannot run rsync: {exc}") from None
            while True:
                try:
                    code = proc.wait(timeout=0.2)
                    break
                except subprocess.TimeoutExpired:
                    if self.stop.is_set():
                        proc.terminate()
                        proc.wait()
                        raise RetryableError("stopped during the transfer") from None
            err.seek(0)
            text = err.read().decode("utf-8", "replace")
            out.seek(0)
            literal = _LITERAL.search(out.read())
        lines = [line.strip() for line in text.splitlines() if line.strip() and "write error: Broken pipe" not in line]
        return code, " / ".join(lines[-3:])[:500], int(re.sub(rb"\D", b"", literal.group(1))) if literal else None
