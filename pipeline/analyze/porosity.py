"""Porosity of a label volume (1 = pore): global, per slice, per block — lazily over dask."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dask.array as da
import numpy as np

__all__ = ["porosity_stats"]


def porosity_stats(labels: Any, *, block_shape: Sequence[int] = (64, 64, 64), phase: int = 1) -> dict[str, Any]:
    """Porosity of ``labels`` as the fraction of voxels equal to ``phase``.

    Parameters
    ----------
    labels : array (z, y, x)
        NumPy or dask (never loaded whole); uint8, 1 = pore.
    block_shape : (int, int, int)
        Block of the porosity map.
    phase : int
        Label counted as pore.

    Returns
    -------
    dict
        ``porosity`` (float), ``per_slice`` (list, one value per z slice),
        ``per_block`` (nested list, shape = number of blocks per axis),
        ``block_shape``, ``per_block_std`` (spread of the map).
    """
    arr = da.asarray(labels)
    if arr.ndim != 3:
        raise ValueError(f"labels must be 3D (z, y, x); got shape {arr.shape}")
    pore = (arr == phase).astype(np.float64)
    block = tuple(min(int(b), int(n)) for b, n in zip(block_shape, arr.shape))
    pb = pore.rechunk(block)
    per_block = pb.map_blocks(lambda b: np.array(b.mean(), ndmin=3), chunks=(1, 1, 1), dtype=np.float64)
    total, per_slice, blocks = da.compute(pore.mean(), pore.mean(axis=(1, 2)), per_block)
    return {
        "porosity": float(total),
        "per_slice": [float(v) for v in per_slice],
        "per_block": np.asarray(blocks).tolist(),
        "block_shape": list(block),
        "per_block_std": float(np.std(blocks)),
    }
