"""Finding the input files a job names: glob patterns and/or a file of paths."""

from __future__ import annotations

import glob
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from orchestrator.manifest import InputFile
from tvseg.config import JobConfig
from tvseg.errors import ConfigError

STAT_THREADS = 8
STAT_CHUNK = 2_000  # paths stat'ed by one thread at a time
# What os.path.normpath would change in an absolute path: "//", a "." or ".." part, a final "/".
_NOT_NORMAL = re.compile(r"//|/\.\.?(?:/|$)|/$")


def scan_inputs(config: JobConfig) -> list[InputFile]:
    """Every input the job names, deduplicated, in path order.

    A path listed in ``inputs_from`` that does not exist is kept (size 0, no mtime):
    the worker quarantines it with a reason, so nothing listed is silently dropped.
    A glob pattern that matches nothing is an error: it is most likely a typo.
    """
    base = config.source.parent
    paths: dict[str, None] = {}
    for pattern in config.inputs:
        full = pattern if os.path.isabs(pattern) else str(base / pattern)
        matched = [p for p in glob.glob(full, recursive=True) if os.path.isfile(p)]
        if not matched:
            raise ConfigError(f"{config.source}: inputs: pattern {pattern!r} matches no file (looked for {full})")
        paths.update(dict.fromkeys(os.path.abspath(p) for p in matched))
    if config.inputs_from is not None:
        listing = config.inputs_from
        try:
            lines = listing.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{listing}: cannot read the list of inputs: {exc}") from None
        folder = os.path.abspath(listing.parent)
        normpath, join, odd = os.path.normpath, os.path.join, _NOT_NORMAL.search
        for line in lines:
            entry = line.strip()
            if entry and not entry.startswith("#"):
                if entry.startswith("/") and not odd(entry):
                    paths[entry] = None  # already what abspath would make of it
                else:
                    paths[normpath(join(folder, entry))] = None  # join keeps an absolute entry as it is
    ordered = sorted(paths)
    chunks = [ordered[i:i + STAT_CHUNK] for i in range(0, len(ordered), STAT_CHUNK)]
    if len(chunks) <= 1:
        return [_stat(path) for path in ordered]
    # stat() waits on the filesystem with the GIL released: on network storage a few
    # threads hide most of that latency.
    with ThreadPoolExecutor(STAT_THREADS, thread_name_prefix="tvseg-stat") as pool:
        return [found for part in pool.map(_stat_all, chunks) for found in part]


def _stat_all(paths: list[str]) -> list[InputFile]:
    return [_stat(path) for path in paths]


def _stat(path: str) -> InputFile:
    try:
        st = os.stat(path)
    except OSError:
        return InputFile(path, 0, None)
    return InputFile(path, st.st_size, st.st_mtime)
