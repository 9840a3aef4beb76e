"""Intensity normalisation to float32 in [0, 1] from robust percentiles of the whole volume.

Percentiles come from a histogram summed over all chunks (exact one-unit bins
for 8/16-bit integers; 65536 bins between the global min and max for floats),
so the volume is read block by block and never held in memory. Optional
per-slice histogram matching maps each slice's intensity distribution onto
the volume's.
"""

from __future__ import annotations

from typing import Any

import dask.array as da
import numpy as np

from pipeline.backend import to_numpy, xp_of

__all__ = [
    "histogram",
    "percentiles_from_histogram",
    "robust_range",
    "normalize",
    "normalize_dask",
    "slice_histograms",
    "matching_tables",
    "apply_matching",
    "match_slices_dask",
]

FLOAT_BINS = 65536


def _is_small_int(dtype: np.dtype) -> bool:
    return np.dtype(dtype).kind in "ub" and np.dtype(dtype).itemsize <= 2


def histogram(arr: Any, *, bins: int = FLOAT_BINS) -> tuple[np.ndarray, np.ndarray]:
    """Histogram of a NumPy, CuPy or dask array without loading it whole.

    Returns
    -------
    counts : ndarray of int64
    edges : ndarray of float64
        ``len(counts) + 1`` bin edges. For uint8/uint16/bool data the bins are
        one grey level wide (edges at v - 0.5); for other data ``bins``
        equal bins from the global min to the global max.
    """
    dtype = np.dtype(arr.dtype)
    if _is_small_int(dtype):
        nlev = 2 if dtype == bool else 1 << (8 * dtype.itemsize)

        def count(block: Any) -> np.ndarray:
            xp = xp_of(block)
            c = xp.bincount(block.ravel().astype(xp.int64 if dtype != bool else xp.uint8), minlength=nlev)
            return to_numpy(c)[None, :nlev].astype(np.int64)

        counts = _reduce_blocks(arr, count)
        return counts, np.arange(nlev + 1, dtype=np.float64) - 0.5
    if isinstance(arr, da.Array):
        lo, hi = (float(v) for v in da.compute(arr.min(), arr.max()))
    else:
        lo, hi = float(to_numpy(arr.min())), float(to_numpy(arr.max()))
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError("histogram: the volume holds NaN or infinite values")
    if hi <= lo:
        hi = lo + 1.0
    edges = np.linspace(lo, hi, bins + 1)

    def count_float(block: Any) -> np.ndarray:
        xp = xp_of(block)
        b = block.ravel().astype(xp.float64)
        idx = xp.clip(((b - lo) * (bins / (hi - lo))).astype(xp.int64), 0, bins - 1)
        return to_numpy(xp.bincount(idx, minlength=bins))[None, :bins].astype(np.int64)

    return _reduce_blocks(arr, count_float), edges


def _reduce_blocks(arr: Any, fn: Any) -> np.ndarray:
    if not isinstance(arr, da.Array):
        return fn(arr)[0]
    # one row of counts per block, summed in a tree
    nbins = fn(np.zeros((1, 1, 1), dtype=arr.dtype)).shape[1]
    per = arr.map_blocks(
        lambda b: fn(b).reshape(1, 1, 1, -1),
        dtype=np.int64,
        new_axis=3,
        chunks=tuple((1,) * len(c) for c in arr.chunks) + ((nbins,),),
    )
    return np.asarray(per.sum(axis=(0, 1, 2)).compute())


def percentiles_from_histogram(counts: np.ndarray, edges: np.ndarray, q: Any) -> np.ndarray:
    """Percentiles ``q`` (0-100) from histogram counts, interpolated linearly inside bins.

    For one-unit integer bins the result is the grey level itself (bin
    centre), matching ``numpy.percentile(..., method="inverted_cdf")``.
    """
    q = np.atleast_1d(np.asarray(q, dtype=np.float64))
    if np.any((q < 0) | (q > 100)):
        raise ValueError(f"percentiles must lie in [0, 100]; got {q.tolist()}")
    total = counts.sum()
    if total == 0:
        raise ValueError("percentiles of an empty histogram")
    cdf = np.cumsum(counts, dtype=np.float64)
    target = q / 100.0 * total
    idx = np.clip(np.searchsorted(cdf, target, side="left"), 0, len(counts) - 1)
    integer_bins = np.allclose(np.diff(edges), 1.0) and edges[0] == -0.5
    if integer_bins:
        return (edges[idx] + 0.5).astype(np.float64)
    before = np.where(idx > 0, cdf[idx - 1], 0.0)
    inside = np.where(counts[idx] > 0, (target - before) / np.maximum(counts[idx], 1), 0.5)
    return edges[idx] + np.clip(inside, 0.0, 1.0) * (edges[idx + 1] - edges[idx])


def robust_range(arr: Any, low: float = 0.5, high: float = 99.5) -> tuple[float, float]:
    """The ``low`` and ``high`` percentiles of all voxels (out-of-core for dask arrays).

    Parameters
    ----------
    arr : array (z, y, x)
        NumPy, CuPy or dask array.
    low, high : float
        Percentiles in [0, 100], ``low < high``.
    """
    if not 0 <= low < high <= 100:
        raise ValueError(f"expected 0 <= low < high <= 100; got low={low}, high={high}")
    counts, edges = histogram(arr)
    lo, hi = percentiles_from_histogram(counts, edges, [low, high])
    return float(lo), float(hi)


def normalize(image: Any, lo: float, hi: float, *, clip: bool = True) -> Any:
    """Map ``[lo, hi]`` linearly to ``[0, 1]`` as float32 (clipped unless ``clip=False``)."""
    xp = xp_of(image)
    scale = 1.0 / (hi - lo) if hi > lo else 1.0
    out = (image.astype(xp.float32) - xp.float32(lo)) * xp.float32(scale)
    return xp.clip(out, 0.0, 1.0) if clip else out


def normalize_dask(arr: da.Array, low: float = 0.5, high: float = 99.5, *, clip: bool = True) -> tuple[da.Array, tuple[float, float]]:
    """Normalise a dask volume with its own robust percentiles; returns (lazy result, (lo, hi))."""
    lo, hi = robust_range(arr, low, high)
    return arr.map_blocks(normalize, lo, hi, clip=clip, dtype=np.float32), (lo, hi)


def slice_histograms(arr: Any, bins: int = 1024) -> np.ndarray:
    """Per-slice histograms (z, bins) of data in [0, 1] (values outside are clipped into the end bins)."""

    def per_slice(block: Any) -> np.ndarray:
        xp = xp_of(block)
        idx = xp.clip((block.astype(xp.float32) * bins).astype(xp.int64), 0, bins - 1)
        z = block.shape[0]
        offs = (xp.arange(z, dtype=xp.int64) * bins)[:, None, None]
        c = xp.bincount((idx + offs).ravel(), minlength=z * bins).reshape(z, bins)
        return to_numpy(c).astype(np.int64)

    if not isinstance(arr, da.Array):
        return per_slice(arr)
    per = arr.map_blocks(
        lambda b: per_slice(b)[:, None, None, :],
        dtype=np.int64,
        new_axis=3,
        chunks=(arr.chunks[0], (1,) * len(arr.chunks[1]), (1,) * len(arr.chunks[2]), (bins,)),
    )
    return np.asarray(per.sum(axis=(1, 2)).compute())


def matching_tables(hists: np.ndarray) -> np.ndarray:
    """Lookup tables (z, bins + 1) mapping each slice's distribution onto the volume's.

    Entry ``[k, j]`` is where the intensity ``j / bins`` of slice ``k`` goes:
    the volume quantile at that value's rank within the slice.
    """
    hists = np.asarray(hists, dtype=np.float64)
    z, bins = hists.shape
    edges = np.linspace(0.0, 1.0, bins + 1)
    vol = hists.sum(axis=0)
    vcdf = np.concatenate([[0.0], np.cumsum(vol)]) / max(vol.sum(), 1.0)
    tables = np.empty((z, bins + 1), dtype=np.float64)
    for k in range(z):
        scdf = np.concatenate([[0.0], np.cumsum(hists[k])]) / max(hists[k].sum(), 1.0)
        # inverse of the volume CDF (piecewise linear), made strictly increasing
        v, idx = np.unique(vcdf, return_index=True)
        tables[k] = np.interp(scdf, v, edges[idx])
    return tables


def apply_matching(block: Any, tables: np.ndarray, z0: int = 0) -> Any:
    """Apply :func:`matching_tables` rows ``z0..`` to the slices of ``block`` (float32, [0, 1])."""
    xp = xp_of(block)
    bins = tables.shape[1] - 1
    out = xp.empty(block.shape, dtype=xp.float32)
    grid = xp.linspace(0.0, 1.0, bins + 1)
    for k in range(block.shape[0]):
        out[k] = xp.interp(block[k].astype(xp.float64).ravel(), grid, xp.asarray(tables[z0 + k])).reshape(block.shape[1:])
    return out


def match_slices_dask(arr: da.Array, bins: int = 1024) -> tuple[da.Array, np.ndarray]:
    """Per-slice histogram matching of a [0, 1] volume to its own overall histogram."""
    tables = matching_tables(slice_histograms(arr, bins))

    def fn(block: Any, block_info: Any = None) -> Any:
        z0 = block_info[0]["array-location"][0][0] if block_info else 0
        return apply_matching(block, tables, z0)

    return arr.map_blocks(fn, dtype=np.float32), tables
