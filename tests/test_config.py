"""jobs.yaml validation: exact messages, exit 2, and nothing created."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import write_jobs


def _bad(tmp_path: Path, cli, text: str) -> tuple[str, Path]:
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text(text, encoding="utf-8")
    run = cli("submit", jobs)
    assert run.code == 2
    assert run.out == ""
    assert not (tmp_path / "work").exists()  # nothing written, nothing submitted
    return run.err.replace("\n", ""), jobs


def test_unknown_key_names_file_line_and_valid_keys(tmp_path, cli):
    err, jobs = _bad(tmp_path, cli, "name: t\nworkdir: work\ninputs: ['*.mp4']\nworker:\n  queue_depht: 4\n")
    assert err == (f"error: {jobs}:5: worker.queue_depht: unknown key; valid keys: queue_depth, scratch_dir, "
                   "scratch_budget, max_attempts, heartbeat_seconds, python, stages")


def test_unknown_top_level_key(tmp_path, cli):
    err, jobs = _bad(tmp_path, cli, "name: t\nworkdir: work\ninputz: ['*.mp4']\n")
    assert err == (f"error: {jobs}:3: inputz: unknown key; valid keys: name, workdir, inputs, inputs_from, "
                   "executor, sharding, slurm, worker, stage_settings, ssh, container")


def test_wrong_type(tmp_path, cli):
    err, jobs = _bad(tmp_path, cli, "name: t\nworkdir: work\ninputs: ['*.mp4']\nworker:\n  queue_depth: eight\n")
    assert err == f"error: {jobs}:5: worker.queue_depth: expected a positive integer, got 'eight'"


def test_missing_inputs(tmp_path, cli):
    err, jobs = _bad(tmp_path, cli, "name: t\nworkdir: work\n")
    assert err == (f"error: {jobs}:1: inputs: no inputs: give 'inputs' (glob patterns) and/or 'inputs_from' "
                   "(a file of paths)")


def test_pattern_matching_nothing(tmp_path, cli):
    err, jobs = _bad(tmp_path, cli, "name: t\nworkdir: work\ninputs: ['media/*.mp4']\nexecutor: local\n")
    assert err == f"error: {jobs}: inputs: pattern 'media/*.mp4' matches no file (looked for {tmp_path}/media/*.mp4)"


def test_unknown_stage_lists_registered(tmp_path, cli):
    err, jobs = _bad(tmp_path, cli, "name: t\nworkdir: work\ninputs: ['*.mp4']\nworker:\n  stages: [probe, segmnt]\n")
    assert err.startswith(f"error: {jobs}:5: worker.stages[1]: unknown stage 'segmnt'; registered stages: ")
    assert "probe" in err


def test_bad_executor_and_size(tmp_path, cli):
    err, jobs = _bad(tmp_path, cli, "name: t\nworkdir: work\ninputs: ['*.mp4']\nexecutor: pbs\n")
    assert err == f"error: {jobs}:4: executor: 'pbs' is not one of auto, local, slurm"
    err, jobs = _bad(tmp_path, cli, "name: t\nworkdir: work\ninputs: ['*.mp4']\nworker: {scratch_budget: lots}\n")
    assert err.startswith(f"error: {jobs}:4: worker.scratch_budget: expected a size like 50G, got 'lots'")


def test_not_yaml_and_missing_file(tmp_path, cli):
    err, jobs = _bad(tmp_path, cli, "name: [t\n")
    assert err.startswith(f"error: {jobs}:2: not valid YAML")
    run = cli("status", tmp_path / "nope.yaml")
    assert (run.code, run.err.strip()) == (2, f"error: {tmp_path / 'nope.yaml'}: no such file (give the path of a jobs.yaml)")


def test_status_before_submit(tmp_path, cli, make_clips):
    make_clips(tmp_path / "media", 1)
    jobs = write_jobs(tmp_path)
    run = cli("status", jobs)
    assert run.code == 2
    assert run.err.strip() == f"error: no manifest at {tmp_path}/work/manifest.sqlite: run 'orchestrate submit' first"


def test_valid_config_resolves_paths(tmp_path):
    from orchestrator.config import load_config

    (tmp_path / "list.txt").write_text("a.mp4\n")
    jobs = write_jobs(tmp_path, inputs_from="list.txt", worker={"scratch_budget": "1.5G"},
                      slurm={"cpus-per-task": 2, "extra-sbatch": {"nice": 10}})
    config = load_config(jobs)
    assert config.workdir == tmp_path / "work"
    assert config.inputs_from == tmp_path / "list.txt"
    assert config.worker.scratch_budget == int(1.5 * 1024**3)
    assert config.worker.stages == ("probe",)
    assert config.slurm.cpus_per_task == 2
    assert dict(config.slurm.extra_sbatch) == {"nice": "10"}


@pytest.mark.parametrize("budget", ["0", "-5"])
def test_nonpositive_budget(tmp_path, cli, budget):
    err, jobs = _bad(tmp_path, cli, f"name: t\nworkdir: work\ninputs: ['*.mp4']\nworker: {{scratch_budget: {budget}}}\n")
    assert "worker.scratch_budget: expected a size like 50G" in err
