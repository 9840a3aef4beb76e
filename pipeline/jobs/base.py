"""Base classes shared by every stage: its config model and what it returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Strict", "StageConfig", "StageOutput"]


class Strict(BaseModel):
    """A job-file model: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class StageConfig(Strict):
    """Fields every stage of a job has.

    Subclasses add ``stage: Literal["<kind>"]`` (the discriminator) and their
    own parameters.
    """

    name: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        description="Name of this stage's output in the run folder; defaults to the stage kind.",
    )
    input: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        description="Name of an earlier stage whose output this stage reads; defaults to the previous stage.",
    )


@dataclass
class StageOutput:
    """What a stage adapter returns to the runner.

    Attributes
    ----------
    path : Path or None
        Main output (a zarr store, a folder, a file) inside the run folder,
        read by the next stage.
    metrics : dict
        JSON-able numbers that go to manifest.json and the report.
    files : dict
        Other named outputs (plots, meshes, tables), paths inside the run folder.
    """

    path: Path | None
    metrics: dict[str, Any] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
