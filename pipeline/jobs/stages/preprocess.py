"""The ``preprocess`` stage: denoise and normalise the previous volume to float32 in [0, 1]."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pipeline.errors import UserError
from pipeline.jobs.base import StageConfig, StageOutput, Strict
from pipeline.jobs.context import StageContext

__all__ = ["Config", "run"]


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


def preprocess(vol, cfg: Config):  # noqa: ANN001, ANN201 - shared with the CLI
    """Run :func:`pipeline.preprocess.chain.preprocess_volume` with a Config; ValueError becomes UserError."""
    from pipeline.preprocess.chain import DenoiseParams, NormalizeParams, preprocess_volume

    if cfg.denoise.method == "median" and cfg.denoise.size % 2 == 0:
        raise UserError(f"preprocess: median size {cfg.denoise.size} is even; expected an odd number of voxels")
    if cfg.normalize.low >= cfg.normalize.high:
        raise UserError(f"preprocess: percentiles low={cfg.normalize.low} high={cfg.normalize.high}; expected low < high")
    try:
        return preprocess_volume(vol, DenoiseParams(**cfg.denoise.model_dump()), NormalizeParams(**cfg.normalize.model_dump()))
    except ValueError as exc:
        raise UserError(f"preprocess: {exc}") from None


def run(ctx: StageContext, cfg: Config) -> StageOutput:
    """Preprocess the input volume into ``<name>.zarr`` (float32)."""
    from pipeline.io.volume import open_volume

    ctx.dask()
    vol = open_volume(ctx.require_input())
    out = preprocess(vol, cfg)
    path = ctx.write_volume(out, f"{ctx.name}.zarr", params=cfg.model_dump(mode="json"))
    return StageOutput(
        path=path,
        metrics={
            "shape": list(out.shape),
            "normalization_range": out.attrs.get("normalization_range"),
            "blocks_computed": ctx.blocks_computed.get(f"{ctx.name}.zarr", 0),
        },
    )
