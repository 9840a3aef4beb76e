"""Intensity normalisation to float32 in [0, 1] from robust percentiles of the whole volume.

Percentiles come from a histogram summed over all chunks, so the volume is
read block by block and never held in memory:

* 8/16-bit integers: exact one-unit bins; the percentile is a grey level
  (``numpy.percentile(..., method="inverted_cdf")``);
* floats: :data:`FLOAT_BINS` equal bins over a value range, then a second
  look at every block for the few values near each percentile, which gives
  exactly ``numpy.percentile(..., method="linear")``
  (:func:`two_stage_percentiles`).

The float value range is either the data's own min and max (one extra pass)
or a range known in advance to hold every value, such as the input's range
for a filter whose output stays inside it
(:func:`pipeline.preprocess.denoise.output_range`); then no pass is spent on
it. :func:`normalize_in_memory` keeps the (filtered) volume on the workers,
counting each block as it is made, so the filter runs once; out-of-core,
the statistics take one pass each (or, written through a store, see
:mod:`pipeline.engine.two_pass`). Optional per-slice histogram matching maps
each slice's intensity distribution onto the volume's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import dask
import dask.array as da
import numpy as np
from dask.delayed import Delayed

from pipeline.backend import to_numpy, xp_of

__all__ = [
    "FLOAT_BINS",
    "HistogramSpec",
    "has_integer_bins",
    "histogram_spec",
    "histogram",
    "histogram_dask",
    "collect_of",
    "RefineSpec",
    "refine_spec",
    "refined_percentiles",
    "two_stage_percentiles",
    "value_range_of",
    "lazy_value_range",
    "refined_percentiles_lazy",
    "normalize_in_memory",
    "lazy_spec",
    "normalize_lazy",
    "spec_bins",
    "percentiles_from_histogram",
    "robust_range",
    "normalize",
    "normalize_dask",
    "slice_histograms",
    "matching_tables",
    "apply_matching",
    "match_slices_dask",
]

#: Float bins of a coarse histogram: their counts (64 KiB) stay below the size where
#: allocators map fresh pages, so counting in tiles allocates no large temporaries.
FLOAT_BINS = 8192


def has_integer_bins(dtype: Any) -> bool:
    """True for uint8, uint16 and bool: histograms with one exact bin per grey level, no value range needed."""
    return np.dtype(dtype).kind in "ub" and np.dtype(dtype).itemsize <= 2


@dataclass(frozen=True)
class HistogramSpec:
    """Bins of a volume histogram, fixed before any block is counted.

    Attributes
    ----------
    lo, hi : float
        Value range covered, in the data's units. For integer bins ``lo`` is
        0 and ``hi`` the top grey level; for float bins every value must lie
        in ``[lo, hi]`` (``hi`` falls in the last bin).
    bins : int
        Number of bins.
    integer : bool
        True: one bin per grey level ``0..bins-1`` (edges at ``v - 0.5``),
        counted exactly with ``bincount``; False: ``bins`` equal bins.
    """

    lo: float
    hi: float
    bins: int
    integer: bool

    def edges(self) -> np.ndarray:
        """The ``bins + 1`` bin edges (float64)."""
        if self.integer:
            return np.arange(self.bins + 1, dtype=np.float64) - 0.5
        return np.linspace(self.lo, self.hi, self.bins + 1)

    def count(self, block: Any) -> np.ndarray:
        """Counts (int64, length ``bins``, NumPy) of one NumPy or CuPy block.

        Float bins: ``floor((v - lo) * bins / (hi - lo))`` in the block's
        float precision (float32 for float32 blocks), clipped to the last
        bin. The block is read in tiles of about :data:`TILE_VOXELS` into two
        small buffers, so no temporary as large as the block is made (on
        Dask workers, which return freed memory to the system at once, every
        fresh large array costs its page faults again).

        Raises
        ------
        ValueError
            When a value lies outside ``[lo, hi]`` (beyond float rounding:
            1e-6 of the range) or is NaN (float bins), or outside
            ``0..bins-1`` (integer bins).
        """
        xp = xp_of(block)
        if block.size == 0:
            return np.zeros(self.bins, dtype=np.int64)
        if self.integer:
            return self._count_integer(block)
        ftype = block.dtype.type if block.dtype in (np.float32, np.float64) else xp.float64
        scale, top = ftype(self.bins / (self.hi - self.lo)), ftype(self.bins - 1)
        counts = xp.zeros(self.bins, dtype=xp.int64)
        tiles = list(_tiles(block, TILE_VOXELS))
        t_buf = xp.empty((tiles[0].stop - tiles[0].start,) + block.shape[1:], dtype=ftype)
        i_buf = xp.empty(t_buf.shape, dtype=xp.intp)
        for tile in tiles:
            n = tile.stop - tile.start
            t, idx = t_buf[:n], i_buf[:n]
            xp.subtract(block[tile], ftype(self.lo), out=t, dtype=ftype)
            t *= scale
            tmin, tmax = float(t.min()), float(t.max())
            if not (tmin >= 0.0 and tmax <= self.bins * (1 + 1e-6)):
                raise ValueError(
                    f"histogram: block values [{self.lo + tmin / scale:.6g}, {self.lo + tmax / scale:.6g}] fall outside "
                    f"the bins' range [{self.lo:.6g}, {self.hi:.6g}] (or are NaN)"
                )
            xp.minimum(t, top, out=t)  # v == hi, and rounding up to the top edge
            idx[...] = t  # t >= 0, so truncation is floor
            counts += xp.bincount(idx.ravel(), minlength=self.bins)[: self.bins]
        return to_numpy(counts).astype(np.int64)

    def _count_integer(self, block: Any) -> np.ndarray:
        xp = xp_of(block)
        vmin, vmax = float(block.min()), float(block.max())
        if not (0 <= vmin and vmax <= self.bins - 1):
            raise ValueError(f"histogram: block values [{vmin:.6g}, {vmax:.6g}] fall outside the grey levels 0..{self.bins - 1}")
        idx = block.ravel().astype(xp.uint8 if block.dtype == bool else xp.intp)
        return to_numpy(xp.bincount(idx, minlength=self.bins)[: self.bins]).astype(np.int64)


#: Voxels per tile when a block is counted piecewise (see :meth:`HistogramSpec.count`).
TILE_VOXELS = 1 << 18


def _tiles(block: Any, voxels: int) -> Iterator[slice]:
    """Slices along axis 0 of about ``voxels`` voxels each (at least one index)."""
    n0 = block.shape[0] if block.ndim else 1
    step = max(1, voxels // max(1, int(np.prod(block.shape[1:]))))
    for start in range(0, n0, step):
        yield slice(start, min(start + step, n0))


def spec_bins(dtype: Any, bins: int = FLOAT_BINS) -> int:
    """Number of bins :func:`histogram_spec` gives data of ``dtype``."""
    dtype = np.dtype(dtype)
    if has_integer_bins(dtype):
        return 2 if dtype == bool else 1 << (8 * dtype.itemsize)
    return int(bins)


def histogram_spec(dtype: Any, value_range: tuple[float, float] | None = None, *, bins: int = FLOAT_BINS) -> HistogramSpec:
    """Bins for data of ``dtype``.

    Parameters
    ----------
    dtype : dtype
        uint8, uint16 and bool data get exact one-unit bins (``value_range``
        and ``bins`` are ignored); other data ``bins`` equal float bins.
    value_range : (float, float), optional
        ``(lo, hi)`` holding every value, in the data's units; required for
        float bins. ``hi <= lo`` (constant data) becomes ``hi = lo + 1``.
    bins : int
        Number of float bins.
    """
    dtype = np.dtype(dtype)
    if has_integer_bins(dtype):
        nlev = spec_bins(dtype)
        return HistogramSpec(0.0, float(nlev - 1), nlev, True)
    if value_range is None:
        raise ValueError(f"histogram of {dtype} data needs a value range (lo, hi)")
    lo, hi = (float(v) for v in value_range)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError("histogram: the volume holds NaN or infinite values")
    return HistogramSpec(lo, hi if hi > lo else lo + 1.0, int(bins), False)


def value_range_of(arr: Any) -> tuple[float, float]:
    """``(min, max)`` of a NumPy, CuPy or dask array as floats (one pass for dask)."""
    if isinstance(arr, da.Array):
        lo, hi = da.compute(arr.min(), arr.max())
    else:
        lo, hi = to_numpy(arr.min()), to_numpy(arr.max())
    return float(lo), float(hi)


def histogram_dask(arr: da.Array, spec: Any) -> da.Array:
    """Lazy counts of ``arr`` with bins ``spec``: one row per block (:meth:`HistogramSpec.count`), summed in a tree.

    ``spec`` is a :class:`HistogramSpec` or a ``Delayed`` one. Computed
    together with ``arr`` (``dask.persist(arr, counts)``), each block is
    counted soon after it is made, without evaluating ``arr`` twice.
    """
    nbins = spec.bins if isinstance(spec, HistogramSpec) else spec_bins(arr.dtype)
    return arr.map_blocks(
        _count_row,
        spec,
        dtype=np.int64,
        new_axis=3,
        chunks=tuple((1,) * len(c) for c in arr.chunks) + ((nbins,),),
        meta=np.empty((0, 0, 0, 0), dtype=np.int64),
    ).sum(axis=(0, 1, 2))


def collect_of(arr: Any) -> Collect:
    """A ``collect(fn)`` for :func:`two_stage_percentiles`: ``fn`` of every block of ``arr``, now.

    One pass over a dask array (re-evaluating its graph unless it is
    persisted); one call on a NumPy or CuPy array.
    """

    def collect(fn: Callable[[Any], Any]) -> list[Any]:
        if isinstance(arr, da.Array):
            return list(dask.compute(*[dask.delayed(fn)(b) for b in arr.to_delayed().ravel()]))
        return [fn(arr)]

    return collect


def histogram(
    arr: Any, *, bins: int = FLOAT_BINS, value_range: tuple[float, float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Histogram of a NumPy, CuPy or dask array without loading it whole.

    Parameters
    ----------
    arr : array
        NumPy, CuPy or dask array.
    bins : int
        Number of float bins.
    value_range : (float, float), optional
        For float data: a range known to hold every value (no min/max pass).
        Default: the data's own min and max (one extra pass for dask).

    Returns
    -------
    counts : ndarray of int64
    edges : ndarray of float64
        ``len(counts) + 1`` bin edges. For uint8/uint16/bool data the bins are
        one grey level wide (edges at v - 0.5); for other data ``bins``
        equal bins over the value range.
    """
    if not has_integer_bins(arr.dtype) and value_range is None:
        value_range = value_range_of(arr)
    spec = histogram_spec(arr.dtype, value_range, bins=bins)
    if isinstance(arr, da.Array):
        counts = np.asarray(histogram_dask(arr, spec).compute())
    else:
        counts = spec.count(arr)
    return counts, spec.edges()


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


#: ``collect(fn)``: ``fn(block)`` of every block of a volume, as a list (results must be small).
Collect = Callable[[Callable[[Any], Any]], list[Any]]

#: Most values one block hands back per percentile interval; beyond, a histogram of FINE_BINS bins.
REFINE_CAP = 1 << 16
FINE_BINS = 1 << 16


@dataclass(frozen=True)
class RefineSpec:
    """Value intervals holding the order statistics that percentiles need, found from a coarse histogram.

    A block is summarised per interval ``[a, b)`` as ``(below, values,
    counts)``: the number of its values below ``a``, and the distinct values
    inside (float64, sorted) with their counts; or, when more than
    :data:`REFINE_CAP` values lie inside, ``values=None`` and ``counts`` a
    histogram of :data:`FINE_BINS` equal bins over the interval. Values are
    compared in their own float type with ``a`` and ``b``, which are
    representable in it, so the summaries are exact. The block is read in
    tiles of :data:`TILE_VOXELS` through three reused masks.

    Attributes
    ----------
    intervals : tuple of (float, float)
        ``[a, b)`` per percentile, in the data's units.
    positions : tuple of float
        0-based position of each percentile among the sorted values,
        ``q / 100 * (n - 1)`` (numpy's ``linear`` method).
    """

    intervals: tuple[tuple[float, float], ...]
    positions: tuple[float, ...]

    def count(self, block: Any) -> list[tuple[int, np.ndarray | None, np.ndarray]]:
        """Per interval: ``(below, values or None, counts)`` of one NumPy or CuPy block."""
        xp = xp_of(block)
        if block.dtype.kind != "f":
            block = block.astype(xp.float64)
        bounds = [(block.dtype.type(a), block.dtype.type(b)) for a, b in self.intervals]
        tiles = list(_tiles(block, TILE_VOXELS))
        shape = (tiles[0].stop - tiles[0].start,) + block.shape[1:]
        low, inside, upper = (xp.empty(shape, dtype=bool) for _ in range(3))
        below = [0] * len(bounds)
        parts: list[list[Any]] = [[] for _ in bounds]
        for tile in tiles:
            sub, n = block[tile], tile.stop - tile.start
            for j, (ta, tb) in enumerate(bounds):
                xp.less(sub, ta, out=low[:n])
                below[j] += int(xp.count_nonzero(low[:n]))
                xp.less(sub, tb, out=upper[:n])
                xp.logical_xor(upper[:n], low[:n], out=inside[:n])  # a <= v < b, as v < a implies v < b
                parts[j].append(sub[inside[:n]])
        return [self._summary(below[j], xp.concatenate(parts[j]), a, b) for j, (a, b) in enumerate(self.intervals)]

    @staticmethod
    def _summary(below: int, inside: Any, a: float, b: float) -> tuple[int, np.ndarray | None, np.ndarray]:
        if inside.size > REFINE_CAP:
            return below, None, _fine_counts(to_numpy(inside), a, b)
        values, counts = xp_of(inside).unique(inside, return_counts=True)
        return below, to_numpy(values).astype(np.float64), to_numpy(counts).astype(np.int64)


def _fine_counts(values: np.ndarray, a: float, b: float) -> np.ndarray:
    """Histogram (int64, FINE_BINS) of ``values`` in ``[a, b)`` over equal bins."""
    idx = np.minimum(((values.astype(np.float64) - a) * (FINE_BINS / (b - a))).astype(np.intp), FINE_BINS - 1)
    return np.bincount(idx, minlength=FINE_BINS)[:FINE_BINS].astype(np.int64)


def refine_spec(spec: HistogramSpec, counts: np.ndarray, q: Any, *, dtype: Any = np.float32) -> RefineSpec | None:
    """Intervals holding the two order statistics each percentile ``q`` interpolates; None for integer bins.

    Each interval runs from the coarse bin before the one holding the
    lower order statistic to the bin after the one holding the upper (a
    value near an edge may have been counted one bin off), with its ends
    rounded to ``dtype`` (the float type of the counted values).
    """
    if spec.integer:
        return None
    q = np.atleast_1d(np.asarray(q, dtype=np.float64))
    counts = np.asarray(counts)
    n = int(counts.sum())
    if n == 0:
        raise ValueError("percentiles of an empty histogram")
    cdf = np.cumsum(counts)
    edges = spec.edges()
    ftype = np.dtype(dtype).type if np.dtype(dtype).kind == "f" else np.float64
    positions = q / 100.0 * (n - 1)
    intervals = []
    for pos in positions:
        r0, r1 = int(np.floor(pos)), min(int(np.floor(pos)) + 1, n - 1)
        k0, k1 = (int(np.searchsorted(cdf, r + 1, side="left")) for r in (r0, r1))  # bins holding ranks r0, r1
        a = float(ftype(edges[max(k0 - 1, 0)]))
        b = float(ftype(edges[min(k1 + 2, spec.bins)]))
        if k1 + 2 >= spec.bins:  # the last bin holds hi itself
            b = float(np.nextafter(ftype(max(b, spec.hi)), ftype(np.inf)))
        intervals.append((a, b))
    return RefineSpec(tuple(intervals), tuple(float(v) for v in positions))


def _lerp(a: float, b: float, t: float) -> float:
    """numpy's interpolation between neighbouring order statistics (``numpy.lib._function_base_impl._lerp``)."""
    return b - (b - a) * (1.0 - t) if t >= 0.5 else a + (b - a) * t


def _exact_percentile(below: int, values: list[np.ndarray], counts: list[np.ndarray], pos: float, n: int) -> float | None:
    """numpy's linear percentile at 0-based ``pos`` from the distinct values inside an interval, None if not inside."""
    uniq, inverse = np.unique(np.concatenate(values), return_inverse=True)
    if len(uniq) == 0:
        return None
    cum = below + np.cumsum(np.bincount(inverse, weights=np.concatenate(counts), minlength=len(uniq)).astype(np.int64))
    r0 = int(np.floor(pos))
    r1 = min(r0 + 1, n - 1)
    if r0 < below or r1 >= cum[-1]:
        return None
    a, b = (float(uniq[int(np.searchsorted(cum, r, side="right"))]) for r in (r0, r1))
    return _lerp(a, b, pos - r0)


def _fine_percentile(spec: HistogramSpec, a: float, b: float, summaries: list[Any], j: int, q: float, n: int) -> float:
    """Percentile ``q`` from fine histograms of the interval (blocks that sent values are binned here)."""
    below = sum(s[j][0] for s in summaries)
    fine = sum((s[j][2] if s[j][1] is None else _fine_counts(np.repeat(s[j][1], s[j][2]), a, b)) for s in summaries)
    ext = np.concatenate([[below], fine, [n - below - int(fine.sum())]])
    edges = np.concatenate([[min(spec.lo, a)], np.linspace(a, b, FINE_BINS + 1), [max(spec.hi, b)]])
    return float(percentiles_from_histogram(ext, edges, [q])[0])


def refined_percentiles(spec: HistogramSpec, counts: np.ndarray, refine: RefineSpec, summaries: list[Any], q: Any) -> np.ndarray:
    """Percentiles ``q`` from the block ``summaries`` of ``refine`` (:meth:`RefineSpec.count` of every block).

    Exactly :func:`numpy.percentile` (``method="linear"``) of all values,
    read from the order statistics inside the intervals. Where a block had
    more than :data:`REFINE_CAP` values inside an interval, interpolated in
    a fine histogram instead (within ``3 / (bins * FINE_BINS)`` of the
    bins' range, 6e-9 for 8192 coarse bins); should an order statistic lie
    outside its interval, the coarse histogram's estimate is used.
    """
    q = np.atleast_1d(np.asarray(q, dtype=np.float64))
    n = int(np.asarray(counts).sum())
    coarse = percentiles_from_histogram(counts, spec.edges(), q)
    out = np.empty(len(q))
    for j, ((a, b), pos) in enumerate(zip(refine.intervals, refine.positions)):
        if any(s[j][1] is None for s in summaries):
            out[j] = _fine_percentile(spec, a, b, summaries, j, q[j], n)
            continue
        below = sum(s[j][0] for s in summaries)
        exact = _exact_percentile(below, [s[j][1] for s in summaries], [s[j][2] for s in summaries], pos, n)
        out[j] = coarse[j] if exact is None else exact
    return out


def two_stage_percentiles(
    spec: HistogramSpec,
    counts: np.ndarray,
    q: Any,
    collect: Collect,
    *,
    dtype: Any = np.float32,
) -> np.ndarray:
    """Percentiles ``q`` of a volume whose histogram ``counts`` has bins ``spec``.

    Integer bins give the grey level itself (``method="inverted_cdf"``).
    Float bins take one more look at every block, ``collect(refine.count)``
    (see :func:`collect_of`), for the few values near each percentile: the
    result is :func:`numpy.percentile` of all values (``method="linear"``).
    ``dtype``: the float type the collected blocks have.
    """
    refine = refine_spec(spec, counts, q, dtype=dtype)
    if refine is None:
        return percentiles_from_histogram(counts, spec.edges(), q)
    return refined_percentiles(spec, counts, refine, collect(refine.count), q)


def lazy_value_range(arr: da.Array) -> Any:
    """``(min, max)`` of ``arr`` as a dask ``Delayed``: one small task per block, one to combine."""
    per = arr.map_blocks(
        _block_range,
        dtype=np.float64,
        new_axis=3,
        chunks=tuple((1,) * len(c) for c in arr.chunks) + ((2,),),
        meta=np.empty((0, 0, 0, 0), dtype=np.float64),
    )
    return dask.delayed(_range_of_rows, pure=True)(per)


def _block_range(block: Any) -> np.ndarray:
    if block.size == 0:
        return np.array([np.inf, -np.inf]).reshape(1, 1, 1, 2)
    return np.array([float(block.min()), float(block.max())]).reshape(1, 1, 1, 2)


def _range_of_rows(rows: np.ndarray) -> tuple[float, float]:
    rows = np.asarray(rows).reshape(-1, 2)
    return float(rows[:, 0].min()), float(rows[:, 1].max())


def _count_row(block: Any, spec: HistogramSpec) -> np.ndarray:
    return spec.count(block).reshape(1, 1, 1, -1)


def _refine_block(refine: RefineSpec | None, block: Any) -> Any:
    return None if refine is None else refine.count(block)


def _final_percentiles(spec: HistogramSpec, counts: np.ndarray, refine: RefineSpec | None, summaries: list[Any], q: Any) -> np.ndarray:
    if refine is None:
        return percentiles_from_histogram(counts, spec.edges(), q)
    return refined_percentiles(spec, counts, refine, summaries, q)


def refined_percentiles_lazy(arr: da.Array, spec: Any, counts: Any, q: Any, *, dtype: Any = None) -> Any:
    """Percentiles ``q`` of ``arr`` from its histogram ``counts`` (bins ``spec``) as a dask ``Delayed``.

    The second look of :func:`two_stage_percentiles` at every block of
    ``arr``, in the graph; ``arr`` should be persisted (its blocks are
    read again), ``spec`` and ``counts`` may be lazy.
    """
    refine = dask.delayed(refine_spec, pure=True)(spec, counts, q, dtype=dtype or arr.dtype)
    summaries = [dask.delayed(_refine_block, pure=True)(refine, b) for b in arr.to_delayed(optimize_graph=False).ravel()]
    return dask.delayed(_final_percentiles, pure=True)(spec, counts, refine, summaries, q)


def normalize_in_memory(arr: da.Array, q: Any, spec: Any, *, clip: bool = True) -> tuple[da.Array, float, float]:
    """Normalise ``arr`` by its percentiles ``q``, computing each block of ``arr`` once and keeping it in memory.

    Two graphs, the second submitted while the first runs: ``arr`` persisted
    with its histogram (each block counted right after it is made); then
    the values near the percentiles and the normalisation, on the kept
    blocks. ``spec`` (bins) may be a ``Delayed``.

    Returns
    -------
    (dask.array.Array, float, float)
        The persisted float32 result and ``(lo, hi)`` in ``arr``'s units.
    """
    kept, counts, spec = dask.persist(arr, histogram_dask(arr, spec), spec)
    lo_hi = refined_percentiles_lazy(kept, spec, counts, q)
    out, lo_hi = dask.persist(normalize_lazy(kept, lo_hi, clip=clip), lo_hi)
    lo, hi = (float(v) for v in lo_hi.compute())
    return out, lo, hi


def lazy_spec(dtype: Any, value_range: Any) -> Any:
    """:func:`histogram_spec` for ``value_range`` given as a pair or a ``Delayed`` one (then a ``Delayed``)."""
    if has_integer_bins(dtype) or not isinstance(value_range, Delayed):
        return histogram_spec(dtype, value_range)
    return dask.delayed(histogram_spec, pure=True)(np.dtype(dtype), value_range)


def _normalize_with(block: Any, lo_hi: Any, *, clip: bool = True) -> Any:
    return normalize(block, float(lo_hi[0]), float(lo_hi[1]), clip=clip)


def normalize_lazy(arr: da.Array, lo_hi: Any, *, clip: bool = True) -> da.Array:
    """:func:`normalize` over the blocks of ``arr`` with ``(lo, hi)`` given as a ``Delayed`` (or a pair)."""
    return arr.map_blocks(_normalize_with, lo_hi, clip=clip, dtype=np.float32, meta=np.empty((0, 0, 0), dtype=np.float32))


def _check_percentiles(low: float, high: float) -> None:
    if not 0 <= low < high <= 100:
        raise ValueError(f"expected 0 <= low < high <= 100; got low={low}, high={high}")


def robust_range(
    arr: Any, low: float = 0.5, high: float = 99.5, *, value_range: tuple[float, float] | None = None
) -> tuple[float, float]:
    """The ``low`` and ``high`` percentiles of all voxels (out-of-core for dask arrays).

    Parameters
    ----------
    arr : array (z, y, x)
        NumPy, CuPy or dask array.
    low, high : float
        Percentiles in [0, 100], ``low < high``.
    value_range : (float, float), optional
        A range known to hold every value (float data): saves the min/max
        pass and fixes the bins (see :func:`histogram`).
    """
    _check_percentiles(low, high)
    if not has_integer_bins(arr.dtype) and value_range is None:
        value_range = value_range_of(arr)
    spec = histogram_spec(arr.dtype, value_range)
    counts = np.asarray(histogram_dask(arr, spec).compute()) if isinstance(arr, da.Array) else spec.count(arr)
    lo, hi = two_stage_percentiles(spec, counts, [low, high], collect_of(arr), dtype=arr.dtype)
    return float(lo), float(hi)


def normalize(image: Any, lo: float, hi: float, *, clip: bool = True) -> Any:
    """Map ``[lo, hi]`` linearly to ``[0, 1]`` as float32 (clipped unless ``clip=False``).

    ``(float32(image) - float32(lo)) * float32(1 / (hi - lo))`` (scale 1 when
    ``hi <= lo``), computed into one new float32 array; ``image`` is not
    modified.
    """
    xp = xp_of(image)
    scale = 1.0 / (hi - lo) if hi > lo else 1.0
    out = xp.subtract(image, xp.float32(lo), dtype=xp.float32)
    out *= xp.float32(scale)
    if clip:
        xp.clip(out, 0.0, 1.0, out=out)
    return out


def normalize_dask(
    arr: da.Array,
    low: float = 0.5,
    high: float = 99.5,
    *,
    clip: bool = True,
    value_range: Any = None,
    persist: bool = False,
) -> tuple[da.Array, tuple[float, float]]:
    """Normalise a dask volume with its own robust percentiles.

    Parameters
    ----------
    arr : dask.array.Array (z, y, x)
        Volume, possibly a lazy filter of another.
    low, high : float
        Percentiles (0-100) mapped to 0 and 1.
    clip : bool
        Clip the result to [0, 1].
    value_range : (float, float) or Delayed, optional
        A range known to hold every value of ``arr`` (float data), such as
        the filter input's range (:func:`pipeline.preprocess.denoise.output_range`):
        the histogram then needs no min/max pass.
    persist : bool
        Keep ``arr``'s blocks (a filter, say) in memory, computed once
        (:func:`normalize_in_memory`); the result comes back persisted.
        Only when ``arr`` fits in the cluster's memory. False: statistics
        first, out-of-core (``arr`` is evaluated for its min and max unless
        ``value_range`` is given, for the histogram, for the values near the
        percentiles, and once more by whoever computes the lazy result).

    Returns
    -------
    (dask.array.Array, (float, float))
        The lazy float32 result and ``(lo, hi)`` in ``arr``'s units.
    """
    _check_percentiles(low, high)
    q = [low, high]
    if persist:
        if value_range is None and not has_integer_bins(arr.dtype):
            (arr,) = dask.persist(arr)  # its own range first: keep the blocks, then look at them twice
            value_range = lazy_value_range(arr)
        out, lo, hi = normalize_in_memory(arr, q, lazy_spec(arr.dtype, value_range), clip=clip)
        return out, (lo, hi)
    if not has_integer_bins(arr.dtype) and value_range is None:
        value_range = value_range_of(arr)
    spec = histogram_spec(arr.dtype, value_range.compute() if isinstance(value_range, Delayed) else value_range)
    coarse = np.asarray(histogram_dask(arr, spec).compute())
    lo, hi = (float(v) for v in two_stage_percentiles(spec, coarse, q, collect_of(arr), dtype=arr.dtype))
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
