"""Resampling a volume to the voxel size a model was trained at, and the result back (linear, lazy)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr

from pipeline.io.volume import DIMS

__all__ = ["training_voxel_size", "resample_volume", "resample_like"]


def training_voxel_size(voxel_size_nm: dict[str, list[float]]) -> list[float]:
    """The voxel size (z, y, x) in nm to resample to: the geometric middle of the range a model saw."""
    lo, hi = np.asarray(voxel_size_nm["min"], float), np.asarray(voxel_size_nm["max"], float)
    return [float(v) for v in np.sqrt(lo * hi)]


def resample_volume(vol: xr.DataArray, voxel_size_nm: Sequence[float]) -> xr.DataArray:
    """``vol`` linearly interpolated onto a grid of ``voxel_size_nm`` covering the same extent (lazy, dask).

    The new grid starts at the first voxel centre and stays inside the last
    one, so nothing is extrapolated. ``attrs["voxel_size_nm"]`` is updated and
    ``attrs["resampled_from_nm"]`` records the original size.
    """
    coords = {}
    for dim, vs in zip(DIMS, voxel_size_nm):
        c = vol[dim].values
        n = max(1, int(np.floor((c[-1] - c[0]) / float(vs) + 1e-9)) + 1)
        coords[dim] = c[0] + float(vs) * np.arange(n)
    out = vol.interp(coords, method="linear", assume_sorted=True)
    for dim in DIMS:
        out[dim].attrs.update(vol[dim].attrs)
    return out.assign_attrs({**vol.attrs, "voxel_size_nm": [float(v) for v in voxel_size_nm],
                             "resampled_from_nm": list(vol.attrs.get("voxel_size_nm", []))})


def resample_like(vol: xr.DataArray, like: xr.DataArray) -> xr.DataArray:
    """``vol`` (a resampled volume) linearly interpolated back onto ``like``'s grid, chunked like it.

    Coordinates past the resampled grid's last voxel take the nearest value
    (the edge is extended, never set to NaN).
    """
    # past the last resampled voxel the edge value is taken: the coordinates are clipped into the grid
    target = {dim: np.clip(like[dim].values, vol[dim].values[0], vol[dim].values[-1]) for dim in DIMS}
    out = vol.interp(target, method="linear", assume_sorted=True)
    out = out.assign_coords({dim: like[dim] for dim in DIMS})
    attrs = {k: v for k, v in vol.attrs.items() if k != "resampled_from_nm"}
    out = out.assign_attrs({**attrs, "voxel_size_nm": like.attrs.get("voxel_size_nm")})
    if hasattr(like.data, "chunks"):
        out = out.chunk(dict(zip(DIMS, like.data.chunks)))
    return out
