"""CLI behaviour that is not about a run: imports, internal errors, usage."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import write_jobs


def test_orchestrator_never_imports_tensorflow(tmp_path, make_clips, model_dir):
    make_clips(tmp_path / "media", 3)
    jobs = write_jobs(tmp_path)
    code = (
        "import sys\n"
        "from orchestrator.cli import main\n"
        f"assert main(['submit', {str(jobs)!r}, '--wait']) == 0\n"
        f"assert main(['status', {str(jobs)!r}]) == 0\n"
        f"assert main(['retry', {str(jobs)!r}, '--dry-run']) == 0\n"
        f"assert main(['models', 'fetch', '--dir', {str(model_dir)!r}]) == 0\n"  # converted: verified only
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in\n"
        "               ('tensorflow', 'keras', 'inaSpeechSegmenter', 'onnxruntime', 'onnx', 'tf2onnx', 'numpy'))\n"
        "print(heavy)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_corrupt_manifest_is_a_message_not_a_traceback(tmp_path, cli, make_clips):
    make_clips(tmp_path / "media", 1)
    jobs = write_jobs(tmp_path)
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "manifest.sqlite").write_bytes(b"this is not a database" * 100)
    run = cli("status", jobs)
    assert run.code == 1
    assert run.err.replace("\n", "") == (
        f"error: {tmp_path}/work/manifest.sqlite: cannot open the manifest: file is not a database"
    )


def test_bad_usage_exits_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "submit", "--bogus"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "unrecognized arguments: --bogus" in proc.stderr


def test_models_verify_and_its_fix_hint(tmp_path, cli, make_clips):
    missing = tmp_path / "no models"
    run = cli("models", "verify", "--dir", missing)
    assert run.code == 1
    assert run.err.replace("\n", "") == (
        f"error: model directory {missing} does not exist; fix: orchestrate models fetch --dir {missing}")
    make_clips(tmp_path / "media", 1)
    jobs = write_jobs(tmp_path)  # stages: probe only
    run = cli("models", "verify", jobs)
    assert (run.code, run.err.replace("\n", "")) == (
        2, f"error: {jobs}: worker.stages has no 'segment' stage, so no model_dir; use --dir")
