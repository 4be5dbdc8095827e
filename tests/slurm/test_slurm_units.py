"""The pure parts of orchestrator/slurm.py and the retry resources: no cluster needed.

RECORDED is sacct output recorded on the dev cluster (288 while it ran).  BY_HAND rows are written in the
same format by hand: NODE_FAIL, BOOT_FAIL, PREEMPTED and the cgroup OUT_OF_MEMORY cannot
happen on a single node without preemption or cgroups; the others vary recorded rows.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import pytest

from orchestrator import orchestration
from orchestrator.config import load_config
from orchestrator.task_state import TaskState
from orchestrator.manifest import InputFile, Manifest
from orchestrator.slurm import ArraySpec, array_chunks, parse_sacct, sbatch_script
from tvseg.config import SlurmConfig
from tvseg.errors import ConfigError

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
PYTHON = "/opt/tv seg's env/bin/python"  # the script must quote it for bash
LATER = datetime(2026, 11, 25)  # "now" for sacct output: long after every End below


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("TVSEG_UPDATE_GOLDEN") == "1":
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8")


def test_sbatch_script_with_every_option_matches_golden():
    slurm = SlurmConfig(
        partition="gpu", time="1-12:00:00", mem="32G", cpus_per_task=8, gpus=2, account="tv-archive",
        qos="long", constraint="a100|v100", array_parallelism=20, signal_delay=600,
        extra_sbatch={"mail-type": "FAIL", "comment": "it's a test", "exclusive": ""},
    )
    text = sbatch_script(ArraySpec("demo-s3.2", 7, depends_on="4711"), slurm, [PYTHON])
    check_golden("sbatch_full.sh", text)


def test_sbatch_script_with_defaults_matches_golden():
    text = sbatch_script(ArraySpec("demo-s1", 1000), SlurmConfig(), ["/usr/bin/python3"])
    check_golden("sbatch_minimal.sh", text)


def test_throttle_never_exceeds_the_array():
    text = sbatch_script(ArraySpec("x-s1", 2), SlurmConfig(array_parallelism=20), ["python"])
    assert "#SBATCH --array=0-1%2" in text.splitlines()


@pytest.mark.parametrize(("n", "max_size", "expected"), [
    (10, 4, [range(0, 4), range(4, 8), range(8, 10)]),
    (4, 4, [range(0, 4)]),
    (5, 10001, [range(0, 5)]),
    (1, 1, [range(0, 1)]),
])
def test_array_chunks_cap_the_index(n, max_size, expected):
    assert array_chunks(n, max_size) == expected


RECORDED = """\
99_0|FAILED|9:0|0:9||100M|1|UNLIMITED|vm|2026-11-24T16:12:44
99_0.batch|FAILED|9:0||12232K||1||vm|2026-11-24T16:12:44
99_0.0|CANCELLED by 0|0:9||136284K||1||vm|2026-11-24T16:12:44
117_0|COMPLETED|0:0|0:0||1000M|1|00:01:00|vm|2026-11-24T16:13:57
117_0.batch|COMPLETED|0:0||||1||vm|2026-11-24T16:13:57
288_0|CANCELLED by 0|0:0|0:0||100M|1|365-00:00:00|vm|2026-11-24T16:22:05
288_0.batch|CANCELLED|0:15||3108K||1||vm|2026-11-24T16:22:05
288_1|RUNNING|0:0|0:0||100M|1|UNLIMITED|vm|Unknown
288_1.batch|RUNNING|0:0||||1||vm|Unknown
288_[2-3,5%1]|PENDING|0:0|0:0||100M|1|UNLIMITED|None assigned|Unknown
292_0|FAILED|0:9|0:0||100M|1|UNLIMITED|vm|2026-11-24T16:22:12
292_0.batch|CANCELLED by 0|0:9||300000K||1||vm|2026-11-24T16:22:12
287_0|TIMEOUT|0:0|0:0||100M|1|00:01:00|vm|2026-11-24T16:23:08
287_0.batch|CANCELLED|0:15||3152K||1||vm|2026-11-24T16:23:08
334_[0-1]|CANCELLED by 0|0:0|0:0||200M|1|00:05:00|None assigned|2026-11-24T16:25:46
"""
BY_HAND = """\
301_0|REQUEUED|0:0|0:0||1000M|1|00:01:00|vm|2026-11-24T12:00:00
302_0|FAILED|1:0|0:0||200M|1|00:05:00|vm|2026-11-24T12:00:00
302_0.batch|FAILED|1:0||31000K||1||vm|2026-11-24T12:00:00
303_1|FAILED|0:9|0:0||200M|1|00:05:00|vm|2026-11-24T12:00:00
303_1.batch|CANCELLED by 0|0:9||31000K||1||vm|2026-11-24T12:00:00
400_0|NODE_FAIL|0:0|0:0||16G|4|04:00:00|node17|2026-11-24T12:00:00
401_0|BOOT_FAIL|0:0|0:0||16G|4|04:00:00|node18|2026-11-24T12:00:00
402_0|PREEMPTED|0:15|0:0||16G|4|04:00:00|node19|2026-11-24T12:00:00
403_0|OUT_OF_MEMORY|0:125|0:0||4000Mc|4|04:00:00|node20|2026-11-24T12:00:00
403_0.batch|OUT_OF_MEMORY|0:125||16384000K||4||node20|2026-11-24T12:00:00
404_0|SUSPENDED|0:0|0:0||16G|4|04:00:00|node21|2026-11-24T12:00:00
404_1|SOMETHING_NEW|0:0|0:0||16G|4|04:00:00|node21|2026-11-24T12:00:00
"""


def test_sacct_states_map_onto_tasks():
    asked = ["99_0", "117_0", "288_0", "288_1", "288_2", "288_3", "288_4", "288_5", "292_0", "287_0", "334_0", "334_1",
             "999_0"]
    states = parse_sacct(RECORDED, asked, LATER, 10.0)
    assert states == {
        # srun in the job: the step was killed by signal 9 at MaxRSS above the request
        "99_0": TaskState("99_0", "OUT_OF_MEMORY", True,
                          "killed by signal 9 with MaxRSS 134M of 100M requested (a memory kill, without cgroups)"),
        "117_0": TaskState("117_0", "COMPLETED", True, ""),
        "288_0": TaskState("288_0", "CANCELLED", True, "cancelled by uid 0"),
        "288_1": TaskState("288_1", "RUNNING", False, ""),
        "288_2": TaskState("288_2", "PENDING", False, ""),  # from the pending range 2-3,5
        "288_3": TaskState("288_3", "PENDING", False, ""),
        "288_5": TaskState("288_5", "PENDING", False, ""),
        # tvseg's own scripts run the worker as the batch step: FAILED 0:9
        "292_0": TaskState("292_0", "OUT_OF_MEMORY", True,
                           "killed by signal 9 with MaxRSS 293M of 100M requested (a memory kill, without cgroups)"),
        "287_0": TaskState("287_0", "TIMEOUT", True, "time limit 00:01:00 reached"),
        # cancelled before any task started: one range row
        "334_0": TaskState("334_0", "CANCELLED", True, "cancelled by uid 0"),
        "334_1": TaskState("334_1", "CANCELLED", True, "cancelled by uid 0"),
    }


def test_states_written_by_hand():
    asked = ["301_0", "302_0", "303_1", "400_0", "401_0", "402_0", "403_0", "404_0", "404_1"]
    states = parse_sacct(BY_HAND, asked, LATER, 10.0)
    assert states == {
        "301_0": TaskState("301_0", "REQUEUED", False, "requeued"),
        "302_0": TaskState("302_0", "FAILED", True, "exit code 1"),
        # signal 9 far below the memory asked for: not a memory kill
        "303_1": TaskState("303_1", "FAILED", True, "killed by signal 9"),
        "400_0": TaskState("400_0", "NODE_FAIL", True, "node failure (node17)"),
        "401_0": TaskState("401_0", "BOOT_FAIL", True, "node boot failure (node18)"),
        "402_0": TaskState("402_0", "PREEMPTED", True, "preempted by another job"),
        # with cgroups; ReqMem per CPU (Mc) times 4 CPUs
        "403_0": TaskState("403_0", "OUT_OF_MEMORY", True, "killed for memory: MaxRSS 16000M of 16000M requested"),
        "404_0": TaskState("404_0", "SUSPENDED", False, ""),
        "404_1": TaskState("404_1", "SOMETHING_NEW", False, "unrecognised SLURM state SOMETHING_NEW"),
    }


def test_a_task_is_not_over_while_slurm_may_still_be_stopping_it():
    # cancelled at 16:22:05: SLURM signals it then, and kills it KillWait later
    rows = RECORDED.splitlines()[5:7]
    at = datetime(2026, 11, 24, 16, 22, 14)
    assert parse_sacct("\n".join(rows), ["288_0"], at, 10.0) == {
        "288_0": TaskState("288_0", "CANCELLED", False, "stopping (cancelled by uid 0)")}
    assert parse_sacct("\n".join(rows), ["288_0"], at, 8.0) == {
        "288_0": TaskState("288_0", "CANCELLED", True, "cancelled by uid 0")}


# --- retry resources ---------------------------------------------------------------------


def jobs_yaml(folder: Path, slurm: str) -> Path:
    (folder / "media").mkdir()
    (folder / "media" / "a.mp4").write_bytes(b"x")
    path = folder / "jobs.yaml"
    path.write_text(f"name: t\nworkdir: work\ninputs: [media/*.mp4]\nexecutor: slurm\nworker: {{stages: [probe]}}\n"
                    f"slurm:\n{slurm}", encoding="utf-8")
    return path


def ended(config, reasons_and_resources) -> Manifest:
    """A manifest with one single-file shard per (end reason, submitted resources)."""
    manifest = Manifest(config.manifest_path, create=True)
    for i, (reason, resources) in enumerate(reasons_and_resources):
        [shard] = manifest.add_shards([[InputFile(f"/in/{i}.mp4", 10, 1.0)]])
        manifest.record_submission("submit", "slurm", [shard], [f"{100 + i}_0"], resources)
        manifest.end_shard(shard, reason)
    return manifest


def test_retry_raises_memory_and_time_by_the_factor_up_to_the_caps(tmp_path):
    config = load_config(jobs_yaml(tmp_path, '  mem: 1G\n  time: "01:00:00"\n  max-mem: 3G\n  max-time: "03:00:00"\n'
                                             "  grow-factor: 1.5\n"))
    manifest = ended(config, [
        ("OUT_OF_MEMORY: killed by signal 9 with MaxRSS 1G of 1G requested", {"mem": "1G", "time": "01:00:00"}),
        ("OUT_OF_MEMORY: killed for memory", {"mem": "2500M", "time": "01:00:00"}),
        ("TIMEOUT: time limit 01:00:00 reached", {"mem": "1G", "time": "01:00:00"}),
        ("FAILED: exit code 1", {"mem": "1G", "time": "01:00:00"}),
    ])
    plan = orchestration.plan_retry(config, manifest, include_quarantined=False)
    assert (plan.mem, plan.time) == ("3G", "01:30:00")  # 2500M x 1.5 capped at 3G; 1 h x 1.5
    assert plan.notes == [
        "OUT_OF_MEMORY: mem raised from 2500M to 3G (x1.5, at most slurm.max-mem 3G)",
        "TIMEOUT: time raised from 01:00:00 to 01:30:00 (x1.5, at most slurm.max-time 03:00:00)",
    ]
    manual = orchestration.plan_retry(config, manifest, include_quarantined=False, mem="8G")
    assert (manual.mem, manual.time) == ("8G", "01:30:00")
    manifest.close()


def test_retry_without_caps_keeps_the_resources_and_says_so(tmp_path):
    config = load_config(jobs_yaml(tmp_path, "  mem: 1G\n"))
    manifest = ended(config, [("OUT_OF_MEMORY: killed for memory", {"mem": "1G"}),
                              ("COMPLETED", {"executor": "local"})])
    plan = orchestration.plan_retry(config, manifest, include_quarantined=False)
    assert (plan.mem, plan.time) == (None, None)
    assert plan.notes == ["OUT_OF_MEMORY: slurm.max-mem is not set, so mem stays 1G (or give retry --mem)"]
    manifest.close()


def test_retry_at_the_cap_stays_there(tmp_path):
    config = load_config(jobs_yaml(tmp_path, "  mem: 1G\n  max-mem: 2G\n"))
    manifest = ended(config, [("OUT_OF_MEMORY: killed for memory", {"mem": "2G"})])
    plan = orchestration.plan_retry(config, manifest, include_quarantined=False)
    assert plan.mem == "2G"
    assert plan.notes == ["OUT_OF_MEMORY: mem was already at slurm.max-mem (2G); it stays there (or give retry --mem)"]
    manifest.close()


@pytest.mark.parametrize(("slurm", "line", "message"), [
    ('  time: "1:30"\n', 7, 'slurm.time: slurm.signal-delay (300 s) must be shorter than the time limit (1:30 = 90 s)'),
    ("  time: 04:00:00\n  max-time: 02:00:00\n", 8, "slurm.max-time: 02:00:00 is below slurm.time (04:00:00)"),
    ("  mem: 16G\n  max-mem: 8G\n", 8, "slurm.max-mem: 8G is below slurm.mem (16G)"),
    ("  mem: lots\n", 7, "slurm.mem: expected a SLURM memory like 16G, got 'lots'"),
    ("  grow-factor: 1\n", 7, "slurm.grow-factor: expected a number above 1, got 1 (must be more than 1)"),
    ("  signal-delay: 0\n", 7, "slurm.signal-delay: expected a positive number of seconds, got 0"),
    ("  extra-sbatch:\n    comment: \"it's \\\"both\\\"\"\n", 8,
     "slurm.extra-sbatch.comment: expected a string, got 'it\\'s \"both\"' (sbatch cannot take a value with both "
     "kinds of quote)"),
])
def test_slurm_keys_are_validated(tmp_path, slurm, line, message):
    path = jobs_yaml(tmp_path, slurm)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}:{line}: {message}")


def test_unquoted_yaml_times_are_read_as_written(tmp_path):
    # YAML 1.1 reads 04:00:00 as the number 14400 (base 60), which SLURM would take as minutes
    config = load_config(jobs_yaml(tmp_path, "  time: 04:00:00\n  max-time: 1-00:00:00\n"))
    assert (config.slurm.time, config.slurm.max_time) == ("04:00:00", "1-00:00:00")


def test_retry_overrides_are_checked_before_anything_runs(tmp_path, cli, capsys):
    jobs = jobs_yaml(tmp_path, "  signal-delay: 300\n")
    run = cli("retry", jobs, "--time", "5")
    assert (run.code, run.err) == (2, "error: --time 5 is not longer than slurm.signal-delay (300 s)\n")
    with pytest.raises(SystemExit) as caught:
        cli("retry", jobs, "--mem", "lots")
    assert caught.value.code == 2
    assert capsys.readouterr().err.endswith("argument --mem: not a SLURM memory size: 'lots' (use a number with K, "
                                            "M, G or T; no unit means M)\n")
