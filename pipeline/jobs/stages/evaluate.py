"""The ``evaluate`` stage: segmentations of a dataset's samples (and the threshold baseline) scored per family."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from pipeline.jobs.base import StageConfig, StageOutput
from pipeline.jobs.context import StageContext
from pipeline.jobs.stages.baseline import Params

__all__ = ["Config", "run"]


class Config(StageConfig):
    """Score segment / refine stages that segmented a dataset against its labels, beside the threshold baseline."""

    stage: Literal["evaluate"] = "evaluate"
    dataset: str | None = Field(None, description="The dataset (an earlier stage or a .zarr path); default: the one the segmentations name.")
    segmentations: list[str] = Field(min_length=1, description="Earlier segment / refine stages run on the dataset (or .zarr paths).")
    split: str | None = Field("test", description="Split to score; null: every sample the segmentations hold.")
    baseline: bool = Field(True, description="Also run the threshold baseline on the same raw stacks.")
    baseline_params: Params = Field(default_factory=Params)


def run(ctx: StageContext, cfg: Config) -> StageOutput:
    """Write ``<name>.json`` (overall, per family, per sample) and ``<name>.md`` (the table)."""
    from pipeline.analyze.evaluate import BASELINE, evaluate_dataset, markdown_table
    from pipeline.jobs.stages.analyze import write_json
    from pipeline.segment.dataset import dataset_of

    stores = {name: ctx.resolve_store(name) for name in cfg.segmentations}
    dataset = ctx.resolve_store(cfg.dataset) if cfg.dataset else dataset_of(next(iter(stores.values())))
    methods: dict[str, Path | None] = dict(stores)
    if cfg.baseline:
        methods[BASELINE] = None
    client = ctx.dask()

    def compute(tasks):  # noqa: ANN001, ANN202
        return client.gather(client.compute(tasks))

    result = evaluate_dataset(dataset, methods, split=cfg.split, baseline=cfg.baseline_params.model_dump(), compute=compute)
    path = write_json(ctx.path(f"{ctx.name}.json"), result)
    table = ctx.path(f"{ctx.name}.md")
    table.write_text(markdown_table(result))
    metrics = {name: {k: m["overall"][k] for k in ("accuracy", "iou_pore", "iou_solid", "porosity_abs_error", "porosity_abs_error_max")}
               for name, m in result["methods"].items()}
    return StageOutput(path=ctx.input, metrics={"split": cfg.split, "samples": result["samples"], **metrics},
                       files={"evaluation": path, "table": table})
