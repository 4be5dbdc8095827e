"""Finding the input files a job names: glob patterns and/or a file of paths."""

from __future__ import annotations

import glob
import os
from pathlib import Path

from orchestrator.manifest import InputFile
from tvseg.config import JobConfig
from tvseg.errors import ConfigError


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
        for line in lines:
            entry = line.strip()
            if entry and not entry.startswith("#"):
                paths[os.path.abspath(entry if os.path.isabs(entry) else listing.parent / entry)] = None
    found = []
    for path in sorted(paths):
        try:
            st = os.stat(path)
            found.append(InputFile(path=path, size=st.st_size, mtime=st.st_mtime))
        except OSError:
            found.append(InputFile(path=path, size=0, mtime=None))
    return found
