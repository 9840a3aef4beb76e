"""The ``baseline`` stage: the grayscale-threshold segmentation and its parameter sensitivity."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from pipeline.errors import UserError
from pipeline.jobs.base import StageConfig, StageOutput, Strict
from pipeline.jobs.context import StageContext

__all__ = ["Config", "Params", "run", "segment"]


class Params(Strict):
    destripe: bool = Field(True, description="Remove curtaining stripes (pipeline.correct's profile method).")
    stripe_width: int = Field(15, ge=3, le=255, description="Median window across x of the stripe removal, px.")
    filter: Literal["median", "gaussian", "none"] = Field("median", description="Denoising filter per slice.")
    filter_size: float = Field(3.0, ge=0, le=64, description="Median window (px) or gaussian sigma (px).")
    threshold: float | None = Field(None, description="Grey value under which a voxel is pore; null: Otsu.")
    threshold_offset: float = Field(0.0, ge=-1, le=1, description="Added to the threshold, fraction of the grey range.")
    min_size: int = Field(16, ge=0, le=1_000_000, description="Islands of either phase under this many px (per slice) flipped.")


class Config(StageConfig):
    """Segment the previous stage's grey volume by thresholding; sweep its parameters."""

    stage: Literal["baseline"] = "baseline"
    params: Params = Field(default_factory=Params)
    sweep: bool = Field(True, description="Run the sensitivity sweep (porosity over a grid of the parameters).")
    sweep_slices: int = Field(32, ge=1, le=100000, description="Slices the sweep runs on (evenly spread).")
    truth: str | None = Field(None, description="Ground-truth labels (an earlier stage's name or a .zarr path).")


def segment(vol, params: Params):  # noqa: ANN001, ANN201 - shared with the CLI
    """Baseline labels (lazy) and threshold info of a grey volume, ValueError as UserError."""
    from pipeline.baseline import BaselineParams, baseline_segment

    try:
        return baseline_segment(vol.data, BaselineParams(**params.model_dump()))
    except ValueError as exc:
        raise UserError(f"baseline: {exc}") from None


def run(ctx: StageContext, cfg: Config) -> StageOutput:
    """Write ``<name>.zarr`` (labels, 1 = pore) and ``<name>.json`` (threshold, sweep)."""
    from pipeline.analyze.truth import truth_metrics
    from pipeline.baseline import BaselineParams, sensitivity_sweep
    from pipeline.io.volume import as_volume, open_volume, voxel_size_of
    from pipeline.jobs.stages.analyze import write_json

    ctx.dask()
    vol = open_volume(ctx.require_input("a grey image volume"))
    labels, info = segment(vol, cfg.params)
    out = as_volume(labels, voxel_size_of(vol), name="labels", attrs={"baseline_threshold": info})
    path = ctx.write_volume(out, f"{ctx.name}.zarr", params=cfg.model_dump(mode="json"), dtype="uint8")
    written = open_volume(path)
    metrics: dict = {"porosity": float(written.data.mean().compute()), **info}
    result: dict = {"threshold": info, "porosity": metrics["porosity"], "params": cfg.params.model_dump()}
    if cfg.truth:
        from pipeline.analyze.truth import align_truth

        tv = open_volume(ctx.resolve_store(cfg.truth))
        try:
            tv = align_truth(tv, vol)  # by coordinates when the correction changed the geometry
        except ValueError as exc:
            raise UserError(f"stage {ctx.name!r}: truth {cfg.truth!r} does not fit the image: {exc}") from None
        result["truth"] = metrics["truth"] = truth_metrics(written.data, tv.data)
    if cfg.sweep:
        sw = sensitivity_sweep(vol.data, BaselineParams(**cfg.params.model_dump()), max_slices=cfg.sweep_slices)
        result["sweep"] = sw
        metrics["sweep"] = {k: sw[k] for k in ("default_porosity", "min", "max", "spread", "std", "slices")}
    files: dict[str, Path] = {"sweep": write_json(ctx.path(f"{ctx.name}.json"), result)}
    return StageOutput(path=path, metrics=metrics, files=files)
