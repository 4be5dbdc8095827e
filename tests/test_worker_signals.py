"""The worker's stop signals, in a process of its own (signal dispositions are per process)."""

from __future__ import annotations

import subprocess
import sys

from tvseg.task import REQUEUE_SIGNAL

LATE_SIGNAL = f"""
import os, signal
from worker.main import StopFlag
flag = StopFlag()
flag.install()
flag.restore()  # the shard is over
os.kill(os.getpid(), signal.SIG{REQUEUE_SIGNAL})  # SLURM's time-limit warning, late
print("still here", flag.event.is_set())
"""


def test_a_requeue_signal_after_the_shard_is_over_neither_kills_nor_stops():
    """SLURM may warn of the time limit after the last journal record (it checks limits about
    every 30 s): the process then reports success instead of dying of USR2 (FAILED in sacct)."""
    proc = subprocess.run([sys.executable, "-c", LATE_SIGNAL], capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "still here False\n", "")
