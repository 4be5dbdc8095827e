"""Remote inputs (host:/path): listing over one ssh connection per host, staging with rsync over
ssh, with a real sshd on 127.0.0.1 (tests/sshd.py) and the local executor."""

from __future__ import annotations

import glob
import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from orchestrator import orchestration
from orchestrator.config import load_config
from orchestrator.remote import glob_regex, glob_start
from tests.helpers import journal_records, wait_for, write_jobs
from tests.slurm.slurm_helpers import sleep_stage  # noqa: F401 - a fixture
from tvseg.errors import ConfigError
from tvseg.remote import SshConfig, split_remote
from tvseg.task import TaskFile
from worker.staging import RsyncStager
from tvseg.states import FileState

CANARY = Path("/tmp/pwned")
# Names that break shell strings, line-based listings and naive rsync calls.
NAMES = ["plain.mp4", "a b.mp4", "q'uo\"te.mp4", "semi;colon.mp4", "$(touch /tmp/pwned).mp4", "new\nline.mp4",
         "été 日本.mp4", "star*[1]?.mp4", "back\\slash.mp4", "-dash.mp4"]


def awkward_archive(root: Path, clip: Path, pad: int = 0, names: list[str] = NAMES) -> list[Path]:
    """Copies of ``clip`` under ``root`` named by NAMES (the `$(...)` one spans folders)."""
    paths = []
    for i, name in enumerate(names):
        path = root / "shows" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(clip, path)
        if pad:
            with open(path, "ab") as fh:
                fh.write(b"\0" * pad * (i + 1))
        paths.append(path)
    return paths


def remote_jobs(folder: Path, sshd, archive: Path, **overrides) -> Path:
    ssh = overrides.pop("ssh", {})
    return write_jobs(folder, inputs=[f"127.0.0.1:{archive}/**/*.mp4"], ssh=sshd.jobs_ssh(**ssh), **overrides)


def accepted(sshd) -> int:
    """Connections the server has accepted so far (its log says so once each)."""
    return sshd.log.read_text(errors="replace").count("Accepted publickey")


def file_ends(workdir: Path) -> list[dict]:
    return [r for r in journal_records(workdir) if r["kind"] == "file_end"]


# --- pure parts -----------------------------------------------------------------------------


def test_split_remote_tells_remote_inputs_from_local_paths():
    assert split_remote("archive:/tv/**/*.mp4") == ("archive", "/tv/**/*.mp4")
    assert split_remote("tv@arch-01.lab:/a b/c:d.mp4") == ("tv@arch-01.lab", "/a b/c:d.mp4")
    assert split_remote("127.0.0.1:/x\ny") == ("127.0.0.1", "/x\ny")
    for local in ("/media/émission: l'été.mp4", "media/a:/b.mp4", "./host:/x.mp4", "host:relative.mp4", "x.mp4"):
        assert split_remote(local) is None, local


def test_glob_regex_matches_what_glob_matches(tmp_path):
    """The remote listing filters find's output with glob_regex: it must pick what glob.glob
    (recursive) picks here, for the same tree and patterns."""
    for rel in ["a.mp4", "b.txt", ".hidden.mp4", "x/c.mp4", "x/y/d.mp4", "x/.h/e.mp4", "x [1]/f.mp4", "x1/g.mp4",
                "z/a.mp4", "z/y/ab.mp4"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("")
    root = str(tmp_path)
    for pattern in ["*.mp4", "**/*.mp4", "x/**/*.mp4", "x*/*.mp4", "?/*.mp4", "[xz]/**", "x [[]1]/*.mp4",
                    "[!x]/a.mp4", "**", "z/y/a?.mp4", "a.mp4"]:
        full = f"{root}/{pattern}"
        want = {p for p in glob.glob(full, recursive=True) if os.path.isfile(p)}
        start, depth = glob_start(full)
        listed = []
        for folder, _dirs, names in os.walk(start):
            for name in names:
                path = os.path.join(folder, name)
                if depth is None or path[len(start):].count("/") <= depth:
                    listed.append(path)
        if os.path.isfile(start):
            listed = [start]
        got = {p for p in listed if glob_regex(full).fullmatch(p)}
        assert got == want, pattern


# --- against a real sshd ----------------------------------------------------------------


def test_awkward_remote_names_are_listed_in_one_connection_and_staged(tmp_path, sshd, clip_template, cli,
                                                                      weird_tmp_path):
    CANARY.unlink(missing_ok=True)
    archive = tmp_path / "archive"
    paths = awkward_archive(archive, clip_template)
    key = weird_tmp_path / "id key"  # the identity file's path goes through rsync's -e splitter
    shutil.copyfile(sshd.user_key, key)
    key.chmod(0o600)
    jobs = remote_jobs(tmp_path, sshd, archive, ssh={"identity_file": str(key)},
                       sharding={"files_per_shard": 4})
    config = load_config(jobs)

    before = accepted(sshd)
    plan = orchestration.plan_submit(config)
    assert accepted(sshd) - before == 1  # one connection for the host, not one per file
    listed = {f.path: f for shard in plan.shards for f in shard}
    assert set(listed) == {f"127.0.0.1:{p}" for p in paths}
    for p in paths:
        f = listed[f"127.0.0.1:{p}"]
        assert (f.size, f.mtime) == (p.stat().st_size, pytest.approx(p.stat().st_mtime, abs=1e-3))

    run = cli("submit", jobs, "--wait")
    assert run.code == 0, run.out + run.err
    ends = file_ends(config.workdir)
    assert len(ends) == len(NAMES) and all(e["state"] == "done" for e in ends)
    sizes = sorted(e["staging"]["bytes"] for e in ends)
    assert sizes == sorted(p.stat().st_size for p in paths)
    assert all(e["staging"]["seconds"] > 0 and e["staging"]["tries"] == 1 for e in ends)
    assert all(e["staging"]["literal"] == e["staging"]["bytes"] for e in ends)  # whole files came over
    snap = cli("status", jobs, "--json").json()
    assert snap["staging"]["files"] == len(NAMES) and snap["staging"]["bytes"] == sum(sizes)
    assert snap["staging"]["bytes_per_s"] > 0 and snap["compute"]["bytes_per_s"] > 0
    assert not CANARY.exists()  # no name reached a shell


def test_inputs_from_lists_remote_paths_in_the_same_connection(tmp_path, sshd, clip_template):
    archive = tmp_path / "archive"
    paths = awkward_archive(archive, clip_template, names=NAMES[:4])
    listing = tmp_path / "paths.txt"
    listing.write_text("".join(f"127.0.0.1:{p}\n" for p in [paths[1], archive / "missing é.mp4"]), encoding="utf-8")
    jobs = write_jobs(tmp_path, inputs=[f"127.0.0.1:{archive}/shows/p*.mp4"], inputs_from="paths.txt",
                      ssh=sshd.jobs_ssh())
    before = accepted(sshd)
    plan = orchestration.plan_submit(load_config(jobs))
    assert accepted(sshd) - before == 1
    listed = {f.path: (f.size, f.mtime) for shard in plan.shards for f in shard}
    assert listed == {
        f"127.0.0.1:{paths[0]}": (paths[0].stat().st_size, pytest.approx(paths[0].stat().st_mtime, abs=1e-3)),
        f"127.0.0.1:{paths[1]}": (paths[1].stat().st_size, pytest.approx(paths[1].stat().st_mtime, abs=1e-3)),
        f"127.0.0.1:{archive / 'missing é.mp4'}": (0, None),  # kept: the worker quarantines it with a reason
    }


def test_in_ci_the_sshd_fixture_fails_instead_of_skipping(tmp_path, monkeypatch):
    import tests.sshd  # noqa: PLC0415

    monkeypatch.setattr(tests.sshd, "SSHD", str(tmp_path / "no-sshd"))
    monkeypatch.delenv("CI", raising=False)
    assert "is not installed" in tests.sshd.start_or_fail(tmp_path / "a")  # outside CI: the reason to skip
    monkeypatch.setenv("CI", "true")
    with pytest.raises(AssertionError, match="CI=true: the ssh tests must run here, and cannot: .*no-sshd"):
        tests.sshd.start_or_fail(tmp_path / "b")


def test_unreachable_host_fails_submit_naming_it_and_writes_nothing(tmp_path, sshd):
    jobs = remote_jobs(tmp_path, sshd, tmp_path)
    sshd.stop()
    with pytest.raises(ConfigError) as info:
        orchestration.plan_submit(load_config(jobs))
    assert "127.0.0.1" in str(info.value) and "Connection refused" in str(info.value)
    assert not (tmp_path / "work").exists()


def test_remote_file_deleted_after_listing_fails_alone(tmp_path, sshd, clip_template):
    archive = tmp_path / "archive"
    paths = awkward_archive(archive, clip_template)
    config = load_config(remote_jobs(tmp_path, sshd, archive, sharding={"files_per_shard": 20}))
    plan = orchestration.plan_submit(config)
    gone = paths[4]
    gone.unlink()
    manifest = orchestration.open_manifest(config, create=True)
    try:
        orchestration.submit(config, plan)
        counts = orchestration.wait(config, manifest, lambda counts: None, poll_seconds=0.2)
        rows = {r["path"]: r for r in manifest.files_in(list(FileState))}
    finally:
        manifest.close()
    assert counts[FileState.DONE] == len(NAMES) - 1
    row = rows[f"127.0.0.1:{gone}"]
    assert row["state"] == FileState.QUARANTINED.value
    assert row["error"].startswith(f"127.0.0.1:{gone}: not found on 127.0.0.1: gone since submit listed it")
    assert "No such file" in row["error"]


def _submit_and_wait_for_done(config, n: int) -> None:
    manifest = orchestration.open_manifest(config, create=True)
    try:
        orchestration.submit(config, orchestration.plan_submit(config))

        def done() -> bool:
            orchestration.reconcile(config, manifest)
            return manifest.counts()[FileState.DONE] >= n

        wait_for(done, timeout=60, every=0.05, what=f"{n} files done")
    finally:
        manifest.close()


def test_sshd_down_mid_shard_transfers_retry_and_finish_when_it_returns(tmp_path, sshd, clip_template, cli):
    archive = tmp_path / "archive"
    awkward_archive(archive, clip_template, pad=60_000)
    # --bwlimit: each transfer takes a while, so that the server goes down mid-shard.
    jobs = remote_jobs(tmp_path, sshd, archive, sharding={"files_per_shard": 20},
                       ssh={"retries": 6, "retry_delay": 0.3, "rsync_options": ["--bwlimit=1000"]})
    config = load_config(jobs)
    _submit_and_wait_for_done(config, 2)
    sshd.stop()
    time.sleep(1.5)
    sshd.start()
    manifest = orchestration.open_manifest(config)
    try:
        counts = orchestration.wait(config, manifest, lambda counts: None, poll_seconds=0.2)
    finally:
        manifest.close()
    assert counts[FileState.DONE] == len(NAMES), counts
    assert max(e["staging"]["tries"] for e in file_ends(config.workdir)) > 1  # some transfer was retried


def test_sshd_gone_for_good_fails_files_retryably_and_retry_finishes_them(tmp_path, sshd, clip_template, cli):
    archive = tmp_path / "archive"
    awkward_archive(archive, clip_template, pad=60_000)
    jobs = remote_jobs(tmp_path, sshd, archive, sharding={"files_per_shard": 20},
                       ssh={"retries": 2, "retry_delay": 0.1, "rsync_options": ["--bwlimit=1000"]})
    config = load_config(jobs)
    _submit_and_wait_for_done(config, 2)
    sshd.stop()
    manifest = orchestration.open_manifest(config)
    try:
        counts = orchestration.wait(config, manifest, lambda counts: None, poll_seconds=0.2)
        failed = manifest.files_in([FileState.FAILED])
    finally:
        manifest.close()
    assert counts[FileState.DONE] >= 2 and counts[FileState.FAILED] >= 1, counts
    assert counts[FileState.DONE] + counts[FileState.FAILED] == len(NAMES)  # nothing lost
    for row in failed:
        assert row["error_class"] == "RetryableError"
        assert "failed 3 times" in row["error"] and "Connection refused" in row["error"], row["error"]
    sshd.start()
    run = cli("retry", jobs, "--wait")
    assert run.code == 0, run.out + run.err
    assert f"{len(failed)} file(s) to retry ({len(failed)} failed)" in run.out


def test_scratch_never_holds_more_than_the_byte_budget(tmp_path, sshd, clip_template, cli, sleep_stage):
    archive = tmp_path / "archive"
    paths = awkward_archive(archive, clip_template, names=NAMES[:4])  # equal sizes
    budget = 2 * paths[0].stat().st_size
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    # Compute (2 s a file) far slower than staging (~0.1-0.5 s): without the budget the queue of 8
    # would hold the 4 files at once.
    jobs = remote_jobs(tmp_path, sshd, archive, sharding={"files_per_shard": 20},
                       worker={"stages": ["sleep"], "scratch_dir": str(scratch), "scratch_budget": budget,
                               "queue_depth": 8},
                       stage_settings={"sleep": {"seconds": 2.0}})
    peak = [0]
    finished = threading.Event()

    def measure() -> None:
        while not finished.is_set():
            used = 0
            for folder, _dirs, names in os.walk(scratch):
                for name in names:
                    try:
                        used += os.stat(os.path.join(folder, name)).st_size
                    except FileNotFoundError:
                        pass
            peak[0] = max(peak[0], used)

    sampler = threading.Thread(target=measure)
    sampler.start()
    try:
        run = cli("submit", jobs, "--wait")
    finally:
        finished.set()
        sampler.join()
    assert run.code == 0, run.out + run.err
    assert budget / 2 < peak[0] <= budget  # more than one file at once, never more than two
    assert list(scratch.iterdir()) == []


def test_ssh_keys_are_validated_with_file_and_line(tmp_path, cli):
    cases = [
        ({"ssh": {"identity_file": "keys/none"}}, f"ssh.identity_file: no such file: {tmp_path}/keys/none"),
        ({"ssh": {"port": 70000}}, "ssh.port: expected a port number, got 70000 (must be at most 65535)"),
        ({"ssh": {"options": ["StrictHostKeyChecking"]}},
         "ssh.options[0]: 'StrictHostKeyChecking' is not an ssh option"),
        ({"ssh": {"retries": -1}}, "ssh.retries: expected a non-negative integer"),
        ({"inputs": ["arch:/tv/a\nb.mp4"]}, "inputs[0]: a remote pattern cannot hold a line break"),
    ]
    for overrides, message in cases:
        jobs = write_jobs(tmp_path, **overrides)
        run = cli("submit", jobs, "--dry-run")
        assert run.code == 2 and f"{jobs}:" in run.err and message in run.err, (overrides, run.err)


def test_a_broken_transfer_is_retried_and_resumes_from_its_partial_copy(tmp_path, sshd):
    size = 3_000_000
    source = tmp_path / "archive" / "big é'.mp4"
    source.parent.mkdir()
    source.write_bytes(os.urandom(size))
    scratch = tmp_path / "scratch"
    ssh = SshConfig(**{**sshd.jobs_ssh(), "options": tuple(sshd.ssh_options)}, retries=3, retry_delay=0.2,
                    rsync_options=("--bwlimit=1000",))  # about 3 s for the whole file
    stager = RsyncStager(scratch, ssh, threading.Event())
    got: list = []
    worker = threading.Thread(target=lambda: got.append(stager.stage(TaskFile(1, f"127.0.0.1:{source}", size, "b"))))
    worker.start()

    def copied() -> int:
        return sum(p.stat().st_size for p in (scratch / "1").rglob("*") if p.is_file()) if (scratch / "1").exists() else 0

    try:
        wait_for(lambda: copied() > size // 2, timeout=60, what="half the file on scratch")
        assert sshd.drop_connections() >= 1  # the connection breaks mid-transfer
    finally:
        worker.join(timeout=120)
    (transfer,) = got
    assert transfer.path.read_bytes() == source.read_bytes()
    assert transfer.tries == 2
    assert transfer.literal is not None and transfer.literal < size * 0.6  # resumed: only the rest came over
    assert not (scratch / "1" / ".rsync-partial").exists() or not any((scratch / "1" / ".rsync-partial").iterdir())
