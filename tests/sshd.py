"""A real OpenSSH server on 127.0.0.1 for the remote-input tests (Debian's openssh-server).

``Sshd`` generates a host key and a user key, writes an sshd_config whose
AuthorizedKeysFile is its own (so root's real ~/.ssh is never touched), and starts
``/usr/sbin/sshd -D`` on a free port.  ``stop()`` and ``start()`` take the listener
down and bring it back (connections open at that moment go on, as with a real
restart).  Runs as root: sshd needs it to switch to the logged-in user.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.slurm_cluster import in_ci

SSHD = "/usr/sbin/sshd"
START_TIMEOUT_S = 20.0


def skip_reason() -> str | None:
    """Why a test sshd cannot run here, or None if it can."""
    if os.geteuid() != 0:
        return "the test sshd logs in as root and must run as root (not root here)"
    for tool in (SSHD, "ssh", "ssh-keygen", "rsync"):
        if not (os.path.exists(tool) if tool.startswith("/") else shutil.which(tool)):
            return f"{tool} is not installed (apt-get install openssh-server openssh-client rsync)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sshd:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
        self.port = free_port()
        self.host_key = folder / "host_ed25519"
        self.user_key = folder / "id_ed25519"
        for key in (self.host_key, self.user_key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "tvseg-test", "-f", str(key)],
                           check=True)
        (folder / "authorized_keys").write_text(Path(f"{self.user_key}.pub").read_text())
        host_pub = Path(f"{self.host_key}.pub").read_text().split()
        self.known_hosts = folder / "known_hosts"
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {host_pub[0]} {host_pub[1]}\n")
        self.config = folder / "sshd_config"
        self.config.write_text("\n".join([
            f"Port {self.port}",
            "ListenAddress 127.0.0.1",
            f"HostKey {self.host_key}",
            f"AuthorizedKeysFile {folder / 'authorized_keys'}",
            f"PidFile {folder / 'sshd.pid'}",
            "PermitRootLogin prohibit-password",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",
            "MaxStartups 100",
            "LogLevel INFO",  # one "Accepted publickey" line per connection: the tests count them
            "",
        ]))
        self.log = folder / "sshd.log"
        self.process: subprocess.Popen | None = None

    @property
    def ssh_options(self) -> list[str]:
        """The ``ssh.options`` a jobs.yaml needs to trust this server and nothing else."""
        return [f"UserKnownHostsFile={self.known_hosts}", "StrictHostKeyChecking=yes"]

    def jobs_ssh(self, identity_file: Path | None = None, **extra) -> dict:
        """The ``ssh:`` section of a jobs.yaml reaching this server as root."""
        return {"user": "root", "port": self.port, "identity_file": str(identity_file or self.user_key),
                "options": self.ssh_options, **extra}

    def start(self) -> None:
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation folder
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.config)], stdout=log, stderr=log,
                                            stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"sshd exited with {self.process.returncode}: {self.log.read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"sshd did not listen on port {self.port} within {START_TIMEOUT_S} s")
                time.sleep(0.05)

    def stop(self) -> None:
        """Stop listening (the listener process only: open sessions end on their own)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=10)
        self.process = None

    def drop_connections(self) -> int:
        """Kill this server's session processes (its children): every open connection breaks, as
        on a network fault; the listener stays.  Returns how many were killed."""
        if self.process is None:
            return 0
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        for pid in children:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        return len(children)

    def run(self, *command: str) -> subprocess.CompletedProcess:
        """Run a command on the server over ssh (as the tests' user would)."""
        argv = ["ssh", "-o", "BatchMode=yes", "-p", str(self.port), "-i", str(self.user_key),
                *(x for o in self.ssh_options for x in ("-o", o)), "root@127.0.0.1", *command]
        return subprocess.run(argv, capture_output=True, text=True, timeout=30)


def start_or_fail(folder: Path):
    """A started Sshd; in CI a failure to start fails the test, elsewhere it skips (returns the reason)."""
    reason = skip_reason()
    if reason is None:
        server = Sshd(folder)
        try:
            server.start()
            return server
        except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
            server.stop()
            reason = f"cannot start a test sshd: {exc}"
    if in_ci():
        raise AssertionError(f"CI={os.environ['CI']}: the ssh tests must run here, and cannot: {reason}")
    return reason
