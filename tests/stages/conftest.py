"""Fixtures of the stage tests: model files and generated media, made once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.media import make_program
from tvseg.errors import ModelError
from worker.models import fetch_models, verify_model_dir

PROGRAM = [("speech", 15), ("music", 15), ("speech", 15), ("noise", 7.5), ("silence", 7.5)]


@pytest.fixture(scope="session")
def fetched_models(tmp_path_factory) -> Path:
    """The model files fetched for real from the inaSpeechSegmenter 0.6.8 wheel (pip download)."""
    dest = tmp_path_factory.mktemp("models")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KERAS_HOME", str(tmp_path_factory.mktemp("empty-keras-home")))  # no shortcut via a cache
        fetch_models(dest)
    return dest


@pytest.fixture(scope="session")
def model_dir(request) -> Path:
    """$TVSEG_MODEL_DIR if it holds verified model files, else the fetched ones."""
    env = os.environ.get("TVSEG_MODEL_DIR")
    if env:
        try:
            verify_model_dir(Path(env))
            return Path(env)
        except ModelError:
            pass
    return request.getfixturevalue("fetched_models")


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def program(media_dir) -> tuple[Path, list[tuple[str, float, float]]]:
    """A 60 s mp4 (speech, music, speech, noise, silence) named with a space, quotes, a colon
    and non-ASCII characters; and its truth."""
    path = media_dir / "émission: l'été \"1\".mp4"
    return path, make_program(path, PROGRAM)
