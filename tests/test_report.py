"""`orchestrate report`: a self-contained HTML page, opened in a real headless browser (Debian's
chromium) whose screenshot must show the plots."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import cannot_run, write_jobs
from tests.slurm.slurm_helpers import sleep_stage  # noqa: F401 - a fixture: the test-only `sleep` stage

# Colours the report's plots use and its text does not: the progress curve, the stage bars,
# the memory bars, the throughput bars.
PLOT_COLOURS = {"progress": (0x1F, 0x77, 0xB4), "stages": (0x94, 0x67, 0xBD), "memory": (0x8C, 0x56, 0x4B),
                "throughput": (0x2C, 0xA0, 0x2C)}


def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        cannot_run("chromium is not installed (scripts/setup --test installs it)")
    return path


def screenshot(page: Path, png: Path, height: int) -> None:
    subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--user-data-dir={png.parent / 'chromium-profile'}", f"--screenshot={png}",
                    f"--window-size=1200,{height}", page.as_uri()],
                   capture_output=True, text=True, timeout=120, check=True)


def test_report_opens_in_a_browser_and_shows_its_plots(weird_tmp_path, cli, make_clips, sleep_stage):  # noqa: F811
    root = weird_tmp_path
    make_clips(root / "media", 6)
    (root / "media" / "broken 'one'.mp4").write_bytes(b"not a recording")
    (root / "media" / "broken two.mp4").write_bytes(b"")
    jobs = write_jobs(root, worker={"stages": ["probe", "sleep"], "heartbeat_seconds": 1},
                      stage_settings={"sleep": {"seconds": 0.3, "hold_mb": 60}}, sharding={"files_per_shard": 2})
    assert cli("submit", jobs, "--wait").code == 3

    out = root / "report dir é" / "run report.html"
    run = cli("report", jobs, "--out", out)
    assert run.code == 0, run.err
    assert f"report: {out} (8 file(s), 0 timeline(s)" in " ".join(run.out.split())
    page = out.read_text(encoding="utf-8")
    assert len(re.findall(r'src="data:image/png;base64,', page)) == 4  # progress, throughput, stages, memory
    assert not re.search(r'(?:src|href)="(?:https?:)?//', page)  # nothing fetched from a network
    for text in ("Failures and quarantines", "broken &#x27;one&#x27;.mp4", "Slowest files", "Resources asked vs used",
                 "measured on 6 done file(s)", "sleep", "Peak memory per shard"):
        assert text in page, text
    assert cli("report", jobs).code == 0 and (root / "work" / "report.html").is_file()  # the default place

    png = root / "shot.png"
    screenshot(out, png, height=3200)
    from PIL import Image

    with Image.open(png) as im:
        rgb = im.convert("RGB")
        colours = dict((c, n) for n, c in rgb.getcolors(1 << 24))
        width, height = rgb.size
    white = colours.get((255, 255, 255), 0)
    assert white < 0.97 * width * height, "the screenshot is blank"
    assert len(colours) > 50
    for plot, colour in PLOT_COLOURS.items():
        near = sum(n for c, n in colours.items() if max(abs(a - b) for a, b in zip(c, colour)) <= 6)
        assert near > 150, f"the {plot} plot does not show in the screenshot ({near} pixels of {colour})"


def test_timeline_links_survive_awkward_folder_names():
    from urllib.parse import unquote, urlsplit

    from orchestrator.run_report import _href
    from tests.conftest import AWKWARD

    for name in [AWKWARD, "100% news #1? yes-0123456789", "tab\there"]:
        link = _href("../work dir/outputs", name)
        parts = urlsplit(link)
        assert not parts.query and not parts.fragment and " " not in link
        assert unquote(parts.path) == f"../work dir/outputs/{name}/timeline.png"
