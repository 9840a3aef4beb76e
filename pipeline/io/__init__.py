"""Reading and writing volumes: zarr v3 stores opened as xarray, and image stacks."""

from pipeline.io.volume import (
    as_volume,
    open_volume,
    provenance,
    voxel_size_of,
    write_volume,
)

__all__ = ["as_volume", "open_volume", "provenance", "voxel_size_of", "write_volume"]
