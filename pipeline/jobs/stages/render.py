"""The ``render`` stage: the structures of a dataset rendered anew (for example with Blender).

Reads the dataset written by an earlier ``synth`` stage (``render: null`` there
gives structures only) and writes ``<name>.zarr`` with the same layout: the
labels and sphere lists of the input, images from this stage's renderer, and
freshly drawn renderer parameters per sample.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pipeline.jobs.base import StageConfig, StageOutput
from pipeline.jobs.context import StageContext
from pipeline.jobs.stages.synth import RenderSpec, dataset_metrics

__all__ = ["Config", "engines", "run"]


class Config(StageConfig):
    """Render the structures of a synthetic dataset as FIB-SEM slices."""

    stage: Literal["render"] = "render"
    render: RenderSpec = Field(default_factory=RenderSpec)
    splits: dict[Literal["train", "val", "test"], float] = Field(
        default_factory=lambda: {"train": 0.8, "val": 0.1, "test": 0.1}, description="Split fractions (seeded permutation)."
    )
    executor: Literal["ray", "local"] = Field(default="ray", description="ray: one Ray task per sample; local: in the runner's process.")
    max_retries: int = Field(default=3, ge=0, le=100, description="Retries of a sample whose worker died.")
    figures: bool = Field(default=True, description="Write the size-distribution plot and example panels.")


def engines(cfg: Config) -> set[str]:
    """Ray when the samples are Ray tasks; nothing otherwise."""
    return {"ray"} if cfg.executor == "ray" else set()


def run(ctx: StageContext, cfg: Config) -> StageOutput:
    """Render every sample of the input dataset (one Ray task per sample) into ``<name>.zarr``."""
    from pipeline.synth.dataset import figures_dir
    from pipeline.synth.factory import build_dataset, plan_renders

    source = ctx.require_input("a synthetic dataset (a synth stage)")
    plans = plan_renders(source, seed=ctx.seed, render=cfg.render.options(), render_ranges=cfg.render.ranges())
    if cfg.executor == "ray":
        ctx.ray()
    out = ctx.path(f"{ctx.name}.zarr")
    card = {
        "job": {"stage": ctx.name, "job_hash": ctx.job_hash, "config": cfg.model_dump(mode="json")},
        "render_ranges": cfg.render.ranges(),
        "render_backend": cfg.render.backend,
    }
    card = build_dataset(
        out, plans, seed=ctx.seed, card=card, source=source, executor=cfg.executor, max_retries=cfg.max_retries,
        splits=cfg.splits, overwrite=True, figures=cfg.figures, work_dir=ctx.work_dir, progress=f"{ctx.name}: samples",
    )
    files = {name: figures_dir(out) / f for name, f in (("card", "card.json"), ("psd", "psd.png"), ("panels", "panels.png"))
             if (figures_dir(out) / f).exists()}
    return StageOutput(path=out, metrics=dataset_metrics(card), files=files)
