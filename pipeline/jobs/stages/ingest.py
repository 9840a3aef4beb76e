"""The ``ingest`` stage: a stack on disk into the run as ``<name>.zarr``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from pipeline.io.ingest import slab_shape, stack_volume
from pipeline.io.stacks import open_stack
from pipeline.jobs.base import StageConfig, StageOutput
from pipeline.jobs.context import StageContext

__all__ = ["Config", "run"]


class Config(StageConfig):
    """Read a multi-page TIFF, a folder of TIFF/PNG slices or a .npy stack."""

    stage: Literal["ingest"] = "ingest"
    path: str = Field(description="Stack to read; relative paths are read from the job file's folder.")
    voxel_size_nm: tuple[float, float, float] = Field(description="Voxel size Z, Y, X in nm.")

    @field_validator("voxel_size_nm")
    @classmethod
    def _positive(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if not all(x > 0 for x in v):
            raise ValueError("every voxel size must be greater than 0 nm")
        return v


def run(ctx: StageContext, cfg: Config) -> StageOutput:
    """Stream the stack into ``<name>.zarr`` with per-slab done markers."""
    voxel = cfg.voxel_size_nm
    source = open_stack(ctx.resolve(cfg.path))
    vol = stack_volume(source, voxel, chunks=ctx.chunks)
    out = ctx.write_volume(
        vol,
        f"{ctx.name}.zarr",
        params=cfg.model_dump(mode="json"),
        block_shape=slab_shape(source.shape, ctx.chunks),
    )
    return StageOutput(
        path=out,
        metrics={
            "shape": list(source.shape),
            "dtype": str(source.dtype),
            "voxel_size_nm": list(voxel),
            "megabytes": round(source.nbytes / 1e6, 3),
            "blocks_computed": ctx.blocks_computed.get(f"{ctx.name}.zarr", 0),
        },
    )
