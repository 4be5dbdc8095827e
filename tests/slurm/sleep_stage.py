"""`sleep`: a test-only stage that takes a set time (and optionally holds memory) per file.

It reaches the worker on a compute node the way any third-party stage would: through
the ``tvseg.stages`` entry-point group of an installed distribution, here a
``.dist-info`` folder that slurm_helpers puts on PYTHONPATH (sbatch passes the
environment on).  The production registry in pyproject.toml does not list it.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass

from worker.stages import FileContext, Stage, StageResult

OUTPUT = "sleep.json"


class SleepStage(Stage):
    name = "sleep"

    @dataclass(frozen=True)
    class Settings:
        seconds: float = 1.0
        hold_mb: int = 0  # megabytes written and held while sleeping

    def process(self, ctx: FileContext) -> StageResult:
        held = bytearray(b"\1") * (self.settings.hold_mb * 1024 * 1024)
        time.sleep(self.settings.seconds)
        facts = {"cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "held": len(held),
                 "restarts": int(os.environ.get("SLURM_RESTART_COUNT", "0"))}
        (ctx.output_dir / OUTPUT).write_text(json.dumps(facts), encoding="utf-8")
        return StageResult(outputs=(OUTPUT,), facts=facts)
