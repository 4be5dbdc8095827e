"""Show starts and ends from the segmenter's labels and, when it ran, the image classifier's.

A show opens with a title sequence (theme music under a title card) followed by a long
stretch of speech, and may close with one (credits) after speech.  So:

- **title sequences**: the music segments ``classify`` kept as title sequences (its
  ``classified.json``); without ``classify``, every music segment of title-like length —
  which also takes commercials' jingles, as the outputs say;
- pieces closer than ``merge_gap_s`` are one sequence;
- a sequence followed within ``near_s`` by a speech stretch of at least ``min_speech_s``
  (speech pieces closer than ``speech_gap_s`` joined) **starts** a show at its start; one
  only preceded by such a stretch **ends** the open show at its end;
- a new start while a show is open ends that show there (it had no closing sequence), and the
  recording's end ends a show still open;
- a show shorter than ``min_show_s`` does not end (or restart): the sequence is taken for a
  bumper inside it.

Pure Python: the worker's stage and the tests call it on plain lists.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

SPEECH_LABELS = frozenset({"speech", "female", "male"})
START, END = "start", "end"


@dataclass(frozen=True)
class Rules:
    min_show_s: float
    merge_gap_s: float
    min_speech_s: float
    near_s: float
    speech_gap_s: float
    min_title_s: float  # music-only: the shortest music segment taken for a title sequence
    max_title_s: float  # music-only: the longest


@dataclass
class TitleSequence:
    start: float
    stop: float
    score: float  # the classifier's title score (music-only: a fixed prior)
    segments: list[int] = field(default_factory=list)  # indices in classified.json / the music list
    keyframe: dict[str, Any] | None = None  # the best-scoring keyframe: time, path, score


@dataclass(frozen=True)
class Boundary:
    kind: str  # START | END
    time: float
    confidence: float
    evidence: dict[str, Any]

    def describe(self) -> str:
        """The evidence in one line (CSV and .seg)."""
        e = self.evidence
        parts = [e["why"]]
        if "title_sequence" in e:
            t = e["title_sequence"]
            parts.append(f"title sequence {t['start']:.2f}-{t['stop']:.2f} s (segment {', '.join(map(str, t['segments']))}"
                         f", score {t['score']:.3f})")
            if t.get("keyframe"):
                parts.append(f"keyframe {t['keyframe']['time']:.2f} s score {t['keyframe']['score']:.3f}")
        if "speech" in e:
            parts.append(f"speech {e['speech']['start']:.2f}-{e['speech']['stop']:.2f} s")
        return "; ".join(parts)


def speech_stretches(segments: Iterable[tuple[str, float, float]], gap: float) -> list[tuple[float, float]]:
    """Speech segments joined across pauses shorter than ``gap``."""
    out: list[list[float]] = []
    for label, start, stop in sorted(segments, key=lambda s: s[1]):
        if label not in SPEECH_LABELS:
            continue
        if out and start - out[-1][1] <= gap:
            out[-1][1] = max(out[-1][1], stop)
        else:
            out.append([start, stop])
    return [(a, b) for a, b in out]


def _merge(sequences: list[TitleSequence], gap: float) -> list[TitleSequence]:
    merged: list[TitleSequence] = []
    for seq in sorted(sequences, key=lambda s: s.start):
        if merged and seq.start - merged[-1].stop <= gap:
            last = merged[-1]
            last.stop = max(last.stop, seq.stop)
            last.segments += seq.segments
            if seq.score > last.score:
                last.score = seq.score
            if seq.keyframe and (not last.keyframe or seq.keyframe["score"] > last.keyframe["score"]):
                last.keyframe = seq.keyframe
        else:
            merged.append(seq)
    return merged


def titles_from_classified(classified: dict[str, Any], gap: float) -> list[TitleSequence]:
    """The title sequences ``classify`` kept (not filtered: title score at its threshold or above), merged."""
    title_class = classified.get("title_class", "title_sequence")
    found = []
    for i, seg in enumerate(classified["segments"]):
        if seg.get("filtered"):
            continue
        frames = [{"time": float(k["time"]), "path": k.get("path"), "score": float(k.get("scores", {}).get(title_class, 0.0))}
                  for k in seg.get("keyframes", [])]
        best = max(frames, key=lambda k: k["score"], default=None)
        found.append(TitleSequence(float(seg["start"]), float(seg["stop"]), float(seg["title_score"]),
                                   [seg.get("segment", i)], best))
    return _merge(found, gap)


MUSIC_ONLY_SCORE = 0.5  # without the classifier, a music segment is a title sequence at even odds


def titles_from_music(segments: Sequence[tuple[str, float, float]], rules: Rules) -> list[TitleSequence]:
    """Music segments of a title sequence's length, merged (no classifier: commercials' too)."""
    music = [TitleSequence(s, e, MUSIC_ONLY_SCORE, [i]) for i, (label, s, e) in enumerate(segments) if label == "music"]
    return [t for t in _merge(music, rules.merge_gap_s) if rules.min_title_s <= t.stop - t.start <= rules.max_title_s]


def find_boundaries(titles: list[TitleSequence], segments: Sequence[tuple[str, float, float]], duration: float,
                    rules: Rules) -> list[Boundary]:
    """Show starts and ends, in time order (see the module's docstring)."""
    stretches = [s for s in speech_stretches(segments, rules.speech_gap_s) if s[1] - s[0] >= rules.min_speech_s]
    out: list[Boundary] = []
    opened: Boundary | None = None

    def evidence(why: str, title: TitleSequence | None, speech: tuple[float, float] | None) -> dict[str, Any]:
        e: dict[str, Any] = {"why": why}
        if title is not None:
            e["title_sequence"] = {"start": round(title.start, 3), "stop": round(title.stop, 3),
                                   "segments": title.segments, "score": round(title.score, 4),
                                   "keyframe": title.keyframe}
        if speech is not None:
            e["speech"] = {"start": round(speech[0], 3), "stop": round(speech[1], 3)}
        return e

    for title in titles:
        after = next((s for s in stretches if title.stop - rules.near_s <= s[0] <= title.stop + rules.near_s), None)
        before = next((s for s in stretches if title.start - rules.near_s <= s[1] <= title.start + rules.near_s), None)
        if after is not None:
            if opened is not None:
                if title.start - opened.time < rules.min_show_s:
                    continue  # a bumper inside a show that has just begun
                out.append(Boundary(END, title.start, round(title.score * 0.8, 4),
                                    evidence("the next show starts without a closing sequence", title, None)))
            opened = Boundary(START, title.start, round(title.score, 4),
                              evidence("title sequence followed by speech", title, after))
            out.append(opened)
        elif before is not None and opened is not None:
            if title.stop - opened.time < rules.min_show_s:
                continue
            out.append(Boundary(END, title.stop, round(title.score, 4),
                                evidence("closing sequence after speech", title, before)))
            opened = None
    if opened is not None:
        out.append(Boundary(END, duration, round(opened.confidence * 0.5, 4),
                            evidence("the recording ends with the show still on", None, None)))
    return out


def shows(boundaries: Sequence[Boundary]) -> list[tuple[float, float]]:
    """(start, end) of each show the boundaries delimit."""
    out, begun = [], None
    for b in boundaries:
        if b.kind == START:
            begun = b.time
        elif begun is not None:
            out.append((begun, b.time))
            begun = None
    return out
