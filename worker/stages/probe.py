"""`probe`: ffprobe each input, keep a summary, quarantine what cannot be read or has no audio."""

from __future__ import annotations

import json
import shutil
import subprocess

from tvseg.errors import BadInput, RetryableError
from tvseg.journal import atomic_write_text
from worker.stages import FileContext, Stage, StageResult

OUTPUT = "probe.json"


class ProbeStage(Stage):
    name = "probe"

    def setup(self) -> None:
        if shutil.which("ffprobe") is None:
            raise RetryableError("ffprobe is not on PATH on this node (install ffmpeg)")

    def process(self, ctx: FileContext) -> StageResult:
        cmd = ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams", "--", str(ctx.staged)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, errors="replace")
        except subprocess.TimeoutExpired:
            raise RetryableError(f"{ctx.source}: ffprobe did not answer within 300 s") from None
        if proc.returncode < 0:  # killed (e.g. scancel signals every process of the job): not the input's fault
            raise RetryableError(f"{ctx.source}: ffprobe was killed by signal {-proc.returncode}")
        if proc.returncode != 0:
            reason = (proc.stderr.strip().splitlines() or ["no message"])[-1]
            raise BadInput(f"{ctx.source}: ffprobe cannot read it: {reason.replace(str(ctx.staged), 'input')}")
        info = json.loads(proc.stdout or "{}")
        streams = info.get("streams", [])
        audio = [s for s in streams if s.get("codec_type") == "audio"]
        if not audio:
            raise BadInput(f"{ctx.source}: no audio stream")
        fmt = info.get("format", {})
        duration = _float(fmt.get("duration")) or max((_float(s.get("duration")) or 0.0 for s in audio), default=0.0)
        if not duration:
            raise BadInput(f"{ctx.source}: no duration (empty or truncated media)")
        summary = {
            "source": ctx.source,
            "duration_s": duration,
            "format": fmt.get("format_name"),
            "size": _int(fmt.get("size")),
            "bit_rate": _int(fmt.get("bit_rate")),
            "streams": [
                {k: s.get(k) for k in ("index", "codec_type", "codec_name", "width", "height", "sample_rate",
                                       "channels", "duration") if s.get(k) is not None}
                for s in streams
            ],
        }
        atomic_write_text(ctx.output_dir / OUTPUT, json.dumps(summary, indent=2, ensure_ascii=False))
        return StageResult(outputs=(OUTPUT,), facts={"duration_s": duration})


def _float(value: object) -> float | None:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _int(value: object) -> int | None:
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
