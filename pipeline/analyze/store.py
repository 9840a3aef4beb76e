"""Writing a lazy result whose blocks are larger than the store's chunks, each computed once."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import dask.array as da
import xarray as xr

__all__ = ["write_blocks"]


def write_blocks(vol: xr.DataArray, path: str | os.PathLike[str], *, block_shape: Sequence[int],
                 chunks: Sequence[int] | None = None, overwrite: bool = True, progress: str | None = None) -> Path:
    """Like :func:`pipeline.io.volume.write_volume`, with ``block_shape`` as the unit of work.

    ``block_shape`` must be whole multiples of ``chunks`` (the on-disk chunks,
    default: the dask array's chunk size). A block of an overlapping
    computation (local thickness) is then computed once instead of once per
    chunk it covers. ``progress`` labels a progress bar over the blocks.
    """
    from pipeline.engine.blocks import store_blocks
    from pipeline.io.volume import atomic_dir, create_volume_store

    path = Path(path)
    data = vol.data if isinstance(vol.data, da.Array) else da.from_array(vol.data)
    chunks = tuple(int(c) for c in (chunks or data.chunksize))
    with atomic_dir(path, overwrite=overwrite) as tmp:
        target = create_volume_store(tmp, vol, chunks=chunks)
        store_blocks(data, target, markers=None, block_shape=block_shape, progress=progress)
    return path
