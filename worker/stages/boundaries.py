"""The ``boundaries`` stage: show starts and ends, the Red Hen ``.seg`` file and the timeline picture.

Reads what earlier stages left in the file's output folder: ``segments.csv`` (``segment``,
required) and ``classified.json`` (``classify``, when it ran before this stage; otherwise the
boundaries rest on music segments alone and every output says so).  Writes
``boundaries.csv``, ``boundaries.json``, ``<stem>.seg`` and ``timeline.png``.

Imports nothing heavy at module level (the login node validates ``Settings``); matplotlib is
imported by ``worker.timeline`` when a picture is drawn.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path
import tvseg
from tvseg.errors import RetryableError
from tvseg.journal import atomic_write_text
from worker import boundaries as rules_mod
from worker.redhen import DataLine, SegFile, recording_start, render_seg
from worker.stages import FileContext, Stage, StageResult

CSV, SUMMARY, TIMELINE = "boundaries.csv", "boundaries.json", "timeline.png"
SEGMENTS, CLASSIFIED = "segments.csv", "classified.json"  # the segment and classify stages' outputs
SHOW_TYPE = {rules_mod.START: "Show start", rules_mod.END: "Show end"}


@dataclass(frozen=True)
class Settings:
    """Options of the boundaries stage (jobs.yaml ``stage_settings.boundaries``)."""

    min_show_s: float = 300.0  # a show shorter than this does not end: its sequence is a bumper
    merge_gap_s: float = 2.0  # title-sequence pieces closer than this are one sequence
    min_speech_s: float = 20.0  # the speech stretch that makes a title sequence a start or an end
    near_s: float = 10.0  # how far that stretch may begin after (or end before) the sequence
    speech_gap_s: float = 2.0  # pauses shorter than this do not break a speech stretch
    min_title_s: float = 3.0  # without classify: shortest music segment taken for a title sequence
    max_title_s: float = 120.0  # without classify: the longest
    timeline: bool = True  # draw timeline.png
    tag: str = "SEG_03"  # this module's tag in the .seg file (the archive assigns module numbers)
    collection: str = "Communication Studies Archive, UCLA"  # COL, when no caption file gives the header
    source_name: str = ""  # SRC, likewise
    language: str = "ENG"  # LAN, likewise
    timezone: str = ""  # IANA zone for LBT (local broadcast time), likewise; '' : no LBT line

    def __post_init__(self) -> None:
        if self.min_title_s > self.max_title_s:
            raise ValueError(f"min_title_s ({self.min_title_s}) is above max_title_s ({self.max_title_s})")
        if not (len(self.tag) >= 3 and self.tag.replace("_", "").isalnum() and self.tag.isupper()):
            raise ValueError(f"tag must be upper-case letters, digits and '_', like SEG_03, not {self.tag!r}")
        if self.timezone:
            from zoneinfo import ZoneInfo, ZoneInfoNotFoundError  # noqa: PLC0415

            try:
                ZoneInfo(self.timezone)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"timezone {self.timezone!r} is not an IANA time zone name") from None

    def rules(self) -> rules_mod.Rules:
        return rules_mod.Rules(self.min_show_s, self.merge_gap_s, self.min_speech_s, self.near_s,
                               self.speech_gap_s, self.min_title_s, self.max_title_s)


def read_segments(path: Path) -> list[tuple[str, float, float]]:
    """segments.csv (``labels,start,stop``)."""
    with open(path, encoding="utf-8", newline="") as fh:
        return [(row["labels"], float(row["start"]), float(row["stop"])) for row in csv.DictReader(fh)]


class BoundariesStage(Stage):
    """Show starts and ends, in CSV/JSON, Red Hen's .seg and a timeline picture."""

    name = "boundaries"
    Settings = Settings

    def process(self, ctx: FileContext) -> StageResult:
        out = ctx.output_dir
        if not (out / SEGMENTS).is_file():
            raise RetryableError(f"{ctx.source}: no {SEGMENTS}: the boundaries stage needs the segment stage "
                                 "before it in worker.stages")
        segments = read_segments(out / SEGMENTS)
        duration = _duration(ctx, segments)
        rules = self.settings.rules()
        classified = None
        if "classify" in ctx.results and (out / CLASSIFIED).is_file():
            classified = json.loads((out / CLASSIFIED).read_text(encoding="utf-8"))
            titles = rules_mod.titles_from_classified(classified, rules.merge_gap_s)
            basis = "classify: title sequences the image classifier kept"
        else:
            titles = rules_mod.titles_from_music(segments, rules)
            basis = ("music segments alone (classify did not run): every music segment of "
                     f"{rules.min_title_s:g}-{rules.max_title_s:g} s is taken for a title sequence, "
                     "commercials' jingles included")
        found = rules_mod.find_boundaries(titles, segments, duration, rules)
        source = Path(ctx.source)
        start = recording_start(source)
        summary = {
            "source": ctx.source, "duration_s": round(duration, 3), "basis": basis,
            "from_classify": classified is not None,
            "settings": asdict(self.settings),
            "recording_start": start.time.isoformat() if start.time else None,
            "timestamps": start.basis, "caption_file": str(start.caption) if start.caption else None,
            "note": start.note,
            "boundaries": [{"type": b.kind, "time": round(b.time, 3), "confidence": b.confidence,
                            "evidence": b.evidence} for b in found],
            "shows": [{"start": round(a, 3), "end": round(b, 3)} for a, b in rules_mod.shows(found)],
        }
        seg_name = f"{source.stem}.seg"
        atomic_write_text(out / CSV, _csv(found))
        atomic_write_text(out / SUMMARY, json.dumps(summary, indent=2, ensure_ascii=False))
        atomic_write_text(out / seg_name, render_seg(self._seg(source, duration, start, segments, classified, found,
                                                                basis, out)))
        outputs = [CSV, SUMMARY, seg_name]
        if self.settings.timeline:
            from worker.timeline import draw_timeline  # noqa: PLC0415 - matplotlib only when drawing

            draw_timeline(out / TIMELINE, title=source.name, duration=duration, segments=segments,
                          classified=classified, boundaries=found, start=start.time, folder=out)
            outputs.append(TIMELINE)
        facts = {"show_starts": sum(b.kind == rules_mod.START for b in found),
                 "show_ends": sum(b.kind == rules_mod.END for b in found)}
        return StageResult(tuple(outputs), facts)

    def _seg(self, source: Path, duration: float, start, segments, classified: dict | None,
             found: list[rules_mod.Boundary], basis: str, folder: Path) -> SegFile:
        s = self.settings
        models = _models(folder, classified)
        credit = [("Source_Program", f"tvseg {tvseg.__version__} boundaries"), ("Source_Person", "tvseg"),
                  ("Models", models or "none recorded"), ("Basis", basis),
                  ("Settings", ", ".join(f"{k}={v}" for k, v in asdict(s).items()
                                         if k not in ("tag", "collection", "source_name", "language", "timezone"))),
                  ("Codebook", "Type=Music with Class, Score, Kept; Type=Show start or Show end with Score, Evidence")]
        lines: list[DataLine] = []
        if classified is not None:
            for seg in classified["segments"]:
                lines.append(DataLine(float(seg["start"]), float(seg["stop"]), (
                    ("Type", "Music"), ("Class", seg["label"]), ("Score", f"{float(seg['confidence']):.3f}"),
                    ("Kept", "no" if seg.get("filtered") else "yes"))))
        else:
            for label, a, b in segments:
                if label == "music":
                    lines.append(DataLine(a, b, (("Type", "Music"),)))
        for b in found:
            lines.append(DataLine(b.time, b.time, (("Type", SHOW_TYPE[b.kind]), ("Score", f"{b.confidence:.3f}"),
                                                   ("Evidence", b.describe()))))
        return SegFile(source=source, duration_s=duration, start=start, tag=s.tag, credit=tuple(credit), lines=lines,
                       collection=s.collection, source_name=s.source_name, language=s.language, timezone=s.timezone)


def _duration(ctx: FileContext, segments: list[tuple[str, float, float]]) -> float:
    for stage in ("segment", "probe"):
        result = ctx.results.get(stage)
        if result is not None and result.facts.get("duration_s"):
            return float(result.facts["duration_s"])
    return max((s[2] for s in segments), default=0.0)


def _models(folder: Path, classified: dict | None) -> str:
    """The models behind the boundaries: the segmenter's files and the classifier, by sha256."""
    parts = []
    try:
        provenance = json.loads((folder / "provenance.json").read_text(encoding="utf-8"))
        parts += [f"{name} sha256:{digest[:16]}" for name, digest in sorted(provenance.get("models", {}).items())]
    except (OSError, ValueError):
        pass
    if classified is not None and isinstance(classified.get("model"), dict):
        digest = classified["model"].get("sha256") or ""
        parts.append(f"classifier {Path(classified['model'].get('dir') or 'model').name} sha256:{digest[:16]}")
    return ", ".join(parts)


def _csv(found: list[rules_mod.Boundary]) -> str:
    """``type,time,confidence,evidence``: one row a boundary, times in seconds."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(("type", "time", "confidence", "evidence"))
    writer.writerows((b.kind, f"{b.time:.3f}", f"{b.confidence:.4f}", b.describe()) for b in found)
    return out.getvalue()

