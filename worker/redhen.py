"""Red Hen annotation files (``<stem>.seg``): the archive's own layout, and when a recording began.

A Red Hen file is a header (``TOP|…``, ``COL|…``, ``UID|…``, ``DUR|…``, ``SRC|…``, ``CMT|…``,
``LAN|…``, ``LBT|…``), one credit line per module (``TAG|when|Source_Program=…|…``), data lines
``start|end|TAG|key=value|…`` in time order, and ``END|…``.  Timestamps are UTC,
``YYYYmmddHHMMSS.mmm``.

Where the recording began, best source first:

1. the ``TOP`` line of a sibling caption file (``<stem>.txt3``, else ``<stem>.txt``), whose
   other header lines are carried over too;
2. an archive-style file name, ``2006-01-02_0000_US_CNN_Show_Name.mp4`` (UTC date and HHMM);
3. neither: data lines carry seconds from the recording's start, and the header says so.

Pure Python (datetime, uuid): no third-party import.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Sequence

CAPTION_SUFFIXES = (".txt3", ".txt")
FROM_CAPTION, FROM_NAME, RELATIVE = "caption", "filename", "relative"
TIME_BASIS = {
    FROM_CAPTION: "UTC, from the caption file's TOP line",
    FROM_NAME: "UTC, from the archive file name",
    RELATIVE: "seconds from the start of the recording (no caption file, file name not in the archive's form)",
}
_ARCHIVE_NAME = re.compile(r"^(\d{4})-(\d{2})-(\d{2})_(\d{2})(\d{2})_")
_TOP_TIME = re.compile(r"^(\d{14})(?:\.\d+)?$")
_HEADER_KEY = re.compile(r"^[A-Z]{3}$")  # TOP, COL, UID, DUR, SRC, CMT, LAN, LBT, TTL, ...
_FORBIDDEN = re.compile(r"[|\r\n]+")  # a field separator or a line break cannot go into a value


def archive_name_start(name: str) -> datetime | None:
    """The UTC start an archive file name states (``2006-01-02_0000_US_…``), or None."""
    m = _ARCHIVE_NAME.match(name)
    if not m:
        return None
    try:
        return datetime(*(int(g) for g in m.groups()), tzinfo=timezone.utc)
    except ValueError:  # 2006-13-02, 25 o'clock...
        return None


def find_caption(source: Path) -> Path | None:
    """The caption file beside a recording: ``<stem>.txt3``, else ``<stem>.txt``."""
    for suffix in CAPTION_SUFFIXES:
        candidate = source.with_suffix(suffix)
        if candidate.is_file():
            return candidate
    return None


@dataclass(frozen=True)
class CaptionHeader:
    """The header lines of a caption file, in order, and its END line."""

    lines: tuple[tuple[str, str], ...]
    end: str | None = None  # the value after ``END|``

    def get(self, key: str) -> str | None:
        return next((value for k, value in self.lines if k == key), None)


def read_caption_header(path: Path) -> CaptionHeader:
    """Header lines (``KEY|value`` with a three-letter key) up to the first data line, and END.

    Lines that are neither are skipped: a damaged caption file costs its lines, not the recording.
    """
    lines: list[tuple[str, str]] = []
    end = None
    in_header = True
    with open(path, encoding="utf-8", errors="replace") as fh:
        for raw in fh:
            key, _, value = raw.rstrip("\r\n").partition("|")
            if key == "END":
                end = value
            elif in_header and _HEADER_KEY.match(key) and _:
                lines.append((key, value))
            elif key[:1].isdigit():
                in_header = False
    return CaptionHeader(tuple(lines), end)


@dataclass(frozen=True)
class RecordingStart:
    """When a recording began (None: unknown) and how that is known."""

    time: datetime | None
    basis: str  # FROM_CAPTION | FROM_NAME | RELATIVE
    caption: Path | None = None
    header: CaptionHeader = field(default_factory=lambda: CaptionHeader(()))
    note: str = ""  # e.g. why a caption file's TOP line was not used


def recording_start(source: Path) -> RecordingStart:
    """The best start time known for ``source`` (see the module's docstring)."""
    caption = find_caption(source)
    header = read_caption_header(caption) if caption else CaptionHeader(())
    note = ""
    top = header.get("TOP")
    if top is not None:
        stamp = top.split("|", 1)[0]
        m = _TOP_TIME.match(stamp)
        try:
            if not m:
                raise ValueError
            when = datetime.strptime(m.group(1), "%Y%m%d%H%M%S").replace(tzinfo=timezone.utc)
            return RecordingStart(when, FROM_CAPTION, caption, header)
        except ValueError:
            note = f"{caption.name}: TOP time {stamp!r} is not YYYYmmddHHMMSS"
    when = archive_name_start(source.name)
    if when is not None:
        return RecordingStart(when, FROM_NAME, caption, header, note)
    return RecordingStart(None, RELATIVE, caption, header, note)


def format_time(start: datetime | None, seconds: float) -> str:
    """A data line's timestamp: ``YYYYmmddHHMMSS.mmm`` (UTC) after ``start``, or seconds when None."""
    ms = round(seconds * 1000)
    if start is None:
        return f"{ms / 1000:.3f}"
    t = start + timedelta(milliseconds=ms)
    return f"{t:%Y%m%d%H%M%S}.{t.microsecond // 1000:03d}"


def format_duration(seconds: float) -> str:
    """``DUR``'s form: ``HH:MM:SS.ss`` (hours past 24 stay hours)."""
    cs = round(seconds * 100)
    h, rest = divmod(cs, 360000)
    m, rest = divmod(rest, 6000)
    return f"{h:02d}:{m:02d}:{rest // 100:02d}.{rest % 100:02d}"


def clean(value: object) -> str:
    """A value safe inside a ``|``-separated line."""
    return _FORBIDDEN.sub(" ", str(value)).strip()


@dataclass(frozen=True)
class DataLine:
    start: float  # seconds from the recording's start
    end: float
    fields: tuple[tuple[str, object], ...]  # key=value pairs, in order


@dataclass(frozen=True)
class SegFile:
    """What goes into one ``.seg`` file."""

    source: Path  # the recording as the manifest lists it
    duration_s: float
    start: RecordingStart
    tag: str  # this module's tag, e.g. SEG_03
    credit: tuple[tuple[str, object], ...]  # key=value pairs of the credit line, after its date
    lines: Sequence[DataLine]
    collection: str = ""
    source_name: str = ""
    language: str = ""
    timezone: str = ""  # an IANA name for LBT, e.g. America/Los_Angeles ('' : no LBT line)
    written: datetime = field(default_factory=lambda: datetime.now(timezone.utc))


def render_seg(seg: SegFile) -> str:
    """The text of the ``.seg`` file (lines end with a newline)."""
    stem = seg.source.stem
    start = seg.start.time
    out: list[str] = []
    carried = seg.start.header.lines if seg.start.basis == FROM_CAPTION else ()
    if carried:
        out += [f"{key}|{value}" for key, value in carried]
    else:
        out.append(f"TOP|{start:%Y%m%d%H%M%S}|{stem}" if start else f"TOP||{stem}")
        out.append(f"COL|{clean(seg.collection)}")
        out.append(f"UID|{uuid.uuid5(uuid.NAMESPACE_URL, str(seg.source))}")
        out.append(f"DUR|{format_duration(seg.duration_s)}")
        out.append(f"SRC|{clean(seg.source_name)}")
        out.append(f"CMT|{'' if start else 'timestamps are seconds from the start of the recording'}")
        out.append(f"LAN|{clean(seg.language)}")
        if start and seg.timezone:
            from zoneinfo import ZoneInfo  # noqa: PLC0415 - only when a time zone is set

            local = start.astimezone(ZoneInfo(seg.timezone))
            out.append(f"LBT|{local:%Y-%m-%d %H:%M:%S} {seg.timezone}")
    credit = [f"{clean(k)}={clean(v)}" for k, v in seg.credit]
    credit.append(f"Timestamps={TIME_BASIS[seg.start.basis]}")
    out.append("|".join([seg.tag, f"{seg.written:%Y-%m-%d %H:%M}", *credit]))
    for line in sorted(seg.lines, key=lambda d: (d.start, d.end)):
        fields = [f"{clean(k)}={clean(v)}" for k, v in line.fields]
        out.append("|".join([format_time(start, line.start), format_time(start, line.end), seg.tag, *fields]))
    if seg.start.basis == FROM_CAPTION and seg.start.header.end is not None:
        out.append(f"END|{seg.start.header.end}")
    elif start:
        end = start + timedelta(seconds=int(seg.duration_s))
        out.append(f"END|{end:%Y%m%d%H%M%S}|{stem}")
    else:
        out.append(f"END|{seg.duration_s:.3f}|{stem}")
    return "\n".join(out) + "\n"
