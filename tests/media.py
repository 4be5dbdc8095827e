"""Generated test media with known truth (ffmpeg + espeak-ng; no downloaded media).

Truth labels are the segmenter's own: speech, music, noise and noEnergy (silence).
"""

from __future__ import annotations

import subprocess
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
