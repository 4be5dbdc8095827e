"""Generated test media with known truth (ffmpeg + espeak-ng; no downloaded media).

Truth labels are the segmenter's own: speech, music, noise and noEnergy (silence).
"""

from __future__ import annotations

import re
import subprocess
import wave
import zlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

SPEECH = {
    "male": (["-v", "en-us", "-s", "160"],
             "The evening news begins with the weather. Heavy rain is expected in the north "
             "tonight, and the wind will pick up along the coast. Tomorrow morning the clouds "
             "should clear, and the afternoon will be bright and mild across the whole country."),
    "female": (["-v", "en-us+f3", "-p", "60", "-s", "160"],
               "Good evening and welcome to the program. Tonight we talk to the people who build "
               "the bridges of our cities, and we ask them how long a bridge should last. Our "
               "first guest has worked on the river crossings for more than twenty years."),
}
TRUTH_LABEL = {"speech": "speech", "music": "music", "noise": "noise", "silence": "noEnergy", "quiet": "noEnergy"}
QUIET = 0.0003  # amplitude of the low-level noise of "quiet" sections (about -75 dBFS): a broadcast's silence
CHORDS = [(261.63, 329.63, 392.00), (196.00, 246.94, 293.66), (220.00, 261.63, 329.63), (174.61, 220.00, 261.63)]


def _run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {done.stderr.strip()[-2000:]}")


def make_speech_wav(path: Path, voice: str = "male") -> Path:
    """A few sentences (about 14 s) read by espeak-ng with a male or a female voice."""
    options, text = SPEECH[voice]
    _run(["espeak-ng", *options, "-w", str(path), text])
    return path


def music_expr() -> str:
    """An aevalsrc expression of a pop loop: I-V-vi-IV chord pad (2 s a chord), a plucked
    arpeggio (4 notes a second, decaying) and a kick drum every 0.5 s."""
    terms = []
    for k, chord in enumerate(CHORDS):
        gate = f"eq(mod(floor(t/2),4),{k})"
        pad = "+".join(f"sin(2*PI*{f}*t)+0.3*sin(4*PI*{f}*t)" for f in chord)
        notes = (*chord, 2 * chord[0])
        arp = "+".join(f"eq(mod(floor(t*4),4),{i})*sin(4*PI*{f}*t)" for i, f in enumerate(notes))
        terms.append(f"{gate}*(0.05*({pad})+0.25*exp(-8*mod(t,0.25))*({arp}))")
    kick = "0.5*sin(2*PI*60*mod(t,0.5)*(1-2*mod(t,0.5)))*exp(-12*mod(t,0.5))"
    return "+".join(terms) + "+" + kick


def make_program(path: Path, sections=(("speech", 15), ("music", 15), ("noise", 7.5), ("silence", 7.5)),
                 video: bool = True) -> list[tuple[str, float, float]]:
    """Write an mp4 (160x90 H.264 testsrc2 + AAC, or audio only) of the given sections.

    Speech sections alternate a male and a female voice, looped to length. Returns the truth as
    (label, start, stop) with the segmenter's labels.
    """
    inputs: list[str] = []
    chains: list[str] = []
    truth: list[tuple[str, float, float]] = []
    voices = iter(["male", "female"] * len(sections))
    sources = {
        "music": f"aevalsrc='{music_expr()}':s=44100",
        "noise": "anoisesrc=color=pink:amplitude=0.08:r=44100",
        "silence": "anullsrc=r=44100:cl=mono",
        "quiet": f"anoisesrc=color=white:amplitude={QUIET}:r=44100",  # low-level, not digital, silence
    }
    t = 0.0
    for i, (kind, seconds) in enumerate(sections):
        if kind == "speech":
            wav = path.with_name(f"{path.stem}.speech{i}.wav")
            inputs += ["-stream_loop", "-1", "-i", str(make_speech_wav(wav, next(voices)))]
        else:
            inputs += ["-f", "lavfi", "-i", sources[kind]]
        chains.append(f"[{i}:a]atrim=0:{seconds},asetpts=PTS-STARTPTS,"
                      f"aformat=sample_fmts=fltp:sample_rates=44100:channel_layouts=mono[a{i}]")
        truth.append((TRUTH_LABEL[kind], t, t + seconds))
        t += seconds
    graph = ";".join(chains) + ";" + "".join(f"[a{i}]" for i in range(len(sections)))
    graph += f"concat=n={len(sections)}:v=0:a=1[aout]"
    cmd = ["ffmpeg", "-nostdin", "-y", *inputs]
    if video:
        cmd += ["-f", "lavfi", "-i", f"testsrc2=size=160x90:rate=25:duration={t}"]
    cmd += ["-filter_complex", graph, "-map", "[aout]"]
    if video:
        cmd += ["-map", f"{len(sections)}:v", "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"]
    cmd += ["-c:a", "aac", "-b:a", "96k", "-t", str(t), str(path)]
    _run(cmd)
    for wav in path.parent.glob(f"{path.stem}.speech*.wav"):
        wav.unlink()
    return _merge(truth)


def _merge(truth: list[tuple[str, float, float]]) -> list[tuple[str, float, float]]:
    merged: list[tuple[str, float, float]] = []
    for label, start, stop in truth:
        if merged and merged[-1][0] == label:
            merged[-1] = (label, merged[-1][1], stop)
        else:
            merged.append((label, start, stop))
    return merged


def make_long(path: Path, src: Path, seconds: float) -> Path:
    """``seconds`` of ``src``'s audio, looped, without re-encoding (e.g. an .m4a)."""
    _run(["ffmpeg", "-nostdin", "-y", "-stream_loop", "-1", "-i", str(src),
          "-t", str(seconds), "-vn", "-c:a", "copy", str(path)])
    return path


def assert_same_segmentation(got, want) -> None:
    """The decisions are the package's: the same labels in the same order, every boundary
    within one decision frame (20 ms) of the package's; 1e-6 s more for the float product
    frame * FRAME_S and the 2 decimals of segments.csv."""
    from worker.segmentation import FRAME_S  # noqa: PLC0415 - numpy, for the stage tests only

    assert [s[0] for s in got] == [s[0] for s in want], (got, want)
    for g, w in zip(got, want):
        assert abs(g[1] - w[1]) <= FRAME_S + 1e-6 and abs(g[2] - w[2]) <= FRAME_S + 1e-6, (g, w)


# --- broadcasts: shows with title sequences, commercials and captions ---------------------

BROADCAST_KINDS = ("title", "credits", "commercial", "speech", "noise")
GRADIENTS = [("0x1030a0", "0xa01060"), ("0x106030", "0xd0a020"), ("0x601080", "0x20a0c0"), ("0x902010", "0x3040d0")]
PRODUCT_COLOURS = ["red", "yellow", "lime", "cyan", "magenta", "orange"]
JINGLE_CHORDS = [(293.66, 369.99, 440.00), (329.63, 415.30, 493.88), (246.94, 311.13, 369.99), (220.00, 277.18, 329.63)]
_ARCHIVE_NAME = re.compile(r"^(\d{4})-(\d{2})-(\d{2})_(\d{2})(\d{2})_")


@dataclass(frozen=True)
class Broadcast:
    """What ``make_broadcast`` made, and its ground truth (seconds from the recording's start)."""

    path: Path
    captions: Path | None  # the sibling .txt3 (None when made without captions)
    start: datetime  # wall-clock time of t=0 (the caption file's TOP header)
    sections: tuple[tuple[str, float, float], ...]  # (kind, start, stop), in the plan's order
    shows: tuple[tuple[float, float], ...]  # (start, end): a title's start to the next credits' end
    commercials: tuple[tuple[float, float], ...]
    titles: tuple[tuple[float, float], ...]  # title and credits sections: the theme music with the title card

    @property
    def show_starts(self) -> list[float]:
        return [s for s, _ in self.shows]

    @property
    def show_ends(self) -> list[float]:
        return [e for _, e in self.shows]

    @property
    def duration(self) -> float:
        return self.sections[-1][2] if self.sections else 0.0


def jingle_expr() -> str:
    """A commercial's music, unlike ``music_expr``'s theme: other chords, a bright square-ish lead
    at 8 notes a second and a hi-hat-like tick every 0.25 s."""
    terms = []
    for k, chord in enumerate(JINGLE_CHORDS):
        gate = f"eq(mod(floor(t),4),{k})"
        pad = "+".join(f"sin(2*PI*{f}*t)+0.2*sin(6*PI*{f}*t)" for f in chord)
        notes = (*chord, 2 * chord[0], 2 * chord[1], chord[2], chord[1], chord[0])
        lead = "+".join(f"eq(mod(floor(t*8),8),{i})*(sin(2*PI*{2 * f}*t)+0.3*sin(6*PI*{2 * f}*t))"
                        for i, f in enumerate(notes))
        terms.append(f"{gate}*(0.05*({pad})+0.2*exp(-10*mod(t,0.125))*({lead}))")
    kick = "0.5*sin(2*PI*70*mod(t,0.5)*(1-2*mod(t,0.5)))*exp(-14*mod(t,0.5))"
    return "+".join(terms) + "+" + kick


def render_expr(path: Path, expr: str, seconds: float, rate: int = 44100) -> Path:
    """A mono 16-bit WAV of an aevalsrc expression, evaluated with numpy (the same samples as
    ffmpeg's aevalsrc, clipped to [-1, 1], in milliseconds instead of seconds)."""
    import numpy as np  # noqa: PLC0415 - the tests' environment has it (the worker's)

    t = np.arange(int(seconds * rate)) / rate
    names = {"t": t, "PI": np.pi, "sin": np.sin, "exp": np.exp, "floor": np.floor, "mod": np.mod,
             "eq": lambda a, b: (a == b).astype(float)}
    samples = eval(expr.replace("^", "**"), {"__builtins__": {}}, names)  # noqa: S307 - our own expressions
    with wave.open(str(path), "wb") as fh:
        fh.setnchannels(1)
        fh.setsampwidth(2)
        fh.setframerate(rate)
        fh.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return path


def archive_start(name: str, default: datetime = datetime(2006, 1, 2)) -> datetime:
    """The start time an archive-style name says (``2006-01-02_0000_US_CNN_Show.mp4``), else ``default``."""
    m = _ARCHIVE_NAME.match(name)
    return datetime(*(int(g) for g in m.groups())) if m else default


def make_broadcast(path: Path, plan, *, size: str = "160x90", rate: int = 25, show_name: str = "Evening News",
                   captions: bool = True, bad_caption_lines: int = 0, variant: int = 0) -> Broadcast:
    """Write an mp4 (H.264 + AAC) of a broadcast from ``plan``, a sequence of (kind, seconds):

    - ``title``: a show's opening: ``show_name`` in large letters over a colour gradient, with the
      theme music (``music_expr``); the caption file marks ``Type=Story start`` here;
    - ``credits``: the show's closing: the same card and theme;
    - ``commercial``: a moving test pattern with product-like boxes, with a jingle (``jingle_expr``);
      the caption file marks it ``Type=Commercial``;
    - ``speech``: espeak-ng (voices alternate) over a talking-head-like picture;
    - ``noise``: low-level pink noise over a grey, grainy picture.

    Beside it, unless ``captions`` is false, a ``<stem>.txt3`` caption file in the archive's
    format: ``TOP|<start>|<stem>`` (the start from an archive-style name, see ``archive_start``),
    a ``CC1`` line per speech section, the segment lines, ``END``; plus ``bad_caption_lines``
    unparseable lines.  ``variant`` shifts the gradients, colours and patterns, so that recordings
    made with another variant look alike but not the same.  Returns the ground truth.
    """
    width, height = (int(v) for v in size.split("x"))
    inputs: list[str] = []
    chains: list[str] = []
    sections: list[tuple[str, float, float]] = []
    voices = iter(["male", "female"] * len(plan))
    text = re.sub(r"[^A-Za-z0-9 ]", "", show_name) or "Show"
    fontsize = max(8, int(height / 4))
    longest = {k: max((sec for kind, sec in plan if kind in k), default=0) for k in (("title", "credits"), ("commercial",))}
    rendered: dict[str, Path] = {}

    def music(name: str, expr: str) -> Path:
        """Each music rendered once, as long as its longest section."""
        if name not in rendered:
            seconds = longest[("commercial",) if name == "jingle" else ("title", "credits")]
            rendered[name] = render_expr(path.with_name(f"{path.stem}.{name}.wav"), expr, seconds)
        return rendered[name]

    t = 0.0
    for i, (kind, seconds) in enumerate(plan):
        if kind not in BROADCAST_KINDS:
            raise ValueError(f"unknown section kind {kind!r}; use one of {', '.join(BROADCAST_KINDS)}")
        n = i + variant
        common = f"s={size}:r={rate}:d={seconds}"
        if kind in ("title", "credits"):
            c0, c1 = GRADIENTS[n % len(GRADIENTS)]
            video = (f"gradients={common}:c0={c0}:c1={c1}:speed=0.02,"
                     f"drawtext=text='{text}':font=DejaVu Sans:fontsize={fontsize}:fontcolor=white:borderw=2:"
                     f"x=(w-text_w)/2:y=(h-text_h)/2")
            audio = ["-i", str(music("theme", music_expr()))]
        elif kind == "commercial":
            base = ("testsrc2", "testsrc", "rgbtestsrc")[n % 3]
            boxes = ",".join(
                f"drawbox=x='mod(t*{30 + 17 * k}+{k * width // 3},w)':y={(k + 1) * height // 5}:"
                f"w={width // 5}:h={height // 4}:color={PRODUCT_COLOURS[(n + k) % len(PRODUCT_COLOURS)]}:t=fill"
                for k in range(3))
            video = f"{base}={common},{boxes}"
            audio = ["-i", str(music("jingle", jingle_expr()))]
        elif kind == "speech":
            face = f"x='{width * 2 // 5}+{width // 40}*sin(t*2)':y={height // 5}:w={width // 5}:h={height * 3 // 10}"
            video = (f"color=c=0x203048:{common},"
                     f"drawbox=x={width // 4}:y={height // 2}:w={width // 2}:h={height // 2}:color=0x303030:t=fill,"
                     f"drawbox={face}:color=0xd0a080:t=fill")
            wav = path.with_name(f"{path.stem}.speech{i}.wav")
            audio = ["-stream_loop", "-1", "-i", str(make_speech_wav(wav, next(voices)))]
        else:
            video = f"color=c=0x808080:{common},noise=alls=30:allf=t"
            audio = ["-f", "lavfi", "-i", "anoisesrc=color=pink:amplitude=0.02:r=44100"]
        inputs += ["-f", "lavfi", "-i", video, *audio]
        chains.append(f"[{2 * i}:v]format=yuv420p,setsar=1[v{i}]")
        chains.append(f"[{2 * i + 1}:a]atrim=0:{seconds},asetpts=PTS-STARTPTS,"
                      f"aformat=sample_fmts=fltp:sample_rates=44100:channel_layouts=mono[a{i}]")
        sections.append((kind, t, t + seconds))
        t += seconds
    graph = ";".join(chains) + ";" + "".join(f"[v{i}][a{i}]" for i in range(len(plan)))
    graph += f"concat=n={len(plan)}:v=1:a=1[vout][aout]"
    try:
        _run(["ffmpeg", "-nostdin", "-y", *inputs, "-filter_complex", graph, "-map", "[vout]", "-map", "[aout]",
              "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "96k",
              "-t", str(t), str(path)])
    finally:
        for wav in [*path.parent.glob(f"{path.stem}.speech*.wav"), *rendered.values()]:
            wav.unlink(missing_ok=True)
    truth = _broadcast_truth(path, sections, archive_start(path.name))
    if captions:
        _write_txt3(truth, bad_caption_lines)
    return truth


def _broadcast_truth(path: Path, sections: list[tuple[str, float, float]], start: datetime) -> Broadcast:
    shows: list[tuple[float, float]] = []
    opened: float | None = None
    for kind, s, e in sections:
        if kind == "title":
            if opened is not None:
                shows.append((opened, s))
            opened = s
        elif kind == "credits" and opened is not None:
            shows.append((opened, e))
            opened = None
    if opened is not None:
        shows.append((opened, sections[-1][2]))
    return Broadcast(
        path=path, captions=path.with_suffix(".txt3"), start=start, sections=tuple(sections), shows=tuple(shows),
        commercials=tuple((s, e) for k, s, e in sections if k == "commercial"),
        titles=tuple((s, e) for k, s, e in sections if k in ("title", "credits")),
    )


def caption_time(start: datetime, seconds: float) -> str:
    """A caption file's timestamp: ``YYYYmmddHHMMSS.mmm``."""
    return (start + timedelta(seconds=seconds)).strftime("%Y%m%d%H%M%S.%f")[:-3]


def _write_txt3(truth: Broadcast, bad_lines: int) -> None:
    stem = truth.path.stem
    end = truth.start + timedelta(seconds=truth.duration)
    lines = [f"TOP|{truth.start:%Y%m%d%H%M%S}|{stem}", "COL|Communication Studies Archive, UCLA",
             f"UID|{zlib.crc32(stem.encode()):010d}", f"DUR|{timedelta(seconds=round(truth.duration))}",
             "LAN|ENG", f"LBT|{truth.start:%Y-%m-%d %H:%M:%S} America/Los_Angeles"]
    for kind, s, e in truth.sections:
        if kind == "title":
            lines.append(f"{caption_time(truth.start, s)}|{caption_time(truth.start, s + 5)}|SEG_00|Type=Story start")
        elif kind == "commercial":
            lines.append(f"{caption_time(truth.start, s)}|{caption_time(truth.start, e)}|SEG_00|Type=Commercial")
        elif kind == "speech":
            lines.append(f"{caption_time(truth.start, s)}|{caption_time(truth.start, e)}|CC1|>>> GOOD EVENING.")
    for k in range(bad_lines):
        lines.append(("this line has no fields", f"2006XX02000037.771|{caption_time(truth.start, 1)}|SEG_00|"
                      "Type=Commercial")[k % 2])
    lines.append(f"END|{end:%Y%m%d%H%M%S}|{stem}")
    truth.captions.write_text("\n".join(lines) + "\n", encoding="utf-8")


def make_long_video(path: Path, seconds: float, size: str = "160x90", loop_seconds: float = 60.0) -> Path:
    """A cheap long recording: ``loop_seconds`` of testsrc2 (low bit rate, a key frame every 10 s)
    with a quiet tone, looped to ``seconds`` without re-encoding (2 h: ~40 MB, a few seconds)."""
    clip = path.with_name(f"{path.stem}.loop.mp4")
    _run(["ffmpeg", "-nostdin", "-y", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25:duration={loop_seconds}",
          "-f", "lavfi", "-i", f"sine=frequency=440:duration={loop_seconds}", "-c:v", "libx264",
          "-preset", "veryfast", "-b:v", "30k", "-g", "250", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "16k",
          "-shortest", str(clip)])
    try:
        _run(["ffmpeg", "-nostdin", "-y", "-stream_loop", "-1", "-i", str(clip), "-t", str(seconds), "-c", "copy",
              str(path)])
    finally:
        clip.unlink(missing_ok=True)
    return path


def make_frames(folder: Path, kind: str, n: int, size: str = "160x90", variant: int = 0) -> list[Path]:
    """``n`` JPEG pictures like a broadcast's ``title`` cards (text over a gradient) or its
    ``commercial`` frames (moving pattern and boxes), 1 s apart: a small labelled set, fast."""
    if kind not in ("title", "commercial"):
        raise ValueError(f"kind must be 'title' or 'commercial', not {kind!r}")
    folder.mkdir(parents=True, exist_ok=True)
    width, height = (int(v) for v in size.split("x"))
    common = f"s={size}:r=1:d={n}"
    if kind == "title":
        c0, c1 = GRADIENTS[variant % len(GRADIENTS)]
        source = (f"gradients={common}:c0={c0}:c1={c1}:speed=0.3,drawtext=text='Show {variant}':font=DejaVu Sans:"
                  f"fontsize={max(8, height // 4)}:fontcolor=white:borderw=2:x=(w-text_w)/2:y=(h-text_h)/2")
    else:
        source = (f"{('testsrc2', 'testsrc', 'rgbtestsrc')[variant % 3]}={common},"
                  f"drawbox=x='mod(t*{width // 7},w)':y={height // 4}:w={width // 5}:h={height // 4}:"
                  f"color={PRODUCT_COLOURS[variant % len(PRODUCT_COLOURS)]}:t=fill")
    done = subprocess.run(["ffmpeg", "-nostdin", "-y", "-f", "lavfi", "-i", source, "-frames:v", str(n), "-q:v", "3",
                           "-start_number", "0", f"{kind}{variant}-%03d.jpg"], cwd=folder, capture_output=True, text=True)
    if done.returncode != 0:  # a relative pattern: the folder's name may hold '%'
        raise RuntimeError(f"ffmpeg failed: {done.stderr.strip()[-2000:]}")
    return sorted(folder.glob(f"{kind}{variant}-*.jpg"))


# --- broadcast-like media (bench/): many voices, several music styles, noise, low-level silence ---

BROADCAST_VOICES = [  # espeak-ng voice+variant, pitch, speed: men, women, several languages
    ("en-us", 50, 160), ("en-us+f3", 60, 165), ("en-gb+m3", 40, 150), ("en-gb+f2", 70, 175),
    ("fr-fr+m1", 45, 155), ("fr-fr+f4", 65, 170), ("de+m5", 35, 145), ("es+f1", 75, 180),
    ("it+m2", 55, 160), ("en-us+klatt", 50, 140),
]
BROADCAST_TEXT = [
    "Good evening. Here are the headlines. Parliament voted late last night on the new budget, and the "
    "opposition says it will take the matter to the courts before the end of the month.",
    "In sport, the home side won three goals to one, a result that keeps them at the top of the table "
    "with only four matches left to play this season.",
    "Now the weather. A band of rain moves in from the west tomorrow, with strong winds on the coast and "
    "snow on the higher ground by the evening.",
    "Our reporter spent a week with the families who live along the old canal, where the water has risen "
    "every winter for the past ten years.",
]


def _pad(chords, bpm: float, pluck: float, drums: str) -> str:
    """An aevalsrc expression: a chord pad, a plucked arpeggio ``pluck`` loud, and ``drums``."""
    beat = 60 / bpm
    terms = []
    for k, chord in enumerate(chords):
        gate = f"eq(mod(floor(t/{4 * beat}),{len(chords)}),{k})"
        pad = "+".join(f"sin(2*PI*{f}*t)+0.3*sin(4*PI*{f}*t)+0.1*sin(6*PI*{f}*t)" for f in chord)
        notes = (*chord, 2 * chord[0])
        arp = "+".join(f"eq(mod(floor(t*{2 / beat}),4),{i})*sin(4*PI*{f}*t)" for i, f in enumerate(notes))
        terms.append(f"{gate}*(0.05*({pad})+{pluck}*exp(-6*mod(t,{beat / 2}))*({arp}))")
    return "+".join(terms) + (f"+{drums}" if drums else "")


MUSIC_STYLES = {
    "pop": music_expr(),
    "ballad": _pad([(220.0, 261.63, 329.63), (174.61, 220.0, 261.63), (130.81, 164.81, 196.0), (196.0, 246.94, 293.66)],
                   70, 0.3, ""),
    "techno": _pad([(110.0, 130.81, 164.81), (98.0, 123.47, 146.83)], 128, 0.1,
                   "0.6*sin(2*PI*50*mod(t,0.469)*(1-mod(t,0.469)))*exp(-15*mod(t,0.469))"
                   "+0.08*sin(2*PI*7000*t)*sin(2*PI*5313*t)*exp(-40*mod(t+0.234,0.469))"
                   "+0.2*sin(2*PI*55*t)*(1+0.5*sin(2*PI*110*t))"),
    "strings": "+".join(f"(0.12*sin(2*PI*{f}*(t+0.002*sin(2*PI*5.5*t)))+0.05*sin(4*PI*{f}*t)+0.03*sin(6*PI*{f}*t))"
                        f"*(0.6+0.4*sin(2*PI*t/8+{i}))" for i, f in enumerate((146.83, 220.0, 293.66, 349.23, 440.0))),
}
BROADCAST_LIKE_KINDS = {"speech": 0.45, "music": 0.30, "noise": 0.10, "quiet": 0.15}  # share of sections


def _broadcast_like_sources(folder: Path, seconds: float = 40.0) -> dict[str, list[Path]]:
    """Clips of each kind (``seconds`` long, 22.05 kHz mono wav) in ``folder``, made once."""
    folder.mkdir(parents=True, exist_ok=True)
    clips: dict[str, list[Path]] = {"speech": [], "music": [], "noise": [], "quiet": []}
    rate = "22050"
    for i, (voice, pitch, speed) in enumerate(BROADCAST_VOICES):
        clip = folder / f"speech {i}.wav"
        if not clip.exists():
            raw = folder / f"speech {i}.raw.wav"
            _run(["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(speed), "-w", str(raw),
                  " ".join(BROADCAST_TEXT[i % 4:] + BROADCAST_TEXT[: i % 4])])
            # a studio's noise floor (about -70 dBFS) under the voice: espeak-ng's pauses are digital silence
            _run(["ffmpeg", "-nostdin", "-y", "-v", "error", "-stream_loop", "-1", "-i", str(raw),
                  "-f", "lavfi", "-i", f"anoisesrc=color=pink:amplitude=0.0015:r={rate}", "-filter_complex",
                  f"[0:a]aresample={rate}[v];[v][1:a]amix=inputs=2:duration=first:normalize=0", "-t", str(seconds),
                  "-ac", "1", "-c:a", "pcm_s16le", str(clip)])
            raw.unlink()
        clips["speech"].append(clip)
    lavfi = {f"music {name}": f"aevalsrc='{expr}':s={rate}" for name, expr in MUSIC_STYLES.items()}
    lavfi.update({"noise pink": f"anoisesrc=color=pink:amplitude=0.08:r={rate}",
                  "noise brown": f"anoisesrc=color=brown:amplitude=0.15:r={rate}",
                  # about -75 and -68 dBFS after AAC, and never all-zero frames (white noise as low
                  # as QUIET comes out of AAC partly as digital silence)
                  "quiet pink": f"anoisesrc=color=pink:amplitude=0.001:r={rate}",
                  "quiet brown": f"anoisesrc=color=brown:amplitude=0.002:r={rate}"})
    for name, source in lavfi.items():
        clip = folder / f"{name}.wav"
        if not clip.exists():
            _run(["ffmpeg", "-nostdin", "-y", "-v", "error", "-f", "lavfi", "-i", source, "-t", str(seconds),
                  "-ac", "1", "-c:a", "pcm_s16le", str(clip)])
        clips[name.split()[0]].append(clip)
    return clips


def make_broadcast_like(path: Path, seconds: float, seed: int, clips_dir: Path,
                   video: str = "320x180") -> list[tuple[str, float, float]]:
    """A broadcast-like recording (H.264 testsrc2 of ``video`` size + AAC, or audio only if
    ``video`` is empty) of ``seconds``: sections of 5-40 s (low-level silence 5-10 s) of speech
    in many voices, several music styles, pink/brown noise and low-level (not digital)
    silence, drawn with ``seed``. Returns the intended labels (label, start, stop)."""
    import random  # noqa: PLC0415

    rng = random.Random(seed)
    clips = _broadcast_like_sources(clips_dir)
    kinds, weights = zip(*BROADCAST_LIKE_KINDS.items())
    inputs: list[str] = []
    chains: list[str] = []
    truth: list[tuple[str, float, float]] = []
    used: dict[Path, int] = {}
    t, previous = 0.0, None
    while t < seconds - 1e-6:
        kind = rng.choices(kinds, weights)[0]
        if kind == previous:
            continue
        previous = kind
        length = min(rng.uniform(5, 10) if kind == "quiet" else rng.uniform(5, 40), seconds - t)
        clip = rng.choice(clips[kind])
        if clip not in used:
            used[clip] = len(used)
            inputs += ["-i", str(clip)]
        offset = rng.uniform(0, 40 - length)
        chains.append(f"[{used[clip]}:a]atrim={offset:.3f}:{offset + length:.3f},asetpts=PTS-STARTPTS[a{len(chains)}]")
        truth.append((TRUTH_LABEL[kind], t, t + length))
        t += length
    graph = ";".join(chains) + ";" + "".join(f"[a{i}]" for i in range(len(chains)))
    graph += f"concat=n={len(chains)}:v=0:a=1[aout]"
    cmd = ["ffmpeg", "-nostdin", "-y", "-v", "error", *inputs]
    if video:
        cmd += ["-f", "lavfi", "-i", f"testsrc2=size={video}:rate=25:duration={seconds}"]
    cmd += ["-filter_complex", graph, "-map", "[aout]"]
    if video:
        cmd += ["-map", f"{len(used)}:v", "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"]
    cmd += ["-c:a", "aac", "-b:a", "128k", "-ar", "44100", "-t", str(seconds), str(path)]
    _run(cmd)
    return _merge(truth)


def digital_silence_fraction(path: Path) -> float:
    """The share of 10 ms frames (16 kHz mono, as the segmenter decodes) that are all zeros."""
    import numpy as np  # noqa: PLC0415 - the benchmark's and the stage tests' only

    done = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-vn", "-ac", "1", "-ar", "16000",
                           "-f", "s16le", "pipe:1"], capture_output=True, check=True)
    samples = np.frombuffer(done.stdout, "<i2")
    frames = samples[: len(samples) // 160 * 160].reshape(-1, 160)
    return float(np.mean(np.all(frames == 0, axis=1)))
