"""Archive caption files (``<stem>.txt3``, else ``<stem>.txt``): the recording's start time and
the segment marks that weakly label keyframes.

The format, one record a line, fields separated by ``|``::

    TOP|20060102000000|2006-01-02_0000_US_CNN_Show_Name     header: the recording's start
    COL|...  UID|...  DUR|...  LAN|...  LBT|...             other header lines (three capitals)
    20060102000037.771|20060102000042.809|SEG_00|Type=Commercial
    20060102000100.000|20060102000105.000|SEG_00|Type=Story start
    20060102000110.000|20060102000112.000|CC1|>>> CAPTION TEXT
    END|20060102003000|2006-01-02_0000_US_CNN_Show_Name

Times are absolute (``YYYYmmddHHMMSS[.fff]``); this module turns them into seconds from the
TOP time.  A line that fits none of these shapes is kept as a bad line (number and reason),
never an error: archive captions are hand-made and sometimes mangled.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from tvseg.visual import COMMERCIAL_CLASS, TITLE_CLASS

CAPTION_SUFFIXES = (".txt3", ".txt")  # in order of preference
_HEADER = re.compile(r"^[A-Z]{3}\|")
_STAMP = re.compile(r"^\d{14}(\.\d{1,6})?$")


@dataclass
class Captions:
    path: Path
    start: datetime | None = None  # the TOP line's time
    commercials: list[tuple[float, float]] = field(default_factory=list)  # seconds from start
    story_starts: list[float] = field(default_factory=list)
    bad_lines: list[tuple[int, str]] = field(default_factory=list)  # (line number, why)


def parse_time(text: str) -> datetime:
    """``YYYYmmddHHMMSS`` with optional fractional seconds; ValueError otherwise."""
    if not _STAMP.match(text):
        raise ValueError(f"not a caption time: {text!r}")
    return datetime.strptime(text if "." in text else text + ".0", "%Y%m%d%H%M%S.%f")


def caption_file(media: str | Path) -> Path | None:
    """The caption file beside a recording: ``<stem>.txt3``, else ``<stem>.txt``, else None."""
    media = Path(media)
    for suffix in CAPTION_SUFFIXES:
        candidate = media.with_suffix(suffix)
        if candidate.is_file():
            return candidate
    return None


def parse_captions(path: Path) -> Captions:
    """Read a caption file; undecodable bytes are replaced, unparseable lines counted."""
    found = Captions(path)
    marks: list[tuple[int, datetime, datetime, str]] = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for number, raw in enumerate(fh, 1):
            line = raw.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split("|")
            if _HEADER.match(line):
                if fields[0] == "TOP":
                    try:
                        found.start = parse_time(fields[1])
                    except ValueError as exc:
                        found.bad_lines.append((number, f"TOP line: {exc}"))
                continue
            if len(fields) < 3:
                found.bad_lines.append((number, "neither a header line nor start|end|tag|..."))
                continue
            try:
                begin, end = parse_time(fields[0]), parse_time(fields[1])
            except ValueError as exc:
                found.bad_lines.append((number, str(exc)))
                continue
            if fields[2].startswith("SEG"):
                kinds = [f.split("=", 1)[1].strip() for f in fields[3:] if f.startswith("Type=")]
                marks += [(number, begin, end, kind) for kind in kinds]
    if found.start is None:
        if marks:
            found.bad_lines.append((marks[0][0], "segment marks but no TOP line with the start time"))
        return found
    for _number, begin, end, kind in marks:
        b, e = (begin - found.start).total_seconds(), (end - found.start).total_seconds()
        if kind == "Commercial":
            found.commercials.append((b, e))
        elif kind == "Story start":
            found.story_starts.append(b)
    return found


def weak_label(captions: Captions, time: float, title_seconds: float) -> str | None:
    """``commercial`` inside a commercial span, else ``title_sequence`` within ``title_seconds``
    of a story start, else None (unlabelled).  A commercial span wins over a nearby story start."""
    if any(b <= time <= e for b, e in captions.commercials):
        return COMMERCIAL_CLASS
    if any(abs(time - s) <= title_seconds for s in captions.story_starts):
        return TITLE_CLASS
    return None
