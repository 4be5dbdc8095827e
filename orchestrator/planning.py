"""Plans from what was measured: seconds per media hour and peak memory per stage, and the
SLURM time, memory and files per shard that would fit the files still to run.

A file's run time is expected from its size: bytes per media second (the median over the
files done) gives its media duration, the measured seconds per media hour its run time.
Suggestions carry a margin (``TIME_MARGIN``, ``MEM_MARGIN``); a configured value below the
expectation times its margin draws a warning.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

from orchestrator.manifest import Manifest
from tvseg.config import JobConfig, format_slurm_mem, format_slurm_time, parse_slurm_mem, parse_slurm_time

TIME_MARGIN = 1.5  # suggested time limit: the largest shard's expected run times this, plus signal-delay
MEM_MARGIN = 1.25  # suggested memory: the highest peak measured times this
TIME_STEP = 900  # suggestions rounded up to 15 minutes
MEM_STEP = 1024**3  # and to whole gigabytes


@dataclass(frozen=True)
class StageFigures:
    stage: str
    files: int
    seconds_per_media_hour: float  # the stage's seconds over all files / their media hours
    p90_seconds_per_media_hour: float  # per file, 90th percentile
    peak_rss: int | None  # bytes, the highest of the files' peaks in this stage


@dataclass(frozen=True)
class Measured:
    files: int
    media_hours: float
    seconds_per_media_hour: float  # all stages and staging
    bytes_per_media_second: float  # median over the files
    stages: list[StageFigures]
    peak_rss: int | None  # the highest of every task's and file's peak

    def expected_seconds(self, size: int) -> float:
        """A file's expected run time from its size."""
        return size / self.bytes_per_media_second * self.seconds_per_media_hour / 3600


def measure(manifest: Manifest) -> Measured | None:
    """The figures of the done files whose stages were measured; None when there are none."""
    figures = manifest.stage_figures()
    if figures is None:
        return None
    stages = [StageFigures(name, st["files"], st["seconds"] / st["media_seconds"] * 3600, st["p90"], st["peak_rss"])
              for name, st in figures["stages"].items()]
    highest = max([*(st.peak_rss for st in stages if st.peak_rss), *manifest.shard_peaks()], default=None)
    return Measured(files=figures["files"], media_hours=figures["media_seconds"] / 3600,
                    seconds_per_media_hour=figures["seconds"] / figures["media_seconds"] * 3600,
                    bytes_per_media_second=figures["bytes_per_media_second"], stages=stages, peak_rss=highest)


@dataclass(frozen=True)
class Advice:
    measured: Measured
    files: int
    shards: int
    largest_shard_s: float  # expected run of the largest shard, no margin
    longest_file_s: float  # expected run of the longest file, no margin
    time: str  # suggested slurm.time for the shards as planned
    files_per_shard: int  # suggested, to fit the configured (or given) time
    mem: str | None  # suggested slurm.mem (None: no peak measured)
    time_limit: str  # the time limit the tasks will have (files_per_shard is fitted to it)
    warnings: list[str] = field(default_factory=list)


def advise(config: JobConfig, measured: Measured, shard_sizes: Sequence[Sequence[int]], slurm: bool,
           time_limit: str | None = None, mem: str | None = None) -> Advice | None:
    """Suggestions for these shards (file sizes each) at the measured rate; None without files.

    ``time_limit``/``mem``: what the tasks will ask for, when not slurm.time/slurm.mem.
    Warnings only for SLURM (``slurm``): the local executor has no limits.
    """
    sizes = [s for shard in shard_sizes for s in shard]
    if not sizes:
        return None
    s = config.slurm
    time_s = parse_slurm_time(time_limit or s.time)
    mem_text = mem or s.mem
    largest = max(sum(measured.expected_seconds(x) for x in shard) for shard in shard_sizes)
    longest = max(measured.expected_seconds(x) for x in sizes)
    mean = sum(measured.expected_seconds(x) for x in sizes) / len(sizes)
    want_time = _round_up(largest * TIME_MARGIN + s.signal_delay, TIME_STEP)
    usable = (time_s - s.signal_delay) / TIME_MARGIN
    per_shard = max(1, int(usable // mean)) if mean > 0 else len(sizes)
    want_mem = _round_up(measured.peak_rss * MEM_MARGIN, MEM_STEP) if measured.peak_rss else None
    warnings: list[str] = []
    if slurm:
        if largest * TIME_MARGIN + s.signal_delay > time_s:
            warnings.append(
                f"slurm.time {time_limit or s.time} looks too small: the largest shard is expected to take "
                f"{_hours(largest)} at the measured {measured.seconds_per_media_hour:.0f} s per media hour "
                f"(x{TIME_MARGIN:g} margin + signal-delay: {format_slurm_time(want_time)}); tasks will requeue "
                f"at the limit, or set files_per_shard to {per_shard}")
        if want_mem is not None and measured.peak_rss * MEM_MARGIN > parse_slurm_mem(mem_text):
            warnings.append(f"slurm.mem {mem_text} looks too small: tasks peaked at {_gb(measured.peak_rss)} "
                            f"(x{MEM_MARGIN:g} margin: {format_slurm_mem(want_mem)})")
        if s.signal_delay < longest:
            warnings.append(
                f"slurm.signal-delay ({s.signal_delay} s) is shorter than the longest file's expected time "
                f"({_hours(longest)}): a task warned of its time limit finishes the file in hand only if it ends "
                f"within signal-delay, else that file is lost to the limit and run again; "
                f"set signal-delay to at least {math.ceil(longest * TIME_MARGIN)}")
    return Advice(measured=measured, files=len(sizes), shards=len(shard_sizes), largest_shard_s=largest,
                  longest_file_s=longest, time=format_slurm_time(want_time), files_per_shard=per_shard,
                  mem=format_slurm_mem(want_mem) if want_mem else None, time_limit=time_limit or s.time,
                  warnings=warnings)


def describe(advice: Advice) -> list[str]:
    """What a dry run prints: the measured figures and the suggestions."""
    m = advice.measured
    lines = [f"measured on {m.files} done file(s), {m.media_hours:.2f} media h: "
             f"{m.seconds_per_media_hour:.0f} s per media hour in all"
             + (f", tasks peaked at {_gb(m.peak_rss)}" if m.peak_rss else "")]
    for st in m.stages:
        lines.append(f"  {st.stage:<12} {st.seconds_per_media_hour:8.0f} s per media hour (p90 "
                     f"{st.p90_seconds_per_media_hour:.0f})" + (f", peak {_gb(st.peak_rss)}" if st.peak_rss else ""))
    lines.append(f"expected for these {advice.files} file(s) in {advice.shards} shard(s): the largest shard "
                 f"{_hours(advice.largest_shard_s)}, the longest file {_hours(advice.longest_file_s)}")
    lines.append(f"suggested (x{TIME_MARGIN:g} time, x{MEM_MARGIN:g} memory margins): slurm.time {advice.time}"
                 + (f", slurm.mem {advice.mem}" if advice.mem else "")
                 + f"; or files_per_shard {advice.files_per_shard} to fit slurm.time {advice.time_limit}")
    return lines


def _round_up(value: float, step: int) -> int:
    return max(step, math.ceil(value / step) * step)


def _hours(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}h{rest // 60:02d}m" if h else f"{rest // 60}m{rest % 60:02d}s"


def _gb(n: int) -> str:
    return f"{n / 1024**3:.2f} GiB"
