"""Porosity of a label volume (1 = pore): global, per slice, per block — one pass over dask blocks.

Every task counts the pore voxels of one block of whole chunks (16 Mvoxel) of
the volume, per slice and per map block, in integers; nothing bigger than a
block is ever held (no float copy, no rechunk that splits chunks), so the
memory does not grow with the volume.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import dask
import dask.array as da
import numpy as np

from pipeline.engine.blocks import grouped_blocks
from pipeline.progress import compute

__all__ = ["porosity_stats"]


def _chunk_counts(chunk: np.ndarray, origin: tuple[int, int, int], block: tuple[int, int, int],
                  phase: int) -> tuple[np.ndarray, tuple[int, ...], np.ndarray]:
    """Pore counts of one chunk: per slice, and per map block it touches (with the first block's index)."""
    pore = np.asarray(chunk) == phase
    per_slice = pore.sum(axis=(1, 2), dtype=np.int64)
    first = tuple(o // b for o, b in zip(origin, block))
    last = tuple((o + n - 1) // b for o, n, b in zip(origin, pore.shape, block))
    counts = np.zeros([hi - lo + 1 for lo, hi in zip(first, last)], np.int64)
    for idx in itertools.product(*(range(lo, hi + 1) for lo, hi in zip(first, last))):
        region = tuple(slice(max(i * b - o, 0), min((i + 1) * b - o, n))
                       for i, b, o, n in zip(idx, block, origin, pore.shape))
        counts[tuple(i - lo for i, lo in zip(idx, first))] = int(np.count_nonzero(pore[region]))
    return per_slice, first, counts


def porosity_stats(labels: Any, *, block_shape: Sequence[int] = (64, 64, 64), phase: int = 1,
                   progress: str | None = None) -> dict[str, Any]:
    """Porosity of ``labels`` as the fraction of voxels equal to ``phase``.

    Parameters
    ----------
    labels : array (z, y, x)
        NumPy or dask (read chunk by chunk, never loaded whole); uint8, 1 = pore.
    block_shape : (int, int, int)
        Block of the porosity map (voxels); the blocks at the far faces are
        smaller where the volume does not divide evenly.
    phase : int
        Label counted as pore.
    progress : str, optional
        Label of a progress bar over the chunks.

    Returns
    -------
    dict
        ``porosity`` (float), ``per_slice`` (list, one value per z slice),
        ``per_block`` (nested list, shape = number of blocks per axis),
        ``block_shape``, ``per_block_std`` (spread of the map).
    """
    arr = labels if isinstance(labels, da.Array) else da.asarray(labels)
    if arr.ndim != 3:
        raise ValueError(f"labels must be 3D (z, y, x); got shape {arr.shape}")
    if any(int(b) < 1 for b in block_shape) or len(block_shape) != 3:
        raise ValueError(f"block_shape must be three positive sizes (voxels); got {tuple(block_shape)}")
    shape = tuple(int(n) for n in arr.shape)
    block = tuple(min(int(b), n) for b, n in zip(block_shape, shape))
    arr = grouped_blocks(arr)  # small store chunks grouped: a task per 16 Mvoxel, not per chunk
    starts = [np.concatenate([[0], np.cumsum(c)[:-1]]).astype(int) for c in arr.chunks]
    tasks = [dask.delayed(_chunk_counts, pure=True)(chunk, tuple(int(starts[a][i]) for a, i in enumerate(idx)), block, phase)
             for idx, chunk in zip(np.ndindex(*arr.numblocks), arr.to_delayed(optimize_graph=True).ravel())]
    per_slice = np.zeros(shape[0], np.int64)
    n_blocks = tuple(-(-n // b) for n, b in zip(shape, block))
    pores = np.zeros(n_blocks, np.int64)
    for (z_counts, first, counts), idx in zip(compute(*tasks, desc=progress), np.ndindex(*arr.numblocks)):
        z0 = int(starts[0][idx[0]])
        per_slice[z0 : z0 + len(z_counts)] += z_counts
        pores[tuple(slice(f, f + n) for f, n in zip(first, counts.shape))] += counts
    sizes = [np.minimum(block[a], shape[a] - block[a] * np.arange(n_blocks[a])) for a in range(3)]
    per_block = pores / (sizes[0][:, None, None] * sizes[1][None, :, None] * sizes[2][None, None, :])
    return {
        "porosity": float(per_slice.sum() / np.prod(shape, dtype=np.float64)),
        "per_slice": (per_slice / float(shape[1] * shape[2])).tolist(),
        "per_block": per_block.tolist(),
        "block_shape": list(block),
        "per_block_std": float(np.std(per_block)),
    }
