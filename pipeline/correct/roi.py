"""Region of interest: the largest box with data on every slice after alignment, or a given box."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["valid_box", "check_box"]


def valid_box(shape_yx: Sequence[int], shifts: np.ndarray) -> tuple[tuple[int, int], tuple[int, int]]:
    """Rows and columns ``((y0, y1), (x0, x1))`` filled on every slice after shifting.

    Slice ``z`` moved by ``shifts[z] = [sy, sx]`` (``out[y] = in[y - sy]``,
    linear interpolation) holds data where ``0 <= y - sy <= ny - 1``.

    Raises
    ------
    ValueError
        If the shifts leave no common region.
    """
    ny, nx = (int(v) for v in shape_yx)
    s = np.round(np.asarray(shifts, dtype=np.float64).reshape(-1, 2), 6)
    if len(s) == 0:
        return (0, ny), (0, nx)
    y0 = max(0, int(math.ceil(s[:, 0].max())))
    y1 = min(ny, int(math.floor(ny - 1 + s[:, 0].min())) + 1)
    x0 = max(0, int(math.ceil(s[:, 1].max())))
    x1 = min(nx, int(math.floor(nx - 1 + s[:, 1].min())) + 1)
    if y1 <= y0 or x1 <= x0:
        raise ValueError(f"the drift ({np.abs(s).max():.1f} px) leaves no region common to all slices")
    return (y0, y1), (x0, x1)


def check_box(box: Sequence[Sequence[int]], shape: Sequence[int]) -> tuple[tuple[int, int], ...]:
    """Validate an explicit box ``[[z0, z1], [y0, y1], [x0, x1]]`` (half-open, voxels) against ``shape``."""
    if len(box) != 3 or any(len(b) != 2 for b in box):
        raise ValueError(f"ROI box {box} is not [[z0, z1], [y0, y1], [x0, x1]]")
    out = []
    for (a, b), n, name in zip(box, shape, "zyx"):
        a, b = int(a), int(b)
        if not 0 <= a < b <= n:
            raise ValueError(f"ROI {name} range [{a}, {b}) does not fit in 0..{n}")
        out.append((a, b))
    return tuple(out)
