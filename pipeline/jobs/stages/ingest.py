"""The ``ingest`` stage: a stack on disk into the run as ``<name>.zarr``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import dask.array as da
import numpy as np
import xarray as xr
from pydantic import Field, field_validator

from pipeline.io.codecs import choose_codec
from pipeline.io.ingest import codec_for_stack, slab_shape, stack_volume
from pipeline.errors import UserError
from pipeline.io.stacks import open_stack
from pipeline.io.stores import is_zarr_store, volume_from_store
from pipeline.io.volume import is_labels, voxel_size_of
from pipeline.jobs.base import StageConfig, StageOutput
from pipeline.jobs.context import StageContext

__all__ = ["Config", "run"]


class Config(StageConfig):
    """Read a multi-page TIFF, a folder of TIFF/PNG slices, a .npy stack, or a porelab zarr store.

    From a zarr store (a volume, or one sample of a synthetic dataset) the
    voxel size recorded in the store is used unless ``voxel_size_nm`` is set.
    """

    stage: Literal["ingest"] = "ingest"
    path: str = Field(
        description="Stack or store to read (relative paths are read from the job file's folder), "
        "or the name of an earlier stage whose store to read (a synth dataset, say)."
    )
    voxel_size_nm: tuple[float, float, float] | None = Field(
        default=None, description="Voxel size Z, Y, X in nm (required for image stacks)."
    )
    variable: str = Field(default="image", description="Variable to read from a zarr store (image, labels...).")
    sample: int | None = Field(default=None, ge=0, description="Sample index when the store is a dataset.")
    undo_drift: bool = Field(
        default=False,
        description="Dataset samples only: move each slice back by the stage drift the renderer applied "
        "(relative to its median, as the correct stage does), so that labels line up with a drift-corrected image.",
    )

    codec: Literal["auto", "none", "lz4", "zstd"] = Field(
        default="auto",
        description="Compression of the store written: auto (lz4 when a sample of the first slab compresses "
        "at least 1.2x, else raw chunks: noisy images barely compress, and compressing them costs more time "
        "than writing them), or force none, lz4 or zstd. The choice and its reason go into the store's attrs['codec'].",
    )

    @field_validator("voxel_size_nm")
    @classmethod
    def _positive(cls, v: tuple[float, float, float] | None) -> tuple[float, float, float] | None:
        if v is not None and not all(x > 0 for x in v):
            raise ValueError("every voxel size must be greater than 0 nm")
        return v


def run(ctx: StageContext, cfg: Config) -> StageOutput:
    """Stream the stack into ``<name>.zarr`` with per-slab done markers."""
    path = ctx.resolve_store(cfg.path)
    if is_zarr_store(path):
        vol = volume_from_store(path, variable=cfg.variable, sample=cfg.sample, voxel_size_nm=cfg.voxel_size_nm)
        if cfg.undo_drift:
            vol = _undo_drift(vol, path, cfg.sample, ctx.name)
        block_shape = None
        sample = None
        if cfg.codec == "auto":  # the first slab, as for a stack (one chunk deep in z)
            sample = np.asarray(vol.data[: slab_shape(vol.shape, ctx.chunks)[0]].compute())
        # labels (masks) compress far better with zstd than lz4
        choice = choose_codec(cfg.codec, sample, ctx.chunks, compress_with="zstd" if is_labels(vol) else "lz4")
    else:
        if cfg.undo_drift:
            raise UserError(f"stage {ctx.name!r}: undo_drift needs a synthetic dataset store, not the stack {path}")
        if cfg.voxel_size_nm is None:
            raise UserError(f"stage {ctx.name!r}: voxel_size_nm is required to read the image stack {path}")
        source = open_stack(path)
        vol = stack_volume(source, cfg.voxel_size_nm, chunks=ctx.chunks)
        block_shape = slab_shape(source.shape, ctx.chunks)
        choice = codec_for_stack(source, cfg.codec, ctx.chunks)
    vol = vol.assign_attrs(codec=choice.to_attrs())
    out = ctx.write_volume(
        vol, f"{ctx.name}.zarr", params=cfg.model_dump(mode="json"), block_shape=block_shape, codec=choice.name
    )
    return StageOutput(
        path=out,
        metrics={
            "shape": list(vol.shape),
            "dtype": str(vol.dtype),
            "voxel_size_nm": list(voxel_size_of(vol)),
            "megabytes": round(vol.nbytes / 1e6, 3),
            "blocks_computed": ctx.blocks_computed.get(f"{ctx.name}.zarr", 0),
            "codec": choice.name,
        },
    )


def _undo_drift(vol: xr.DataArray, path: Path, sample: int | None, stage: str) -> xr.DataArray:
    """Shift slice z of a dataset sample by ``-(drift_px[z] - median)`` whole pixels (what the renderer applied)."""
    import zarr

    from pipeline.correct.drift import apply_shifts_dask

    root = zarr.open_group(path, mode="r")
    if "drift_px" not in root or sample is None:
        raise UserError(f"stage {stage!r}: undo_drift needs a synthetic dataset with drift_px and a sample index; {path} has none")
    drift = np.asarray(root["drift_px"][sample], dtype=np.float64)
    shifts = -(drift - np.round(np.median(drift, axis=0)))
    moved = apply_shifts_dask(vol.data, shifts)
    if np.issubdtype(vol.dtype, np.integer):  # integer shifts: linear interpolation is exact, round back
        moved = da.round(moved).astype(vol.dtype)
    return vol.copy(data=moved)
