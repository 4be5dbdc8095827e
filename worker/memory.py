"""Peak resident memory of the worker process, per stage.

Linux keeps a process's peak RSS (``VmHWM`` in /proc/self/status) and lets the process reset
it to the current RSS (writing 5 to /proc/self/clear_refs), so each stage's own peak can be
measured.  Where that reset is refused, the peak is the process's peak so far (still an upper
bound).  Child processes (ffmpeg) are not included.
"""

from __future__ import annotations

import re
import resource
from pathlib import Path

_STATUS, _CLEAR = Path("/proc/self/status"), Path("/proc/self/clear_refs")
_HWM = re.compile(r"^VmHWM:\s+(\d+)\s+kB", re.MULTILINE)


class PeakMemory:
    """``start()`` before a piece of work, ``peak()`` after it: the bytes resident at most meanwhile.
    ``highest`` is the largest peak seen by this tracker (and at its creation)."""

    def __init__(self) -> None:
        self.resettable = True
        self.highest = self._hwm()

    def start(self) -> None:
        if self.resettable:
            self.highest = max(self.highest, self._hwm())
            try:
                _CLEAR.write_text("5")
            except OSError:
                self.resettable = False

    def peak(self) -> int:
        value = self._hwm()
        self.highest = max(self.highest, value)
        return value

    @staticmethod
    def _hwm() -> int:
        try:
            m = _HWM.search(_STATUS.read_text())
        except OSError:
            m = None
        if m:
            return int(m.group(1)) * 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports kB
