"""Getting an input onto node-local scratch, within a byte budget, and off it again."""

from __future__ import annotations

import errno
import os
import shutil
import threading
from pathlib import Path

from tvseg.errors import BadInput, RetryableError


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

    def size_of(self, source: str) -> int:
        """The bytes staging will take.  A missing or unreadable input is a bad input."""
        try:
            return os.stat(source).st_size
        except FileNotFoundError:
            raise BadInput(f"{source}: input not found") from None
        except PermissionError:
            raise BadInput(f"{source}: input not readable (permission denied)") from None

    def stage(self, file_id: int, source: str) -> Path:
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
        return dest

    def discard(self, file_id: int) -> None:
        shutil.rmtree(self.scratch / str(file_id), ignore_errors=True)
