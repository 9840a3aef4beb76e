"""The ``report`` stage: the run's HTML report as it stands (the runner also writes it at the end)."""

from __future__ import annotations

from typing import Literal

from pipeline.jobs.base import StageConfig, StageOutput
from pipeline.jobs.context import StageContext

__all__ = ["Config", "engines", "run"]


class Config(StageConfig):
    """Write report/index.html from the stages done so far."""

    stage: Literal["report"] = "report"


def engines(cfg: Config) -> set[str]:
    """None: the page is written in the runner's process."""
    return set()


def run(ctx: StageContext, cfg: Config) -> StageOutput:
    from pipeline.report import write_report

    path = write_report(ctx.run_dir)
    return StageOutput(path=None, metrics={"bytes": path.stat().st_size}, files={"report": path})
