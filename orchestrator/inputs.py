"""Finding the input files a job names: glob patterns and/or a file of paths, local or remote.

A pattern or listed path written ``host:/path`` is remote: every remote one of a host
is listed over one ssh connection (orchestrator/remote.py) and recorded as
``host:/path`` with the size and mtime the host reports.
"""

from __future__ import annotations

import glob
import os
import re
from concurrent.futures import ThreadPoolExecutor

from orchestrator.manifest import InputFile
from orchestrator.remote import glob_regex, glob_start, list_host
from tvseg.config import JobConfig
from tvseg.errors import ConfigError
from tvseg.remote import split_remote

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
    paths: dict[str, None] = {}  # local paths, in the order found (stat'ed below)
    remote_patterns: dict[str, list[str]] = {}  # host -> patterns
    remote_listed: dict[str, list[str]] = {}  # host -> paths from inputs_from
    for pattern in config.inputs:
        if (remote := split_remote(pattern)) is not None:
            remote_patterns.setdefault(remote[0], []).append(remote[1])
            continue
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
            if not entry or entry.startswith("#"):
                continue
            if (remote := split_remote(entry)) is not None:
                remote_listed.setdefault(remote[0], []).append(remote[1])
            elif entry.startswith("/") and not odd(entry):
                paths[entry] = None  # already what abspath would make of it
            else:
                paths[normpath(join(folder, entry))] = None  # join keeps an absolute entry as it is
    found = {f.path: f for f in _stat_paths(sorted(paths))}
    for host in sorted({*remote_patterns, *remote_listed}):
        for f in _scan_host(config, host, remote_patterns.get(host, []), remote_listed.get(host, [])):
            found.setdefault(f.path, f)
    return [found[path] for path in sorted(found)] if remote_patterns or remote_listed else list(found.values())


def _stat_paths(ordered: list[str]) -> list[InputFile]:
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


def _scan_host(config: JobConfig, host: str, patterns: list[str], listed: list[str]) -> list[InputFile]:
    starts = [glob_start(p) for p in patterns] + [(p, 0) for p in listed]
    lists, complaints = list_host(config.ssh, host, starts, str(config.source))
    out: list[InputFile] = []
    for pattern, matches in zip(patterns, lists):
        regex = glob_regex(pattern)
        kept = [m for m in matches if regex.fullmatch(m.path)]
        if not kept:
            detail = f"; {host} said: {complaints}" if complaints else ""
            raise ConfigError(f"{config.source}: inputs: pattern {host}:{pattern!r} matches no file{detail}")
        out += [InputFile(path=f"{host}:{m.path}", size=m.size, mtime=m.mtime) for m in kept]
    for path, matches in zip(listed, lists[len(patterns):]):
        hit = next((m for m in matches if m.path == path), None)
        out.append(InputFile(path=f"{host}:{path}", size=hit.size, mtime=hit.mtime) if hit
                   else InputFile(path=f"{host}:{path}", size=0, mtime=None))
    return out
