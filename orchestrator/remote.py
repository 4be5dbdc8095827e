"""Listing remote inputs: one ssh connection per host, whatever the number of patterns and files.

The remote side runs a constant POSIX sh script (``LIST_SCRIPT``) that reads, from
stdin, one start path and one depth per line pair and prints what GNU ``find``
finds there as ``<size> <mtime> <path>\\0`` records, each start's list closed by an
empty record.  No path ever goes into the command line ssh hands the remote shell:
paths travel on stdin (one per line, so a pattern cannot hold a line break) and
come back NUL-separated (so a found name may hold anything, line breaks included).
A glob pattern becomes a start folder (its components before the first wildcard)
and a regular expression the orchestrator filters the found paths with
(``glob_regex``: ``*`` and ``?`` stay within a component, ``**`` spans any number).
"""

from __future__ import annotations

import re
import shlex
import subprocess
from dataclasses import dataclass
from typing import Sequence

from tvseg.errors import ConfigError
from tvseg.remote import SshConfig, ssh_argv

LIST_TIMEOUT_S = 600.0  # a whole archive's listing over one connection
# One line: a remote login shell of the csh family takes no line break inside quotes.
LIST_SCRIPT = (
    "LC_ALL=C; export LC_ALL; status=0; "
    "while IFS= read -r start && IFS= read -r depth; do "
    'if [ -n "$depth" ]; then find -L "$start" -maxdepth "$depth" -type f -printf \'%s %T@ %p\\0\' || status=1; '
    'else find -L "$start" -type f -printf \'%s %T@ %p\\0\' || status=1; fi; '
    "printf '\\0'; done; exit $status"
)
_WILDCARD = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class RemoteFile:
    path: str  # on the host
    size: int
    mtime: float


def glob_start(pattern: str) -> tuple[str, int | None]:
    """Where ``find`` starts for a glob pattern, and how deep it needs to look (None: any depth)."""
    parts = pattern.split("/")
    fixed = 0
    while fixed < len(parts) and not _WILDCARD.search(parts[fixed]):
        fixed += 1
    if fixed == len(parts):  # no wildcard: the path itself
        return pattern, 0
    start = "/".join(parts[:fixed]) or "/"
    rest = parts[fixed:]
    return start, None if "**" in rest else len(rest)


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A regular expression matching the paths the glob pattern matches (as glob.glob with
    recursive=True: ``**`` is zero or more folders, ``*``/``?`` never cross a '/' nor match a
    leading '.')."""
    out: list[str] = []
    parts = pattern.split("/")
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "**":
            out.append(r"(?:[^/.][^/]*/)*" if not last else r"(?:[^/.][^/]*(?:/[^/.][^/]*)*)?")
            continue
        out.append(_component(part) + ("" if last else "/"))
    return re.compile("".join(out), re.DOTALL)


def _component(part: str) -> str:
    text = "" if part.startswith(".") or not _WILDCARD.search(part[:1]) else "(?!\\.)"
    i = 0
    while i < len(part):
        c = part[i]
        if c == "*":
            text += "[^/]*"
        elif c == "?":
            text += "[^/]"
        elif c == "[" and (end := _class_end(part, i)) > 0:
            body = part[i + 1:end]
            negate = body[:1] == "!"
            body = body[1:] if negate else body
            body = body.replace("\\", "\\\\").replace("^", "\\^").replace("[", "\\[")
            text += "[" + ("^" if negate else "") + body + "]"
            i = end
        else:
            text += re.escape(c)
        i += 1
    return text


def _class_end(part: str, start: int) -> int:
    """Index of the ']' closing the class opened at ``start``, or -1 (then '[' is literal)."""
    j = start + 1
    if j < len(part) and part[j] == "!":
        j += 1
    if j < len(part) and part[j] == "]":
        j += 1
    return part.find("]", j)


def list_host(ssh: SshConfig, host: str, starts: Sequence[tuple[str, int | None]],
              source: str) -> tuple[list[list[RemoteFile]], str]:
    """What ``find`` finds under each (start, depth) on ``host``, in one ssh connection; and its
    complaints (stderr: starts that do not exist).  ConfigError if the host cannot be reached."""
    request = "".join(f"{start}\n{'' if depth is None else depth}\n" for start, depth in starts)
    argv = ssh_argv(ssh, host, shlex.join(["sh", "-c", LIST_SCRIPT]))
    try:
        proc = subprocess.run(argv, input=request.encode("utf-8", "surrogateescape"), capture_output=True,
                              timeout=LIST_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise ConfigError(f"{source}: listing the inputs on {host} took over {LIST_TIMEOUT_S:g} s") from None
    complaints = proc.stderr.decode("utf-8", "replace").strip()
    if proc.returncode == 255:  # ssh's own failure: not reached, not logged in
        raise ConfigError(f"{source}: cannot list the inputs on {host} over ssh: {complaints or 'ssh failed'}")
    lists = _parse(proc.stdout, len(starts))
    if lists is None:
        raise ConfigError(f"{source}: the listing from {host} ended early (exit {proc.returncode}): "
                          f"{complaints or 'no message'}")
    return lists, complaints


def _parse(out: bytes, n: int) -> list[list[RemoteFile]] | None:
    records = out.split(b"\0")
    lists: list[list[RemoteFile]] = [[]]
    for record in records[:-1]:  # the last is what follows the final NUL: nothing
        if not record:
            lists.append([])
            continue
        size, mtime, path = record.split(b" ", 2)
        lists[-1].append(RemoteFile(path.decode("utf-8", "surrogateescape"), int(size), float(mtime)))
    lists.pop()  # opened by the last empty record
    return lists if len(lists) == n else None
