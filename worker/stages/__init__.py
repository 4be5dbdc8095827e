"""The stage interface and the registry of stages by name.

A stage registers itself through the ``tvseg.stages`` entry-point group of the
installed distribution (see pyproject.toml): the registry loads only the stages a
job names, so an orchestrator that validates ``worker.stages`` never imports a
model library, and adding a stage never touches the worker loop.

A stage module must not import heavy libraries at module level: do it in
``setup()``, which the worker calls once per process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar, Mapping

ENTRY_POINT_GROUP = "tvseg.stages"


@dataclass(frozen=True)
class NoSettings:
    """Settings of a stage that takes none."""


@dataclass(frozen=True)
class FileContext:
    """What a stage gets for one input file."""

    file_id: int
    source: str  # the path as listed in the manifest (never to be modified)
    staged: Path  # the node-local copy to read
    output_dir: Path  # this file's folder under <workdir>/outputs/ (exists)
    results: Mapping[str, "StageResult"]  # what earlier stages returned for this file


@dataclass(frozen=True)
class StageResult:
    """What a stage returns: output files (relative to the file's output dir) and facts."""

    outputs: tuple[str, ...] = ()
    facts: Mapping[str, Any] = field(default_factory=dict)  # e.g. {"duration_s": 3600.0}


class Stage:
    """Base class of a stage.

    - ``name``: the registry name used in jobs.yaml ``worker.stages``.
    - ``Settings``: a frozen dataclass of the stage's options (jobs.yaml
      ``stage_settings.<name>``), validated up front on the login node.
    - ``setup()`` loads models once per worker process; ``process()`` runs on one
      file and raises ``tvseg.errors.BadInput`` for a bad input (quarantine) or
      ``tvseg.errors.RetryableError`` for an infrastructure fault; ``close()``
      releases what setup took.
    """

    name: ClassVar[str]
    Settings: ClassVar[type] = NoSettings

    def __init__(self, settings: Any) -> None:
        self.settings = settings

    def setup(self) -> None:
        """Load models or check tools; called once per worker process."""

    def process(self, ctx: FileContext) -> StageResult:
        raise NotImplementedError

    def close(self) -> None:
        """Release what setup() took; called once, also after an error."""


@cache
def _entry_points() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def stage_names() -> list[str]:
    """Names of every registered stage, sorted."""
    return sorted(_entry_points())


def stage_class(name: str) -> type[Stage]:
    """The stage class registered under ``name``; KeyError lists the valid names."""
    eps = _entry_points()
    if name not in eps:
        raise KeyError(f"unknown stage {name!r}; registered stages: {', '.join(stage_names())}")
    cls = eps[name].load()
    if not (isinstance(cls, type) and issubclass(cls, Stage)) or cls.name != name:
        raise TypeError(f"entry point {name!r} does not name a Stage class called {name!r}")
    return cls
