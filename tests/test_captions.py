"""Caption files: the TOP start time, commercial spans and story starts, bad lines counted."""

from __future__ import annotations

from datetime import datetime

from tests.media import make_broadcast
from tvseg.captions import caption_file, parse_captions, weak_label

TEXT = (
    "TOP|20060102000000|2006-01-02_0000_US_CNN_Show\r\n"
    "COL|Communication Studies Archive, UCLA\r\n"
    "20060102000037.771|20060102000042.809|SEG_00|Type=Commercial\r\n"
    "20060102000100.000|20060102000105.000|SEG_00|Type=Story start\r\n"
    "20060102000110|20060102000112|CC1|>>> caf\xe9\r\n"  # no fraction; a Latin-1 byte below
    "\r\n"
    "garbage\r\n"
    "2006010200011|20060102000112.000|SEG_00|Type=Commercial\r\n"  # 13 digits
    "20060102000200.000|20060102000230.000|SEG_02|Type=Story|Score=1.0\r\n"
    "END|20060102003000|2006-01-02_0000_US_CNN_Show\r\n"
)


def test_parse_captions(tmp_path):
    path = tmp_path / "2006-01-02_0000_US_CNN_Show.txt3"
    path.write_bytes(TEXT.encode("latin-1"))
    captions = parse_captions(path)
    assert captions.start == datetime(2006, 1, 2)
    assert captions.commercials == [(37.771, 42.809)]
    assert captions.story_starts == [60.0]
    assert [n for n, _ in captions.bad_lines] == [7, 8]
    assert weak_label(captions, 40.0, 20) == "commercial"
    assert weak_label(captions, 79.9, 20) == "title_sequence" and weak_label(captions, 80.1, 20) is None
    assert weak_label(captions, 45.0, 20) == "title_sequence"  # 15 s before a story start


def test_no_top_line_gives_no_labels(tmp_path):
    path = tmp_path / "x.txt"
    path.write_text("20060102000037.771|20060102000042.809|SEG_00|Type=Commercial\n")
    captions = parse_captions(path)
    assert captions.start is None and captions.commercials == []
    assert captions.bad_lines == [(1, "segment marks but no TOP line with the start time")]


def test_caption_file_prefers_txt3(tmp_path):
    media = tmp_path / "rec.mp4"
    assert caption_file(media) is None
    (tmp_path / "rec.txt").write_text("")
    assert caption_file(media) == tmp_path / "rec.txt"
    (tmp_path / "rec.txt3").write_text("")
    assert caption_file(media) == tmp_path / "rec.txt3"


def test_make_broadcast_captions_parse_back_to_its_truth(tmp_path):
    b = make_broadcast(tmp_path / "2006-01-02_1800_US_KTV_News.mp4",
                       [("title", 3), ("speech", 3), ("commercial", 3), ("credits", 2)], bad_caption_lines=2)
    captions = parse_captions(b.captions)
    assert captions.start == datetime(2006, 1, 2, 18, 0) == b.start
    assert captions.commercials == list(b.commercials) and captions.story_starts == b.show_starts
    assert len(captions.bad_lines) == 2 and b.shows == ((0.0, 11.0),)
