"""Pore connectivity per axis and geometric tortuosity (in memory).

Both need the connected components of the whole pore space, so they work on
a volume in memory (about 5 bytes per voxel for connectivity, 17 for
tortuosity); :func:`pipeline.analyze.measure.measure` skips them above a
voxel budget and says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["connectivity", "geometric_tortuosity"]

_AXES = ("z", "y", "x")


def connectivity(pore: np.ndarray) -> dict[str, Any]:
    """Share of the pore volume in components that touch both opposite faces, per axis.

    Components are 6-connected. Also returns the share of the pore volume
    in the largest component and the number of components.

    Returns
    -------
    dict
        ``connected_fraction`` {"z", "y", "x"} (0..1 of the pore volume),
        ``largest_component_fraction``, ``components``.
    """
    import scipy.ndimage as ndi

    p = np.asarray(pore, dtype=bool)
    total = int(p.sum())
    if total == 0:
        return {"connected_fraction": {a: 0.0 for a in _AXES}, "largest_component_fraction": 0.0, "components": 0}
    lab, n = ndi.label(p)
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    out: dict[str, float] = {}
    for ax, name in enumerate(_AXES):
        lo = np.unique(np.take(lab, 0, axis=ax))
        hi = np.unique(np.take(lab, p.shape[ax] - 1, axis=ax))
        both = np.intersect1d(lo[lo > 0], hi[hi > 0])
        out[name] = float(sizes[both].sum() / total)
    return {
        "connected_fraction": out,
        "largest_component_fraction": float(sizes[1:].max() / total),
        "components": int(n),
    }


def geometric_tortuosity(pore: np.ndarray, voxel_size_nm: Sequence[float], axis: int = 0) -> float:
    """Mean geodesic path length through the pores from one face to the other, over the straight length.

    The geodesic distance (fast marching with ``skimage.graph.MCP_Geometric``,
    26-connected steps weighted by their length in nm) is taken from every
    pore voxel of the first face; the tortuosity is its mean over the pore
    voxels of the last face that it reaches, divided by the distance between
    the faces. ``nan`` when no pore path crosses.
    """
    from skimage.graph import MCP_Geometric

    p = np.asarray(pore, dtype=bool)
    vs = np.asarray(voxel_size_nm, dtype=np.float64)
    costs = np.where(p, 1.0, np.inf)
    starts = np.argwhere(np.take(p, 0, axis=axis))
    if len(starts) == 0:
        return float("nan")
    starts = np.insert(starts, axis, 0, axis=1)
    mcp = MCP_Geometric(costs, sampling=tuple(vs))
    dist, _ = mcp.find_costs([tuple(s) for s in starts])
    last = np.take(dist, p.shape[axis] - 1, axis=axis)
    ok = np.isfinite(last) & np.take(p, p.shape[axis] - 1, axis=axis)
    if not ok.any():
        return float("nan")
    length = (p.shape[axis] - 1) * vs[axis]
    return float(last[ok].mean() / length) if length > 0 else float("nan")
