"""Tiled prediction on one global grid, blended with gaussian weights (NumPy, no Dask).

Tiles sit at ``0, step, 2 step, ...`` along each axis of the *whole* volume,
plus a last tile that ends at the volume's end (``length - tile``); an axis
shorter than the tile gets one tile, the axis mirrored up to it. The grid is a
function of the volume's shape alone, so a block of the volume that holds
every tile touching its core (its core plus a halo of one tile) predicts
exactly what a prediction of the whole volume gives there: the result does not
depend on the chunking. Every voxel is the weighted mean of the tiles over
it, weights a gaussian of sigma ``sigma_scale x tile`` centred on the tile,
accumulated in the grid's order.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np

from pipeline.models.inputs import neighbour_indices, pad_to

__all__ = ["tile_starts", "gaussian_window", "tiles_touching", "predict_region", "accumulate_tiles", "Predict"]

#: ``(batch, channels, *tile) float32 -> (batch, outputs, *tile) float32``.
Predict = Callable[[np.ndarray], np.ndarray]


def tile_starts(length: int, tile: int, step: int) -> list[int]:
    """Start of every tile along an axis of ``length`` voxels (the global grid).

    ``0, step, 2 step, ...`` while a tile still ends inside the axis, then one
    tile ending at its end; ``[0]`` when the axis is not longer than the tile.
    """
    if tile < 1 or step < 1:
        raise ValueError(f"tile and step must be at least 1 voxel; got {tile}, {step}")
    if step > tile:
        raise ValueError(f"step {step} is larger than the tile {tile}: voxels between tiles would be skipped")
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, step))
    starts.append(length - tile)
    return starts


def gaussian_window(tile: Sequence[int], sigma_scale: float = 0.125, floor: float = 1e-3) -> np.ndarray:
    """Blending weights of one tile: a separable gaussian centred on the tile, max 1, at least ``floor``.

    Axes of one voxel (the z of a 2D model's tile) have weight 1.
    """
    w = np.ones((), dtype=np.float64)
    for t in tile:
        if t == 1:
            axis = np.ones(1)
        else:
            c = (t - 1) / 2.0
            sigma = max(sigma_scale * t, 1e-6)
            axis = np.exp(-0.5 * ((np.arange(t) - c) / sigma) ** 2)
        w = np.multiply.outer(w, axis)
    w = w / w.max()
    return np.maximum(w, floor).astype(np.float32)


def tiles_touching(global_shape: Sequence[int], tile: Sequence[int], step: Sequence[int],
                   region: Sequence[slice]) -> list[tuple[int, ...]]:
    """Starts of the grid's tiles that overlap ``region``, in the grid's order (C order over axes)."""
    per_axis = []
    for n, t, s, r in zip(global_shape, tile, step, region):
        per_axis.append([a for a in tile_starts(n, t, s) if a < r.stop and a + min(t, n) > r.start])
    return list(itertools.product(*per_axis))


def predict_region(
    block: np.ndarray,
    origin: Sequence[int],
    region: Sequence[slice],
    global_shape: Sequence[int],
    *,
    tile: Sequence[int],
    step: Sequence[int],
    predict: Predict,
    n_out: int = 1,
    batch_size: int = 4,
    sigma_scale: float = 0.125,
    neighbours: int = 1,
) -> np.ndarray:
    """Blend the grid's tiles over ``region`` of a volume from ``block``, a part of it with a halo.

    Parameters
    ----------
    block : ndarray (channels, *spatial)
        Input values of the voxels ``origin`` .. ``origin + block.shape[1:]``
        (global coordinates). It must hold every tile that touches ``region``
        (a halo of one tile around it does); along an axis shorter than its
        tile it must hold the whole axis.
    origin : sequence of int
        Global coordinate of ``block[:, 0, 0, ...]``.
    region : sequence of slice
        Global voxels to predict (the block's core).
    global_shape : sequence of int
        Spatial shape of the whole volume (decides the grid).
    tile, step : sequence of int
        Tile and grid step per spatial axis (``step <= tile``). An axis of
        tile 1 is not blended (a 2D model's z).
    predict : callable
        ``(batch, channels, *tile) -> (batch, n_out, *tile)`` probabilities.
    n_out : int
        Outputs per voxel (pore probability, and its spread under test-time flips).
    batch_size : int
        Tiles per call of ``predict``.
    sigma_scale : float
        Gaussian weight's sigma as a fraction of the tile.
    neighbours : int
        2.5D: a tile's channels are this many neighbouring slices along the
        first axis (z - k//2 .. z + k//2, mirrored at the volume's ends, see
        :func:`pipeline.models.inputs.neighbour_indices`) of a one-channel
        block; the tile's first axis must then be 1.

    Returns
    -------
    ndarray of float32, shape (n_out, *region shape)
    """
    spatial = block.ndim - 1
    if not (len(origin) == len(region) == len(global_shape) == len(tile) == len(step) == spatial):
        raise ValueError("origin, region, global_shape, tile and step need one value per spatial axis of the block")
    tile = [int(t) for t in tile]
    if neighbours > 1 and (block.shape[0] != 1 or tile[0] != 1):
        raise ValueError("2.5D neighbours need a one-channel block and tiles of one slice along the first axis")
    starts = tiles_touching(global_shape, tile, step, region)
    if not starts:
        raise ValueError("no tile touches the region")
    acc, wsum = accumulate_tiles(block, origin, region, global_shape, starts, tile=tile, predict=predict, n_out=n_out,
                                 batch_size=batch_size, sigma_scale=sigma_scale, neighbours=neighbours)
    acc /= wsum
    return acc


def accumulate_tiles(
    block: np.ndarray,
    origin: Sequence[int],
    region: Sequence[slice],
    global_shape: Sequence[int],
    starts: Sequence[tuple[int, ...]],
    *,
    tile: Sequence[int],
    predict: Predict,
    n_out: int = 1,
    batch_size: int = 4,
    sigma_scale: float = 0.125,
    neighbours: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """The weighted sum of the tiles at ``starts`` over ``region``, and the sum of their weights (not divided).

    :func:`predict_region` divides one by the other over the tiles that touch
    a block's core; the 3D refinement without recomputed tiles
    (:mod:`pipeline.segment.owned`) adds the sums of neighbouring blocks first.
    Parameters as in :func:`predict_region`; ``block`` must hold every tile at
    ``starts`` (an axis shorter than its tile: all of it).

    Returns
    -------
    acc : ndarray of float32, shape (n_out, *region shape)
    wsum : ndarray of float32, shape region shape
    """
    spatial = block.ndim - 1
    tile = [int(t) for t in tile]
    short = [ax for ax in range(spatial) if global_shape[ax] < tile[ax]]
    for ax in short:
        if origin[ax] != 0 or block.shape[ax + 1] != global_shape[ax]:
            raise ValueError(f"axis {ax} is shorter than the tile; the block must hold all of it")
    if short:
        block = pad_to(block, [tile[ax] for ax in short], [ax + 1 for ax in short])
    window = gaussian_window(tile, sigma_scale)
    rshape = tuple(r.stop - r.start for r in region)
    acc = np.zeros((n_out, *rshape), dtype=np.float32)
    wsum = np.zeros(rshape, dtype=np.float32)
    cuts: list[tuple[object, ...]] = []
    for a in starts:
        lo = [a[d] - origin[d] for d in range(spatial)]
        if min(lo) < 0 or any(lo[d] + tile[d] > block.shape[d + 1] for d in range(spatial)):
            raise ValueError(f"tile at {a} reaches outside the block ({origin}, shape {block.shape[1:]}); the halo is too small")
        cut: tuple[object, ...] = tuple(slice(lo[d], lo[d] + tile[d]) for d in range(spatial))
        if neighbours > 1:
            z = [i - origin[0] for i in neighbour_indices(a[0], neighbours, int(global_shape[0]))]
            if min(z) < 0 or max(z) >= block.shape[1]:
                raise ValueError(f"the neighbours of slice {a[0]} reach outside the block; the z halo is too small")
            cut = (0, z, *cut[1:])  # (k, *tile[1:]): the slices become channels
        cuts.append(cut)

    def accumulate(batch_starts: list[tuple[int, ...]], probs: np.ndarray) -> None:
        for a, p in zip(batch_starts, probs):
            src, dst = [], []
            for d in range(spatial):
                g0 = max(a[d], region[d].start)
                g1 = min(a[d] + tile[d], region[d].stop, global_shape[d])
                src.append(slice(g0 - a[d], g1 - a[d]))
                dst.append(slice(g0 - region[d].start, g1 - region[d].start))
            w = window[tuple(src)]
            acc[(slice(None), *dst)] += p[(slice(None), *src)] * w
            wsum[tuple(dst)] += w

    for i in range(0, len(starts), batch_size):
        if neighbours > 1:
            batch = np.stack([block[c][:, None] for c in cuts[i : i + batch_size]])
        else:
            batch = np.stack([block[(slice(None), *c)] for c in cuts[i : i + batch_size]])
        probs = np.asarray(predict(np.ascontiguousarray(batch, dtype=np.float32)), dtype=np.float32)
        if probs.shape != (len(batch), n_out, *tile):
            raise ValueError(f"predict returned shape {probs.shape}; expected {(len(batch), n_out, *tile)}")
        accumulate(list(starts[i : i + batch_size]), probs)
    return acc, wsum
