"""TIFF export: one multi-page ImageJ hyperstack that Fiji opens at its voxel size.

The voxel size is in the resolution tags (pixels per nm in XResolution and
YResolution, as ImageJ reads them) and in the ImageJ description
(``spacing`` = z step, ``unit=nm``, and the origin in pixels when the volume
does not start at 0). Pages are written slab by slab as they are read.
A file over 4 GB is a BigTIFF with the same tags and description (Fiji
opens it with Bio-Formats; a classic TIFF cannot hold it).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from pipeline.errors import UserError
from pipeline.io.export.slabs import iter_slabs
from pipeline.io.volume import atomic_dir, is_labels, origin_of, voxel_size_of

__all__ = ["BIGTIFF_BYTES", "tiff_dtype", "imagej_metadata", "write_tiff"]

#: Data size from which the file is a BigTIFF (tifffile's own limit: 4 GiB less 32 MiB for tags).
BIGTIFF_BYTES: int = 2**32 - 2**25

# ImageJ holds 8-bit, 16-bit unsigned and 32-bit float stacks; others are converted without loss where possible.
_IMAGEJ_DTYPES: dict[np.dtype, np.dtype] = {
    np.dtype(k): np.dtype(v)
    for k, v in {"uint8": "uint8", "uint16": "uint16", "float32": "float32", "bool": "uint8",
                 "int16": "float32", "float64": "float32"}.items()
}


def tiff_dtype(dtype: Any) -> np.dtype:
    """The pixel type a volume of ``dtype`` gets in an ImageJ TIFF.

    uint8, uint16 and float32 are kept; bool becomes uint8 and int16 float32
    (both exact); float64 becomes float32.

    Raises
    ------
    UserError
        For uint32, which ImageJ cannot hold without losing values.
    """
    try:
        return _IMAGEJ_DTYPES[np.dtype(dtype)]
    except KeyError:
        raise UserError(
            f"pixel type {np.dtype(dtype)} does not fit an ImageJ TIFF (8-bit, 16-bit or 32-bit float); "
            "export it as raw or ome-zarr instead"
        ) from None


def imagej_metadata(vol: xr.DataArray) -> tuple[tuple[float, float], dict[str, Any]]:
    """Resolution (pixels per nm in x, y) and ImageJ description entries of ``vol``."""
    vz, vy, vx = voxel_size_of(vol)
    oz, oy, ox = origin_of(vol)
    meta: dict[str, Any] = {"axes": "ZYX", "spacing": vz, "unit": "nm"}
    # ImageJ's origin is the pixel at coordinate 0: physical = (pixel - origin) * size
    for key, o, v in (("xorigin", ox, vx), ("yorigin", oy, vy), ("zorigin", oz, vz)):
        if o:
            meta[key] = -o / v
    if is_labels(vol):
        meta.update(min=0.0, max=1.0)  # display range: pores white, solid black
    return (1.0 / vx, 1.0 / vy), meta


def write_tiff(
    vol: xr.DataArray,
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    bigtiff: bool | None = None,
    progress: str | None = None,
) -> Path:
    """Write ``vol`` as a multi-page ImageJ TIFF, streamed slab by slab, atomically.

    Parameters
    ----------
    vol : xarray.DataArray
        A (z, y, x) volume with ``voxel_size_nm`` (lazy or in memory).
    path : path
        Destination ``*.tif``; it appears only once complete.
    overwrite : bool
        Replace an existing file.
    bigtiff : bool, optional
        Force (True) or forbid (False) BigTIFF; by default only data over
        :data:`BIGTIFF_BYTES` is written as BigTIFF.
    progress : str, optional
        Label of a progress bar over slabs.

    Returns
    -------
    Path
        ``path``: one page per z slice, uncompressed, in :func:`tiff_dtype`.
    """
    import tifffile

    dtype = tiff_dtype(vol.dtype)
    resolution, meta = imagej_metadata(vol)
    big = int(np.prod(vol.shape)) * dtype.itemsize > BIGTIFF_BYTES if bigtiff is None else bool(bigtiff)

    def pages() -> Iterator[np.ndarray]:
        for _, slab in iter_slabs(vol, progress=progress):
            for page in slab:
                yield np.ascontiguousarray(page, dtype=dtype)

    with atomic_dir(path, overwrite=overwrite) as tmp:
        with warnings.catch_warnings():
            # ImageJ in a BigTIFF is "nonconformant" for ImageJ's own reader; Bio-Formats and tifffile read it
            warnings.filterwarnings("ignore", message=".*nonconformant BigTIFF ImageJ", category=UserWarning)
            with tifffile.TiffWriter(tmp, bigtiff=big, imagej=True) as tif:
                tif.write(
                    pages(), shape=tuple(int(s) for s in vol.shape), dtype=dtype, photometric="minisblack",
                    resolution=resolution, resolutionunit="NONE", metadata=meta, software="porelab",
                )
    return Path(path)
