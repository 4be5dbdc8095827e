"""A small reader of Red Hen annotation files, written from the format (not from tvseg's writer).

The format, as the archive's files show it: header lines ``KEY|value`` with a three-letter
upper-case key (TOP, COL, UID, DUR, SRC, CMT, LAN, LBT, ...); credit lines
``TAG|YYYY-mm-dd HH:MM|Key=value|...`` (TAG like SEG_03); data lines
``start|end|TAG|key=value|...`` with UTC times ``YYYYmmddHHMMSS.mmm``; and last ``END|...``.
Every line is checked; a line that fits none of these raises ValueError naming it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone

ABSOLUTE = re.compile(r"^\d{14}\.\d{3}$")
RELATIVE = re.compile(r"^\d+\.\d{3}$")
TAG = re.compile(r"^[A-Z0-9]{2,3}_[A-Z0-9]{2,}$")


@dataclass
class DataRow:
    start: str
    end: str
    tag: str
    fields: dict[str, str]


@dataclass
class Annotation:
    header: list[tuple[str, str]] = field(default_factory=list)
    credits: dict[str, tuple[str, dict[str, str]]] = field(default_factory=dict)  # tag -> (when, fields)
    rows: list[DataRow] = field(default_factory=list)
    end: str | None = None

    def head(self, key: str) -> str | None:
        return next((v for k, v in self.header if k == key), None)


def utc(stamp: str) -> datetime:
    """``YYYYmmddHHMMSS.mmm`` -> an aware UTC datetime."""
    return datetime.strptime(stamp, "%Y%m%d%H%M%S.%f").replace(tzinfo=timezone.utc)


def read_seg(text: str, relative: bool = False) -> Annotation:
    stamp = RELATIVE if relative else ABSOLUTE
    out = Annotation()
    lines = text.split("\n")
    if lines[-1] != "":
        raise ValueError("the file does not end with a newline")
    for n, line in enumerate(lines[:-1], 1):
        parts = line.split("|")
        if out.end is not None:
            raise ValueError(f"line {n}: after END: {line!r}")
        if parts[0] == "END":
            out.end = "|".join(parts[1:])
        elif re.fullmatch(r"[A-Z]{3}", parts[0]) and not out.credits and not out.rows:
            out.header.append((parts[0], "|".join(parts[1:])))
        elif TAG.match(parts[0]) and re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}", parts[1]) and not out.rows:
            out.credits[parts[0]] = (parts[1], _pairs(parts[2:], n))
        elif len(parts) >= 3 and stamp.match(parts[0]) and stamp.match(parts[1]) and parts[2] in out.credits:
            if float(parts[1] if relative else utc(parts[1]).timestamp()) < float(
                    parts[0] if relative else utc(parts[0]).timestamp()):
                raise ValueError(f"line {n}: ends before it starts: {line!r}")
            out.rows.append(DataRow(parts[0], parts[1], parts[2], _pairs(parts[3:], n)))
        else:
            raise ValueError(f"line {n}: not a header, credit, data or END line: {line!r}")
    if out.end is None:
        raise ValueError("no END line")
    return out


def _pairs(items: list[str], n: int) -> dict[str, str]:
    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ValueError(f"line {n}: {item!r} is not key=value")
        out[key] = value
    return out
