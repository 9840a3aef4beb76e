"""The ``preprocess`` stage: denoise and normalise the previous volume to float32 in [0, 1]."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from pipeline.errors import UserError
from pipeline.jobs.base import StageConfig, StageOutput, Strict
from pipeline.jobs.context import StageContext

__all__ = ["Config", "run", "plan", "preprocess", "two_pass_parts", "write_two_pass"]


class Denoise(Strict):
    method: Literal["none", "gaussian", "median", "bilateral"] = Field("gaussian", description="Denoising filter.")
    dims: Literal[2, 3] = Field(2, description="2: per slice; 3: across slices too.")
    sigma: float = Field(1.0, gt=0, le=20, description="Gaussian / bilateral spatial sigma, voxels.")
    size: int = Field(3, ge=1, le=15, description="Median window edge, voxels (odd).")
    sigma_range: float | None = Field(None, gt=0, description="Bilateral intensity sigma (input units); default 2.5 x estimated noise.")
    mode: Literal["reflect", "nearest", "mirror", "wrap", "constant"] = Field("reflect", description="Border rule at the volume's edges.")


class Normalize(Strict):
    enabled: bool = Field(True, description="Map robust percentiles to [0, 1].")
    low: float = Field(0.5, ge=0, le=100, description="Percentile mapped to 0.")
    high: float = Field(99.5, ge=0, le=100, description="Percentile mapped to 1.")
    clip: bool = Field(True, description="Clip to [0, 1].")
    match_histograms: bool = Field(False, description="Match every slice's histogram to the volume's.")


class Config(StageConfig):
    """Denoise (gaussian, exact fast median, bilateral) and normalise intensities."""

    stage: Literal["preprocess"] = "preprocess"
    denoise: Denoise = Field(default_factory=Denoise)
    normalize: Normalize = Field(default_factory=Normalize)


def _check(cfg: Config) -> None:
    if cfg.denoise.method == "median" and cfg.denoise.size % 2 == 0:
        raise UserError(f"preprocess: median size {cfg.denoise.size} is even; expected an odd number of voxels")
    if cfg.normalize.low >= cfg.normalize.high:
        raise UserError(f"preprocess: percentiles low={cfg.normalize.low} high={cfg.normalize.high}; expected low < high")


def plan(vol, cfg: Config):  # noqa: ANN001, ANN201 - xarray in, PreprocessPlan out
    """:func:`pipeline.preprocess.chain.plan_preprocess` with a Config; ValueError becomes UserError."""
    from pipeline.preprocess.chain import DenoiseParams, NormalizeParams, plan_preprocess

    _check(cfg)
    try:
        return plan_preprocess(vol, DenoiseParams(**cfg.denoise.model_dump()), NormalizeParams(**cfg.normalize.model_dump()))
    except ValueError as exc:
        raise UserError(f"preprocess: {exc}") from None


def preprocess(vol, cfg: Config, *, persist: bool | None = None, plan_=None):  # noqa: ANN001, ANN201 - shared with the CLI
    """Run :func:`pipeline.preprocess.chain.preprocess_volume` with a Config; ValueError becomes UserError.

    ``persist`` as in :func:`~pipeline.preprocess.chain.preprocess_volume`;
    ``plan_`` a :func:`plan` of ``vol`` already made.
    """
    from pipeline.preprocess.chain import run_plan

    p = plan_ if plan_ is not None else plan(vol, cfg)
    try:
        return run_plan(p, vol, persist=persist)
    except ValueError as exc:
        raise UserError(f"preprocess: {exc}") from None


def two_pass_parts(vol, cfg: Config, p):  # noqa: ANN001, ANN201 - xarray, PreprocessPlan in; (xarray, dict) out
    """The denoised volume (lazy) and the ``summary``/``finish``/``apply``/``dtype`` of its two-pass write.

    Pass 1 stores the denoised blocks as float32 while counting their
    histogram; pass 2 normalises each block in place with the percentiles
    found (the filter runs once). Shared by the stage and the CLI.
    """
    import functools

    import numpy as np
    import xarray as xr

    from pipeline.preprocess.chain import normalize_with_state

    filtered = xr.DataArray(p.filtered, dims=vol.dims, coords=vol.coords, name=vol.name, attrs=p.attrs)
    spec = p.histogram_spec(counted=np.float32)  # counted as stored
    return filtered, {
        "dtype": np.float32,
        "summary": spec.count,
        "finish": functools.partial(p.normalization_state, spec=spec, dtype=np.float32),
        "apply": functools.partial(normalize_with_state, clip=cfg.normalize.clip),
    }


def write_two_pass(ctx: StageContext, vol, cfg: Config, p) -> Path:  # noqa: ANN001 - xarray, PreprocessPlan
    """Write the denoised blocks while counting them, then normalise them in place (filter runs once, out-of-core).

    ``p`` is :func:`plan` of ``vol``; the store is ``<ctx.name>.zarr``, resumable.
    """
    filtered, parts = two_pass_parts(vol, cfg, p)
    return ctx.write_volume_two_pass(filtered, f"{ctx.name}.zarr", params=cfg.model_dump(mode="json"), **parts)


def run(ctx: StageContext, cfg: Config) -> StageOutput:
    """Preprocess the input volume into ``<name>.zarr`` (float32).

    The denoised volume is kept in the workers' memory while its histogram
    is counted when it fits there (30 % of it); otherwise, unless slices are
    histogram-matched, it is written to the output store while counted and
    normalised there in place (:meth:`StageContext.write_volume_two_pass`).
    Either way the filter runs once per block.
    """
    from pipeline.engine.dask_cluster import fits_in_memory
    from pipeline.io.volume import open_volume

    ctx.dask()
    from pipeline.backend import volume_on

    vol = volume_on(open_volume(ctx.require_input()), ctx.backend)
    p = plan(vol, cfg)
    name = f"{ctx.name}.zarr"
    if cfg.normalize.enabled and not cfg.normalize.match_histograms and not fits_in_memory(p.result_nbytes):
        try:
            path = write_two_pass(ctx, vol, cfg, p)
        except ValueError as exc:
            raise UserError(f"preprocess: {exc}") from None
        shape, lo_hi = p.filtered.shape, open_volume(path).attrs.get("normalization_range")
    else:
        out = preprocess(vol, cfg, plan_=p)
        path = ctx.write_volume(out, name, params=cfg.model_dump(mode="json"))
        shape, lo_hi = out.shape, out.attrs.get("normalization_range")
    return StageOutput(
        path=path,
        metrics={
            "shape": list(shape),
            "normalization_range": lo_hi,
            "blocks_computed": ctx.blocks_computed.get(name, 0),
        },
    )
