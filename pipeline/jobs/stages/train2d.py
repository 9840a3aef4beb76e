"""The ``train2d`` stage: a 2D / 2.5D U-Net trained on a synthetic dataset (Ray Train), a model folder out."""

from __future__ import annotations

from typing import Literal

from pipeline.jobs.base import StageConfig, StageOutput
from pipeline.jobs.context import StageContext
from pipeline.jobs.stages.training import engines, run_training
from pipeline.train.config import Train2DSettings

__all__ = ["Config", "engines", "run"]


class Config(StageConfig, Train2DSettings):
    """Train a 2D (slices: 1) or 2.5D (slices: 3, 5) U-Net on the dataset's train split, validated on val."""

    stage: Literal["train2d"] = "train2d"


def run(ctx: StageContext, cfg: Config) -> StageOutput:
    """Train into ``<name>/model`` (checkpoints, history, figures beside it); resumes from the last checkpoint."""
    return run_training(ctx, cfg)
