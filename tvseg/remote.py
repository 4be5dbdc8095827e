"""Remote inputs (``host:/path``): how orchestrator and worker name them and reach them over ssh.

An input written ``host:/absolute/path`` (``user@host:/...`` too) lives on an archive
server: ``submit`` lists it over ssh, the worker stages it with rsync over ssh.  Both
build their commands here, as argument lists, from the job's ``ssh:`` options.  The one
string that is not an argument list is rsync's ``-e`` (its remote-shell command),
which rsync splits itself, honouring single quotes: every word of it is quoted.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

# host: letters, digits, '.', '_', '-' (an optional user@ before it); then ':' and an absolute path.
# A local path whose first component holds a colon ("a:b/c.mp4", "./x:/y") never matches: it
# has a '/' or a '.' component before the colon, or no '/' right after it.
_REMOTE = re.compile(r"^((?:[A-Za-z0-9_][A-Za-z0-9_.-]*@)?[A-Za-z0-9][A-Za-z0-9_.-]*):(/.*)$", re.DOTALL)


@dataclass(frozen=True)
class SshConfig:
    """jobs.yaml ``ssh:``: how to reach the hosts of remote inputs (listing and staging)."""

    user: str | None = None
    port: int | None = None
    identity_file: str | None = None  # absolute (resolved against jobs.yaml's folder)
    options: tuple[str, ...] = ()  # ssh -o options, "Key=value"
    connect_timeout: int = 20  # seconds: ssh ConnectTimeout, and rsync --timeout (I/O stall) x3
    retries: int = 5  # transfer attempts after the first, on transient faults
    retry_delay: float = 2.0  # seconds before the first retry; doubles each time, at most 60 s
    rsync_options: tuple[str, ...] = ()  # extra rsync arguments, e.g. "--bwlimit=50M"


def split_remote(path: str) -> tuple[str, str] | None:
    """``(host, path)`` of a remote input ``host:/path``; None for a local path."""
    m = _REMOTE.match(path)
    return (m.group(1), m.group(2)) if m else None


def ssh_options(ssh: SshConfig) -> list[str]:
    """The ssh arguments before the destination: non-interactive, with the job's options."""
    argv = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={ssh.connect_timeout}"]
    if ssh.port is not None:
        argv += ["-p", str(ssh.port)]
    if ssh.user is not None:
        argv += ["-l", ssh.user]
    if ssh.identity_file is not None:
        argv += ["-i", ssh.identity_file, "-o", "IdentitiesOnly=yes"]
    for option in ssh.options:
        argv += ["-o", option]
    return argv


def ssh_argv(ssh: SshConfig, host: str, remote_command: str) -> list[str]:
    """ssh to ``host`` running ``remote_command`` (a constant of the caller: never a path)."""
    return ["ssh", *ssh_options(ssh), "--", host, remote_command]


def rsync_rsh(ssh: SshConfig) -> str:
    """rsync's ``-e`` value: the ssh command, each word single-quoted for rsync's own splitter
    (which knows quotes but not backslashes, so shlex.quote's '"'"' form is what it reads)."""
    return " ".join(shlex.quote(word) for word in ["ssh", *ssh_options(ssh)])


_GLOB_SPECIAL = re.compile(r"([*?\[])")


def rsync_source(host: str, path: str) -> str:
    """The source argument of rsync for one remote file.  With ``--secluded-args`` (``-s``) no
    remote shell sees it, but the remote rsync still expands wildcards: a backslash before
    ``*``, ``?`` and ``[`` makes them literal (a backslash elsewhere stays as it is: tested
    with names holding both)."""
    return host + ":" + _GLOB_SPECIAL.sub(r"\\\1", path)
