"""The ``baseline`` stage: the grayscale-threshold segmentation and its parameter sensitivity."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

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


def segment(vol, params: Params, scratch: Path, write: Callable[..., Any]):  # noqa: ANN001, ANN201 - shared with the CLI
    """Baseline labels (lazy) and threshold info of a grey volume, the stack filtered only once.

    The filtered stack (the costly step) is written to the store ``scratch``
    by ``write(volume, scratch, progress=...)``; the threshold's statistics and
    the labels are read from it (lazily filtered, each would filter the stack
    again). The caller removes ``scratch`` once the labels are written.
    ValueError as UserError.
    """
    from pipeline.baseline import BaselineParams
    from pipeline.baseline.threshold import filtered_stack, threshold_filtered
    from pipeline.io.volume import as_volume, open_volume, voxel_size_of

    p = BaselineParams(**params.model_dump())
    try:
        filtered = filtered_stack(vol.data, p)
    except ValueError as exc:
        raise UserError(f"baseline: {exc}") from None
    write(as_volume(filtered, voxel_size_of(vol), name="filtered"), scratch, progress="baseline: filter")
    return threshold_filtered(open_volume(scratch).data, p)


def _scratch(ctx: StageContext) -> Path:
    """The scratch store of the filtered stack, in the stage's work folder (its block markers beside it)."""
    return ctx.work_dir / "filtered.zarr"


def _remove_scratch(ctx: StageContext) -> None:
    scratch = _scratch(ctx)
    rel = scratch.relative_to(ctx.run_dir)
    for done in (scratch, *ctx.work_dir.glob(f"{rel}.*")):  # the store and its block markers
        shutil.rmtree(done, ignore_errors=True)


def run(ctx: StageContext, cfg: Config) -> StageOutput:
    """Write ``<name>.zarr`` (labels, 1 = pore) and ``<name>.json`` (threshold, sweep)."""
    from pipeline.analyze.truth import truth_metrics
    from pipeline.baseline import BaselineParams, sensitivity_sweep
    from pipeline.io.volume import as_volume, open_volume, voxel_size_of
    from pipeline.jobs.stages.analyze import write_json

    ctx.dask()
    vol = open_volume(ctx.require_input("a grey image volume"))
    scratch = _scratch(ctx)

    def write(volume, path: Path, progress: str) -> Path:  # noqa: ANN001 - resumable, with the stage's markers
        return ctx.write_volume(volume, str(path.relative_to(ctx.run_dir)), params=cfg.model_dump(mode="json"),
                                dtype="float32", progress=f"{ctx.name}: filter")

    labels, info = segment(vol, cfg.params, scratch, write)
    out = as_volume(labels, voxel_size_of(vol), name="labels", attrs={"baseline_threshold": info})
    path = ctx.write_volume(out, f"{ctx.name}.zarr", params=cfg.model_dump(mode="json"), dtype="uint8")
    _remove_scratch(ctx)
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
