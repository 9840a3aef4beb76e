"""The ``correct`` stage: tilt, curtaining, illumination, drift and ROI on the previous volume."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pipeline.errors import UserError
from pipeline.jobs.base import StageConfig, StageOutput, Strict
from pipeline.jobs.context import StageContext

__all__ = ["Config", "run"]


class Tilt(Strict):
    enabled: bool = Field(True, description="Correct the foreshortening of the milled face.")
    angle_deg: float = Field(52.0, gt=0, le=90, description="Angle between electron beam and milled face, degrees.")
    resample: bool = Field(True, description="Stretch y by 1/sin(angle); false only changes the y voxel size.")


class Destripe(Strict):
    enabled: bool = Field(True, description="Remove vertical curtaining stripes.")
    method: Literal["histogram", "profile", "onset"] = Field(
        "histogram",
        description="histogram: each column's histogram of flat pixels registered on the slice's; profile: median residue across x; "
        "onset: per-column offsets that may start part-way down, on the bright phase, pooled over neighbouring slices.",
    )
    threshold: float | None = Field(
        None, ge=0, le=20, description="Columns under this many standard errors are left alone (default 2.5 histogram, 3.0 profile)."
    )
    keep: float = Field(0.6, gt=0, le=1, description="histogram: fraction of the flattest pixels used.")
    background_px: int = Field(64, ge=0, le=100000, description="histogram: trends across x broader than about this (px) are kept as illumination.")
    max_amplitude: float = Field(0.25, gt=0, le=1, description="histogram: largest stripe searched, as a fraction of the intensity range.")
    width: int = Field(15, ge=3, le=255, description="profile: median window across x in px; finds stripes up to about width/2 wide.")
    pool_slices: int = Field(8, ge=0, le=256, description="onset: slices on either side pooled into each slice's estimate (0: alone).")


class Illumination(Strict):
    enabled: bool = Field(True, description="Remove a smooth background.")
    method: Literal["robust", "poly", "gaussian"] = Field(
        "robust",
        description="robust: log-space polynomial on the bright phase, smoothed along z, only its significant terms; "
        "poly: polynomial fitted to every pixel; gaussian: a blur.",
    )
    degree: int = Field(2, ge=0, le=6, description="Degree of the polynomial surface.")
    sigma_fraction: float = Field(0.125, gt=0, le=1, description="Gaussian sigma as a fraction of the slice size.")
    scope: Literal["slice", "volume"] = Field("slice", description="One background per slice or one for the volume (poly).")
    mode: Literal["divide", "subtract"] = Field("divide", description="Divide (multiplicative shading) or subtract.")
    window: int = Field(51, ge=0, le=100001, description="robust: slices the background is smoothed over along z (0 or 1: one per volume).")
    significance: float = Field(
        3.0, ge=0, le=100, description="robust: terms weaker than this many standard errors are shrunk away (0 keeps all)."
    )


class Drift(Strict):
    enabled: bool = Field(True, description="Align slices by phase correlation.")
    lags: int = Field(2, ge=1, le=8, description="Compare each slice with this many previous slices (2 also measures the step noise).")
    upsample: int = Field(50, ge=1, le=1000, description="Sub-pixel resolution 1/upsample px.")
    highpass_px: float = Field(16.0, ge=0, description="Gaussian background removed before correlating, px.")
    min_confidence: float = Field(5.0, ge=0, description="Peak-to-sidelobe ratio under which a pair is ignored.")
    max_step_px: float | None = Field(None, gt=0, description="Longer steps per slice are ignored.")
    smooth_window: int = Field(0, ge=0, le=101, description="Savitzky-Golay window over the trajectory (slices; <3 off).")
    step_threshold: float = Field(5.0, ge=0, le=100, description="Steps under this many noise levels are set to 0 (0: keep all).")
    parallax: bool = Field(True, description="Remove a steady y step that a long-lag probe shows to be shine-through parallax.")
    parallax_lag: int = Field(4, ge=2, le=64, description="Lag in slices of the parallax probe.")
    interpolation: Literal["nearest", "linear"] = Field(
        "nearest", description="nearest: move each slice by whole pixels (its shift rounded); linear: sub-pixel, "
        "which averages neighbouring pixels.")


class Roi(Strict):
    mode: Literal["auto", "box", "none"] = Field("auto", description="auto: data on every slice; box: explicit; none.")
    box: list[list[int]] | None = Field(None, description="[[z0, z1], [y0, y1], [x0, x1]] half-open, voxels (after tilt).")


class Config(StageConfig):
    """Correct a FIB-SEM stack; every step can be switched off and tuned."""

    stage: Literal["correct"] = "correct"
    tilt: Tilt = Field(default_factory=Tilt)
    destripe: Destripe = Field(default_factory=Destripe)
    illumination: Illumination = Field(default_factory=Illumination)
    drift: Drift = Field(default_factory=Drift)
    roi: Roi = Field(default_factory=Roi)
    output_dtype: Literal["float32", "input"] = Field("float32", description="Keep float32 or round back to the input's integer type.")
    slab_mb: float = Field(32.0, gt=0, le=4096, description="MB of float32 per whole-slice slab a task works on.")


def correct(vol, cfg: Config, progress: str | None = None):  # noqa: ANN001, ANN201 - shared with the CLI
    """Run :func:`pipeline.correct.chain.correct_volume` with a Config; ValueError becomes UserError.

    ``progress`` prefixes the progress bars of the estimation passes.
    """
    from pipeline.correct.chain import DestripeParams, DriftParams, IlluminationParams, RoiParams, TiltParams, correct_volume

    try:
        return correct_volume(
            vol,
            tilt=TiltParams(**cfg.tilt.model_dump()),
            destripe=DestripeParams(**cfg.destripe.model_dump()),
            illumination=IlluminationParams(**cfg.illumination.model_dump()),
            drift=DriftParams(**cfg.drift.model_dump()),
            roi=RoiParams(**cfg.roi.model_dump()),
            output_dtype=cfg.output_dtype,
            slab_mb=cfg.slab_mb,
            progress=progress,
        )
    except ValueError as exc:
        raise UserError(f"correct: {exc}") from None


def metrics_of(out) -> dict:  # noqa: ANN001
    drift = out.attrs.get("drift_px") or [[0.0, 0.0]]
    import numpy as np

    d = np.asarray(drift, dtype=float)
    return {
        "shape": list(out.shape),
        "voxel_size_nm": list(out.attrs["voxel_size_nm"]),
        "roi_box": out.attrs.get("roi_box"),
        "drift_max_px": float(np.abs(d).max()),
        "drift_range_px": [float(np.ptp(d[:, 0])), float(np.ptp(d[:, 1]))],
    }


def run(ctx: StageContext, cfg: Config) -> StageOutput:
    """Correct the input volume into ``<name>.zarr``; diagnostics go to its attrs."""
    from pipeline.io.volume import open_volume

    ctx.dask()
    from pipeline.backend import volume_on

    vol = volume_on(open_volume(ctx.require_input()), ctx.backend)
    out = correct(vol, cfg, progress=ctx.name)
    dtype = None if cfg.output_dtype == "float32" else out.dtype
    path = ctx.write_volume(out, f"{ctx.name}.zarr", params=cfg.model_dump(mode="json"), dtype=dtype)
    m = metrics_of(out)
    m["blocks_computed"] = ctx.blocks_computed.get(f"{ctx.name}.zarr", 0)
    return StageOutput(path=path, metrics=m)
