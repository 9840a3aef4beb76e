"""The ``train3d`` stage: a 3D U-Net that refines a 2D model's stacked probabilities (with the grey image)."""

from __future__ import annotations

from typing import Literal

from pipeline.jobs.base import StageConfig, StageOutput
from pipeline.jobs.context import StageContext
from pipeline.jobs.stages.training import engines, run_training
from pipeline.train.config import Train3DSettings

__all__ = ["Config", "engines", "run"]


class Config(StageConfig, Train3DSettings):
    """Train a 3D refinement U-Net on (2D probability, image) patches of the dataset."""

    stage: Literal["train3d"] = "train3d"


def run(ctx: StageContext, cfg: Config) -> StageOutput:
    """Train into ``<name>/model``; ``probability`` names the segment stage that segmented the dataset."""
    from pipeline.errors import UserError
    from pipeline.segment.dataset import dataset_of, is_dataset_store

    prob = ctx.resolve_store(cfg.probability)
    if not is_dataset_store(prob):
        raise UserError(f"stage {ctx.name!r}: probability {cfg.probability!r} is not a segmentation of a dataset; "
                        "segment the dataset's samples first (a segment stage whose input is the synth stage)")
    if cfg.dataset is None:
        cfg = cfg.model_copy(update={"dataset": str(dataset_of(prob))})
    return run_training(ctx, cfg, probability=prob)
