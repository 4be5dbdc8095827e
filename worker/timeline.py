"""One picture of a recording: label bands, music segments kept or filtered, show boundaries,
and thumbnails of the kept title sequences.

Drawn with matplotlib's object API on the Agg canvas (no pyplot: no global figure list, no
display), at a fixed pixel size whatever the recording's length; time and memory grow only with
the number of segments (one bar collection per row) and thumbnails (at most ``MAX_THUMBNAILS``,
each shrunk on load).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Sequence

from worker.boundaries import START, Boundary

WIDTH_IN, HEIGHT_IN, DPI = 16.0, 4.5, 100
MAX_THUMBNAILS = 16
THUMB_PX = (128, 72)
BANDS = {  # segmenter label -> (row name, colour)
    "speech": ("speech", "#4c72b0"), "female": ("speech", "#4c72b0"), "male": ("speech", "#4c72b0"),
    "music": ("music", "#dd8452"), "noise": ("noise", "#8c8c8c"), "noEnergy": ("silence", "#d9d9d9"),
}
ROWS = ["silence", "noise", "music", "speech"]  # bottom to top
KEPT, FILTERED = "#2ca02c", "#bbbbbb"
TICK_STEPS = (10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800)


def tick_step(duration: float, most: int = 12) -> int:
    """Seconds between labelled ticks: the smallest step giving at most ``most`` ticks."""
    return next((s for s in TICK_STEPS if duration / s <= most), TICK_STEPS[-1])


def tick_label(seconds: float, start: datetime | None, step: int) -> str:
    if start is not None:
        t = start + timedelta(seconds=seconds)
        return f"{t:%H:%M}" if step >= 60 else f"{t:%H:%M:%S}"
    h, rest = divmod(int(round(seconds)), 3600)
    m, s = divmod(rest, 60)
    if step >= 3600:
        return f"{h}h"
    return f"{h}:{m:02d}" + (f":{s:02d}" if step < 60 else "") if h else (f"{m}m" if step >= 60 else f"{m}:{s:02d}")


def draw_timeline(path: Path, *, title: str, duration: float, segments: Sequence[tuple[str, float, float]],
                  classified: dict[str, Any] | None, boundaries: Sequence[Boundary], start: datetime | None,
                  folder: Path) -> None:
    """Write the PNG to ``path`` (a temporary name, then renamed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415 - heavy; worker only
    from matplotlib.figure import Figure  # noqa: PLC0415

    duration = max(duration, max((s[2] for s in segments), default=0.0), 1.0)
    fig = Figure(figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2, 1, height_ratios=(3, 1.2), hspace=0.08, left=0.085, right=0.99, top=0.9, bottom=0.13)
    ax = fig.add_subplot(grid[0])
    strip = fig.add_subplot(grid[1], sharex=ax)

    by_row: dict[str, list[tuple[float, float]]] = {r: [] for r in ROWS}
    for label, a, b in segments:
        if label in BANDS:
            by_row[BANDS[label][0]].append((a, b - a))
    colours = {row: colour for row, colour in BANDS.values()}
    for y, row in enumerate(ROWS):
        if by_row[row]:
            ax.broken_barh(by_row[row], (y + 0.1, 0.8), facecolors=colours[row], linewidth=0)
    labels = [*ROWS]
    thumbs: list[tuple[float, str]] = []
    if classified is not None:
        y = len(ROWS)
        kept = [(float(s["start"]), float(s["stop"]) - float(s["start"])) for s in classified["segments"] if not s.get("filtered")]
        dropped = [(float(s["start"]), float(s["stop"]) - float(s["start"])) for s in classified["segments"] if s.get("filtered")]
        if dropped:
            ax.broken_barh(dropped, (y + 0.1, 0.8), facecolors=FILTERED, linewidth=0)
        if kept:
            ax.broken_barh(kept, (y + 0.1, 0.8), facecolors=KEPT, linewidth=0)
        labels.append("music kept /\nfiltered")
        title_class = classified.get("title_class", "title_sequence")
        for seg in classified["segments"]:
            if seg.get("filtered") or not seg.get("keyframes"):
                continue
            best = max(seg["keyframes"], key=lambda k: k.get("scores", {}).get(title_class, 0.0))
            if best.get("path"):
                thumbs.append((float(best["time"]), best["path"]))
    for b in boundaries:
        colour = "#d62728" if b.kind == START else "#9467bd"
        ax.axvline(b.time, color=colour, linewidth=1.6, linestyle="-" if b.kind == START else "--")
    ax.set_yticks([i + 0.5 for i in range(len(labels))], labels, fontsize=9)
    ax.set_ylim(0, len(labels))
    ax.set_xlim(0, duration)
    ax.tick_params(axis="x", labelbottom=False)
    n_starts = sum(b.kind == START for b in boundaries)
    ax.set_title(f"{title} — {duration / 3600:.2f} h; {n_starts} show start(s) (red), "
                 f"{len(boundaries) - n_starts} end(s) (dashed purple)"
                 + ("; classified music: green kept, grey filtered" if classified is not None else ""), fontsize=11, loc="left")

    step = tick_step(duration)
    ticks = [i * step for i in range(int(duration // step) + 1)]
    strip.set_xticks(ticks, [tick_label(t, start, step) for t in ticks], fontsize=9)
    strip.set_xticks([t for t in range(0, int(duration) + 1, max(step // 4, 1)) if t % step], minor=True)
    strip.set_xlabel(f"UTC from {start:%Y-%m-%d %H:%M}" if start is not None else "time from the start", fontsize=9)
    strip.set_yticks([])
    strip.set_ylim(0, 1)
    strip.set_ylabel("title\nsequences", fontsize=9)
    _thumbnails(strip, thumbs, duration, folder)
    ax.grid(axis="x", which="major", color="#00000022")
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=DPI)
    tmp.replace(path)


def _thumbnails(strip: Any, thumbs: list[tuple[float, str]], duration: float, folder: Path) -> None:
    """The kept title sequences' best keyframes, each shrunk to ``THUMB_PX``, at their times."""
    from PIL import Image  # noqa: PLC0415 - matplotlib's own dependency

    if len(thumbs) > MAX_THUMBNAILS:  # evenly chosen, first and last kept
        k = len(thumbs) - 1
        thumbs = [thumbs[round(i * k / (MAX_THUMBNAILS - 1))] for i in range(MAX_THUMBNAILS)]
    if not thumbs:
        strip.text(0.5, 0.5, "no keyframes of kept title sequences (classify did not run, or kept none)",
                   transform=strip.transAxes, ha="center", va="center", fontsize=9, color="#777777")
    width = duration / (MAX_THUMBNAILS + 2)
    for time, name in thumbs:
        path = Path(name) if Path(name).is_absolute() else folder / name
        try:
            with Image.open(path) as im:
                im.thumbnail(THUMB_PX)
                pixels = im.convert("RGB")
        except OSError:
            continue  # a keyframe gone: the strip shows the others
        left = min(max(time - width / 2, 0), duration - width)
        strip.imshow(pixels, extent=(left, left + width, 0.05, 0.95), aspect="auto", zorder=2)
        strip.plot([time, time], [0, 0.05], color="#2ca02c", linewidth=1.5)
    strip.set_xlim(0, duration)
