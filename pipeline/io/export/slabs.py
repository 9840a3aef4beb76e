"""A volume read as consecutive z-slabs, the next one read while the caller writes the current one."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import dask.array as da
import numpy as np
import xarray as xr

from pipeline.backend import to_numpy
from pipeline.engine.blocks import active_client
from pipeline.io.volume import DEFAULT_CHUNKS
from pipeline.progress import progress_bar

__all__ = ["SLAB_BYTES", "slab_depth", "iter_slabs"]

#: Bytes of one slab at most (two are in memory at once: the one written and the one read ahead).
SLAB_BYTES: int = 256 * 2**20


def slab_depth(vol: xr.DataArray, *, max_bytes: int | None = None) -> int:
    """Slices per slab: one chunk of the store deep (each chunk decompressed once), fewer when that exceeds ``max_bytes``.

    ``max_bytes`` defaults to :data:`SLAB_BYTES`.
    """
    max_bytes = SLAB_BYTES if max_bytes is None else int(max_bytes)
    chunk_z = int(vol.data.chunks[0][0]) if isinstance(vol.data, da.Array) else DEFAULT_CHUNKS[0]
    plane = int(np.prod(vol.shape[1:])) * vol.dtype.itemsize
    return max(1, min(chunk_z, int(vol.shape[0]), max_bytes // max(plane, 1)))


def iter_slabs(vol: xr.DataArray, depth: int | None = None, *, progress: str | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(z0, slab)`` for slices ``z0:z0 + depth`` of ``vol``, in order, as NumPy arrays.

    Out-of-core: at most two slabs are in memory, the one the caller holds and
    the next, read (decompressed) on a helper thread meanwhile.

    Parameters
    ----------
    vol : xarray.DataArray
        A (z, y, x) volume, lazy (dask) or in memory.
    depth : int, optional
        Slices per slab (default :func:`slab_depth`).
    progress : str, optional
        Label of a progress bar over slabs; None for none.
    """
    depth = depth or slab_depth(vol)
    data = vol.data
    starts = list(range(0, int(vol.shape[0]), depth))

    local = active_client() is None

    def read(z0: int) -> np.ndarray:
        part = data[z0 : z0 + depth]
        if not isinstance(part, da.Array):
            return np.array(to_numpy(part))
        if local and isinstance(part._meta, np.ndarray):
            slab = np.empty(part.shape, part.dtype)
            # each chunk lands in place: no concatenated copy of the slab (a Dask cluster's workers
            # could not write into this process's array: there the slab is gathered instead)
            da.store(part, slab, lock=False, scheduler="threads")
            return slab
        return to_numpy(part.compute())

    if not starts:
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="porelab-slab") as pool, progress_bar(
        total=len(starts), desc=progress, unit="slab"
    ) as bar:
        ahead = pool.submit(read, starts[0])
        for i, z0 in enumerate(starts):
            slab = ahead.result()
            if i + 1 < len(starts):
                ahead = pool.submit(read, starts[i + 1])
            yield z0, slab
            bar.update(1)
