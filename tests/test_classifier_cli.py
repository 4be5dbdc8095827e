"""`classifier dataset` on a login node: no TensorFlow, Keras or numpy imported; captions from a
sibling .txt when there is no .txt3; files without keyframes counted."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

from orchestrator.manifest import output_name
from tests.helpers import write_jobs

CODE = """
import sys
from orchestrator.cli import main
assert main(['submit', sys.argv[1], '--wait']) == 0
{prepare}
assert main(['classifier', 'dataset', sys.argv[1], sys.argv[2]]) == 0
try:
    main(['classifier', 'train', '--help'])
except SystemExit:
    pass
print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'numpy', 'inaSpeechSegmenter')))
"""

PREPARE = """
from pathlib import Path
out = Path(sys.argv[3])
(out / 'keyframes').mkdir()
for name in ('00000_000000.500.jpg', '00000_000001.500.jpg'):
    (out / 'keyframes' / name).write_bytes(b'jpeg')
(out / 'keyframes.csv').write_text('segment,time,path\\n0,0.500,keyframes/00000_000000.500.jpg\\n'
                                   '0,1.500,keyframes/00000_000001.500.jpg\\n')
"""


def test_dataset_on_a_login_node(tmp_path, make_clips):
    clips = make_clips(tmp_path / "media", 2)
    (clips[0].with_suffix(".txt")).write_text(
        "TOP|20060102000000|x\nnot a caption line\n"
        "20060102000001.000|20060102000002.000|SEG_00|Type=Commercial\n", encoding="utf-8")
    jobs = write_jobs(tmp_path)
    out = tmp_path / "frames"
    target = tmp_path / "work" / "outputs" / output_name(str(clips[0]))
    proc = subprocess.run([sys.executable, "-c", CODE.format(prepare=PREPARE), str(jobs), str(out), str(target)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"
    report = json.loads((out / "dataset.json").read_text())
    assert report["frames"] == {"captions .txt": {"unlabelled": 1, "commercial": 1}}
    assert report["files"] == 2 and report["without_keyframes"] == 1
    assert report["bad_caption_lines"] == 1 and report["bad_caption_examples"] == [
        f"{clips[0].with_suffix('.txt')}:2: neither a header line nor start|end|tag|..."]
    assert "1 caption line(s) could not be parsed" in proc.stdout
    shutil.rmtree(out)
    missing = subprocess.run([sys.executable, "-m", "orchestrator.cli", "classifier", "dataset",
                              str(tmp_path / "nowhere.yaml"), str(out)], capture_output=True, text=True)
    assert missing.returncode == 2 and "nowhere.yaml: no such file" in missing.stderr
