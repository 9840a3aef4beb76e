"""How a network's input is cut from a volume: 2.5D neighbour slices and mirrored edges.

Training (:mod:`pipeline.train.data`) and inference (:mod:`pipeline.segment`)
build inputs with these functions alone, so that a model sees at inference
exactly what it saw in training, also at the first and last slices.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["reflect_index", "neighbour_indices", "effective_tile", "pad_to"]


def reflect_index(i: int | np.ndarray, n: int) -> int | np.ndarray:
    """Index ``i`` mirrored into ``[0, n)`` without repeating the edge (NumPy's ``reflect``): -1 -> 1, n -> n - 2.

    An axis of one voxel maps every index to 0.
    """
    if n < 1:
        raise ValueError(f"an axis needs at least one voxel; got {n}")
    if n == 1:
        return np.zeros_like(i) if isinstance(i, np.ndarray) else 0
    period = 2 * (n - 1)
    j = np.mod(i, period)
    return np.where(j < n, j, period - j) if isinstance(j, np.ndarray) else int(j if j < n else period - j)


def neighbour_indices(z: int, k: int, n: int) -> list[int]:
    """The ``k`` slices (odd ``k``) a 2.5D model reads to predict slice ``z`` of ``n``: z - k//2 .. z + k//2, mirrored at the ends."""
    if k < 1 or k % 2 == 0:
        raise ValueError(f"k must be a positive odd number of slices; got {k}")
    h = k // 2
    return [int(reflect_index(z + j, n)) for j in range(-h, h + 1)]


def effective_tile(length: int, tile: int, divisor: int) -> int:
    """Tile along an axis of ``length`` voxels: ``tile``, or the axis rounded up to ``divisor`` when shorter.

    A function of the global length alone, so every chunk of a volume uses the same one.
    """
    if length >= tile:
        return int(tile)
    return int(min(tile, -(-length // divisor) * divisor))


def pad_to(arr: np.ndarray, shape: Sequence[int], axes: Sequence[int]) -> np.ndarray:
    """``arr`` mirrored (``reflect``) at the end of each of ``axes`` up to ``shape`` along them; a view-free copy only when padding."""
    pads = [(0, 0)] * arr.ndim
    for ax, s in zip(axes, shape):
        extra = int(s) - arr.shape[ax]
        if extra < 0:
            raise ValueError(f"axis {ax} has {arr.shape[ax]} voxels, more than {s}")
        pads[ax] = (0, extra)
    if all(p == (0, 0) for p in pads):
        return arr
    mode = "reflect" if all(arr.shape[ax] > 1 for ax, (_, e) in enumerate(pads) if e) else "edge"
    return np.pad(arr, pads, mode=mode)
