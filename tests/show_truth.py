"""Scoring reported show boundaries against a generated broadcast's truth (tests.media.Broadcast)."""

from __future__ import annotations

TOLERANCE_S = 2.0  # a true boundary is found by a reported one of its type this close

# Three shows with commercials inside and between; music sections always apart (a jingle right
# after a title would be one music segment to the segmenter). Show 2 has no closing credits.
PLAN = [("title", 10), ("speech", 40), ("commercial", 15), ("speech", 30), ("credits", 10), ("noise", 5),
        ("commercial", 15), ("noise", 5), ("title", 10), ("speech", 45), ("commercial", 15), ("speech", 30),
        ("noise", 5), ("title", 10), ("speech", 40), ("credits", 10), ("noise", 10)]
SETTINGS = {"min_show_s": 60, "min_speech_s": 15}  # the boundaries stage's, for PLAN's short shows


def truth_boundaries(broadcast) -> list[tuple[str, float]]:
    """("start"|"end", seconds) of every true show start and end."""
    return sorted([("start", s) for s, _ in broadcast.shows] + [("end", e) for _, e in broadcast.shows],
                  key=lambda b: (b[1], b[0] == "start"))


def score(found: list[tuple[str, float]], truth: list[tuple[str, float]]) -> tuple[float, float]:
    """(recall, precision): each true boundary matched by at most one reported boundary of the same
    type within TOLERANCE_S, and each reported one by at most one true one."""
    free = list(found)
    hits = 0
    for kind, t in truth:
        match = next((f for f in free if f[0] == kind and abs(f[1] - t) <= TOLERANCE_S), None)
        if match:
            free.remove(match)
            hits += 1
    return hits / len(truth), (hits / len(found) if found else 0.0)
