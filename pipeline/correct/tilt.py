"""Tilt (foreshortening) correction: the SEM sees the milled face at an angle.

With the electron beam at ``angle_deg`` to the cut face (52 degrees on most
FIB-SEMs), a true distance ``d`` along the face's vertical (image y) appears as
``d * sin(angle)``. The true y pixel size is therefore ``pixel / sin(angle)``;
:func:`tilt_correct` resamples y so that the stretched image has about the
original y pixel size again, and :func:`tilt_voxel_size` gives the exact new
voxel size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import dask.array as da
import numpy as np

from pipeline.backend import xp_of

__all__ = ["tilt_scale", "tilt_rows", "tilt_voxel_size", "tilt_correct", "tilt_correct_dask"]


def tilt_scale(angle_deg: float) -> float:
    """Factor ``1 / sin(angle)`` by which image y is foreshortened (angle in degrees, (0, 90])."""
    if not 0 < angle_deg <= 90:
        raise ValueError(f"tilt angle must be in (0, 90] degrees; got {angle_deg}")
    return 1.0 / math.sin(math.radians(angle_deg))


def tilt_rows(ny: int, angle_deg: float) -> int:
    """Rows after resampling ``ny`` rows to true size: ``round(ny / sin(angle))``."""
    return max(1, int(round(ny * tilt_scale(angle_deg))))


def tilt_voxel_size(voxel_size_nm: Sequence[float], ny: int, angle_deg: float, *, resample: bool = True) -> list[float]:
    """Voxel size (z, y, x) in nm after tilt correction.

    The true y extent is ``ny * vy / sin(angle)``; resampled to
    :func:`tilt_rows` rows, each row is that extent over the new row count.
    Without resampling the y size alone becomes ``vy / sin(angle)``.
    """
    vz, vy, vx = (float(v) for v in voxel_size_nm)
    extent = ny * vy * tilt_scale(angle_deg)
    return [vz, extent / (tilt_rows(ny, angle_deg) if resample else ny), vx]


def tilt_correct(image: Any, angle_deg: float = 52.0) -> Any:
    """Stretch y of a (z, y, x) stack by ``1 / sin(angle)`` with linear interpolation.

    Parameters
    ----------
    image : ndarray (z, y, x)
        NumPy or CuPy array.
    angle_deg : float
        Angle between the electron beam and the milled face in degrees.

    Returns
    -------
    ndarray (z, tilt_rows(y), x)
        float32 (float64 stays float64). Row ``j`` samples the input at
        ``(j + 0.5) * y / y_new - 0.5`` (pixel centres kept aligned).
    """
    if getattr(image, "ndim", None) != 3:
        raise ValueError(f"expected a 3D (z, y, x) array; got shape {getattr(image, 'shape', None)}")
    xp = xp_of(image)
    ny = image.shape[1]
    new = tilt_rows(ny, angle_deg)
    i0, i1, w = _weights(ny, new)
    img = image if image.dtype in (np.float32, np.float64) else image.astype(np.float32)
    w = xp.asarray(w.astype(img.dtype))[None, :, None]
    return img[:, xp.asarray(i0), :] * (1 - w) + img[:, xp.asarray(i1), :] * w


def _weights(ny: int, new: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pos = (np.arange(new, dtype=np.float64) + 0.5) * (ny / new) - 0.5
    pos = np.clip(pos, 0.0, ny - 1.0)
    i0 = np.floor(pos).astype(np.int64)
    i1 = np.minimum(i0 + 1, ny - 1)
    return i0, i1, pos - i0


def tilt_correct_dask(arr: da.Array, angle_deg: float = 52.0) -> da.Array:
    """:func:`tilt_correct` on a dask stack; chunks span y whole (exact, z and x stay chunked)."""
    arr = arr.rechunk({1: -1})
    new = tilt_rows(arr.shape[1], angle_deg)
    dtype = arr.dtype if arr.dtype in (np.float32, np.float64) else np.dtype(np.float32)
    return arr.map_blocks(tilt_correct, angle_deg, dtype=dtype, chunks=(arr.chunks[0], (new,), arr.chunks[2]))
