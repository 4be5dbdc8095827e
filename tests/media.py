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
BROADCAST_KINDS = {"speech": 0.45, "music": 0.30, "noise": 0.10, "quiet": 0.15}  # share of sections


def _broadcast_sources(folder: Path, seconds: float = 40.0) -> dict[str, list[Path]]:
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


def make_broadcast(path: Path, seconds: float, seed: int, clips_dir: Path,
                   video: str = "320x180") -> list[tuple[str, float, float]]:
    """A broadcast-like recording (H.264 testsrc2 of ``video`` size + AAC, or audio only if
    ``video`` is empty) of ``seconds``: sections of 5-40 s (low-level silence 5-10 s) of speech
    in many voices, several music styles, pink/brown noise and low-level (not digital)
    silence, drawn with ``seed``. Returns the intended labels (label, start, stop)."""
    import random  # noqa: PLC0415

    rng = random.Random(seed)
    clips = _broadcast_sources(clips_dir)
    kinds, weights = zip(*BROADCAST_KINDS.items())
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
