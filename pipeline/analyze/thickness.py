"""Local thickness: the diameter of the largest inscribed ball that covers each voxel of a phase.

Definition (Hildebrand & Rüegsegger, as a radius sweep): with ``dt`` the
Euclidean distance (nm) of each phase voxel to the nearest voxel outside the
phase, radii ``r`` are swept from large to small; the seeds ``dt >= r``
dilated by a ball of radius ``r`` (a second distance transform) cover the
voxels whose local thickness is at least ``2 r``. A voxel gets ``2 r`` of the
first radius that covers it. :func:`local_thickness_sweep` does exactly this
with SciPy's EDT (the reference: one whole-volume pass per radius).

The fast method (:func:`local_thickness`, :func:`local_thickness_dask`, numba
kernels in :mod:`pipeline.analyze._lt_kernels`) gives the same values on the
same radii with one distance transform and no pass per radius:

1. each phase voxel ``c`` gets a *level*: the largest radius ``q(c) <= dt(c)``
   of the grid. The sweep's value at ``x`` is then the largest ``q(c)`` over
   the voxels with ``|x - c| <= q(c)``: the balls of every voxel, painted with
   their radius, largest first.
2. Most balls are not needed. A voxel whose 6 neighbours all have a level at
   least its own is not needed: the seeds of a radius nearest to a voxel
   they cover always have a neighbour outside the seeds (one step towards
   the voxel brings them closer), so every covered voxel is a seed itself or
   is covered from the seeds' boundary. A voxel whose ball lies inside the
   ball of a voxel one (radius steps under half a voxel) or two voxels away
   per axis (digital containment, tabulated per radius and offset) is not
   needed either, nor a ball of the smallest radius (every phase voxel gets
   that value at least): on small pores these are half of the voxels.
3. The kept balls are painted in descending radius, row by row, into a bit
   mask of the voxels not painted yet (16 voxels along x per word, and one
   bit per word saying whether it is still non-zero, also per group of 8
   planes), so a covered part of a ball costs a word test per 64 rows (and
   8 planes); a voxel keeps the first (largest) radius and at least its own
   level.

It is exact: tests compare it voxel for voxel with :func:`local_thickness_sweep`.

Out of core (:func:`local_thickness_dask`): a first pass finds the largest
inscribed radius ``r_max`` block by block (a block whose distances are not
all below its halo is measured again with a halo just above what it found,
an upper bound of its true distances; with a scratch store the exact
distances are kept for the second pass); each block of the
second pass reads a halo of ``r_max`` (balls that reach the block): their
stored distances, or the mask with ``r_max`` more for their exact distance
transform, whose two costly passes only run on the block and its ball halo. The blocks are large (:data:`BLOCK_VOXELS`),
a few hundred MB each at most whatever the volume; a volume of one block is
measured in one pass with every core on it, several blocks run one per worker.

Conventions: distances between voxel centres, voxels of anisotropic size
``voxel_size_nm`` (z, y, x); the volume's faces are not boundaries of the
phase (a pore cut by a face is measured as far as it is seen). The values are
quantised to the radius grid (step about a quarter of the smallest voxel edge,
at most ``n_radii`` radii).

Digital bias: twice a centre-to-centre distance underestimates the diameter
of a digitised ball by about one voxel and of a cylinder by about 0.3 voxel
(the ball's centre voxel is off its true centre; radii are rounded down to
the grid). Half the smallest voxel edge (:data:`EDGE_CORRECTION_VOXELS`) is
added to every value, which brings analytic spheres and cylinders of 12-30
voxels within half a voxel of their diameter (tests/analyze/test_thickness.py).
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import dask
import dask.array as da
import numpy as np

from pipeline.engine.blocks import grouped_block_shape

__all__ = [
    "radius_grid",
    "sweep",
    "local_thickness_sweep",
    "local_thickness",
    "thickness_block",
    "thickness_block_from_distances",
    "local_thickness_dask",
    "max_inscribed_radius",
    "EDGE_CORRECTION_VOXELS",
    "BLOCK_VOXELS",
    "thickness_values",
]

#: Relative tolerance of the radius comparisons, so that float32/float64 and
#: the two EDT implementations agree on ties (distances that equal a radius).
_TOL = 1e-5
#: Voxels (of the smallest edge) added to every diameter; see the module notes.
EDGE_CORRECTION_VOXELS = 0.5
#: Most voxels of one out-of-core block (its core, without the halo): 2^24, 16.8 Mvox.
BLOCK_VOXELS = 2**24


def radius_grid(r_max_nm: float, voxel_size_nm: Sequence[float], *, n_radii: int = 64) -> np.ndarray:
    """Radii (nm, descending) of the sweep: from ``r_max`` down to the smallest voxel edge.

    The step is a quarter of the smallest voxel edge, coarser when that would
    need more than ``n_radii`` radii.
    """
    vmin = float(min(voxel_size_nm))
    if r_max_nm < vmin:
        return np.array([vmin], dtype=np.float64) if r_max_nm > 0 else np.zeros(0)
    n = int(min(max(2, math.ceil((r_max_nm - vmin) / (0.25 * vmin)) + 1), max(2, n_radii)))
    return np.linspace(r_max_nm, vmin, n)


def thickness_values(radii: np.ndarray, voxel_size_nm: Sequence[float], *, sort: bool = True) -> np.ndarray:
    """The values (nm) a sweep over ``radii`` gives: float32 of 2 r plus the edge correction (ascending and unique by default)."""
    r = np.asarray(radii, dtype=np.float64)
    v = (2 * r).astype(np.float32) + np.float32(EDGE_CORRECTION_VOXELS * min(float(x) for x in voxel_size_nm))
    return np.unique(v) if sort else v


# ---------------------------------------------------------------------------
# The reference: one distance transform per radius
# ---------------------------------------------------------------------------


def sweep(dist: np.ndarray, phase: np.ndarray, radii: np.ndarray, voxel_size_nm: Sequence[float]) -> np.ndarray:
    """Local thickness (diameter, nm) from a distance map, for given radii (descending), with SciPy's EDT.

    Parameters
    ----------
    dist : float array
        Distance (nm) of each phase voxel to the nearest voxel outside the phase.
    phase : bool array
        The phase.
    radii : array
        Radii in nm, descending.
    """
    import scipy.ndimage as ndi

    out = np.zeros(dist.shape, dtype=np.float32)
    vs = tuple(float(v) for v in voxel_size_nm)
    for r in radii:
        seeds = dist >= r * (1 - _TOL)
        if not seeds.any():
            continue
        d = ndi.distance_transform_edt(~seeds, sampling=vs)
        new = (d <= r * (1 + _TOL)) & phase & (out == 0)
        out[new] = np.float32(2 * r)
    if len(radii):
        out[phase & (out == 0)] = np.float32(2 * radii[-1])
        out[phase] += np.float32(EDGE_CORRECTION_VOXELS * min(vs))
    return out


def local_thickness_sweep(
    mask: np.ndarray, voxel_size_nm: Sequence[float] = (1.0, 1.0, 1.0), *, radii: np.ndarray | None = None, n_radii: int = 64
) -> np.ndarray:
    """Local thickness (nm) of the True voxels of ``mask`` by the radius sweep, all in memory (the reference).

    One SciPy distance transform per radius: slow, kept as the definition the
    fast method is tested against. Returns float32 diameters in nm, 0 outside
    the phase.
    """
    import scipy.ndimage as ndi

    m = np.asarray(mask, dtype=bool)
    if m.ndim != 3:
        raise ValueError(f"mask must be 3D (z, y, x); got shape {m.shape}")
    vs = tuple(float(v) for v in voxel_size_nm)
    if not m.any():
        return np.zeros(m.shape, np.float32)
    dist = ndi.distance_transform_edt(m, sampling=vs) if not m.all() else np.full(m.shape, np.inf)
    if radii is None:
        rmax = float(dist.max()) if np.isfinite(dist.max()) else float(np.max(np.asarray(m.shape) * vs))
        radii = radius_grid(rmax, vs, n_radii=n_radii)
    radii = np.sort(np.unique(np.asarray(radii, dtype=np.float64)))[::-1]
    return sweep(dist, m, radii, vs)


# ---------------------------------------------------------------------------
# The fast method: kept balls painted in descending radius (numba kernels)
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Tables:
    """What the kernels need for one radius set and voxel size (lengths in units of the smallest edge)."""

    w: tuple[float, float, float]
    thr2: np.ndarray  # (K,) ascending squared seed thresholds (r (1 - tol))^2
    tab: np.ndarray  # number of thr2 <= each integer squared distance
    need: np.ndarray  # (K + 1, classes) least level of a neighbour (offset class) whose ball contains this level's ball
    ring: int  # neighbours up to this far (voxels per axis) are tried for containment
    reach: np.ndarray  # (K + 1, 3) half extent of each level's ball per axis (voxels)
    rz_of: np.ndarray  # ball rows (see _lt_kernels.paint)
    dz_base: np.ndarray
    ry_of: np.ndarray
    row_w: np.ndarray
    values: np.ndarray  # (K + 1,) float32 thickness (nm) of each level

    @property
    def n_levels(self) -> int:
        return len(self.thr2)


@functools.lru_cache(maxsize=8)
def _tables(radii_nm: tuple[float, ...], voxel_size_nm: tuple[float, float, float]) -> _Tables:
    """Tables for ascending unique ``radii_nm``."""
    from pipeline.analyze import _lt_kernels as kern

    vmin = min(voxel_size_nm)
    w = tuple(v / vmin for v in voxel_size_nm)
    r = np.asarray(radii_nm, np.float64) / vmin
    K = len(r)
    rho2 = np.concatenate([[0.0], (r * (1 + _TOL)) ** 2])
    thr2 = (r * (1 - _TOL)) ** 2
    tab = np.searchsorted(thr2, np.arange(int(math.ceil(thr2[-1])) + 2, dtype=np.float64), side="right").astype(np.int64)
    rz_of, dz_base, ry_of, row_w, far2 = kern.ball_rows(rho2, *w)
    need = np.full((K + 1, kern._CLASSES), K + 1, np.int64)
    for c in range(1, kern._CLASSES):
        # the least level whose ball, one offset of class c away, holds every point of this level's ball
        j = np.searchsorted(rho2, far2[1:, c] * (1 + 1e-9), side="left")
        need[1:, c] = np.maximum(j, np.arange(2, K + 2))
    need = np.minimum(need, K + 1)
    reach = np.floor(np.sqrt(rho2)[:, None] / np.asarray(w)[None, :] + 1e-9).astype(np.int64)
    values = np.zeros(K + 1, np.float32)
    values[1:] = thickness_values(np.asarray(radii_nm), voxel_size_nm, sort=False)
    # a ball 2 voxels away contains this one only if its radius is about 2 voxels more: worth trying where
    # the radii are that coarse (large pores), not with steps of a quarter voxel (small ones)
    step = float(np.min(np.diff(r))) if K > 1 else 1.0
    ring = kern._RING if step >= 0.5 else 1
    return _Tables(w, thr2, tab, need, ring, reach, rz_of, dz_base, ry_of, row_w, values)  # type: ignore[arg-type]


def _split(n: int, parts: int) -> list[tuple[int, int]]:
    cuts = np.linspace(0, n, max(1, parts) + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]


def _in_threads(fn: Any, n: int, threads: int, *args: Any) -> list[Any]:
    """``fn(*args, lo, hi)`` over ``range(n)`` split in ``threads`` parts (the kernels release the GIL)."""
    parts = _split(n, threads)
    if len(parts) <= 1:
        return [fn(*args, a, b) for a, b in parts]
    with ThreadPoolExecutor(len(parts)) as pool:
        return [f.result() for f in [pool.submit(fn, *args, a, b) for a, b in parts]]


def _cells(r_nm: float, voxel_size_nm: Sequence[float]) -> tuple[int, int, int]:
    """Voxels per axis within ``r_nm`` of a voxel."""
    return tuple(int(math.floor(r_nm / v + 1e-9)) for v in voxel_size_nm)  # type: ignore[return-value]


def block_halo(r_max_nm: float, radii_nm: np.ndarray, voxel_size_nm: Sequence[float]) -> tuple[int, int, int]:
    """Voxels per axis that :func:`thickness_block` needs around a block: balls that reach it, plus their distance transform."""
    balls = _cells(float(np.max(radii_nm)) * (1 + _TOL), voxel_size_nm)
    return tuple(b + int(math.ceil(r_max_nm / v)) + 1 for b, v in zip(balls, voxel_size_nm))  # type: ignore[return-value]


def _squared_edt(m: np.ndarray, a: Sequence[tuple[int, int]], t_w: Sequence[float], threads: int, *,
                 tables: _Tables | None = None) -> tuple[np.ndarray, float]:
    """Squared distance (float32, units of the smallest edge) of the region ``a`` of ``m``, or its levels when
    ``tables`` is given; and the largest squared distance (float64)."""
    from pipeline.analyze import _lt_kernels as kern

    (az0, az1), (ay0, ay1), (ax0, ax1) = a
    g1 = np.empty((az1 - az0, m.shape[1], m.shape[2]), np.uint16)
    _in_threads(kern.edt_z, m.shape[1], threads, m, az0, az1, g1)
    shape = (az1 - az0, ay1 - ay0, ax1 - ax0)
    if tables is None:
        d2 = np.empty(shape, np.float32)
        lev = np.zeros((0, 0, 0), np.uint8)
        thr2, tab = np.zeros(1), np.zeros(1, np.int64)
    else:
        d2 = np.zeros((0, 0, 0), np.float32)
        lev = np.empty(shape, np.uint8 if tables.n_levels < 255 else np.uint16)
        thr2, tab = tables.thr2, tables.tab
    top = max(_in_threads(kern.edt_yx, az1 - az0, threads, g1, t_w[0], ay0, ay1, ax0, ax1, t_w[1], t_w[2], thr2, tab, d2, lev))
    return (d2 if tables is None else lev), float(top)


def _paint(m: np.ndarray, core: Sequence[slice], lev: np.ndarray, box: np.ndarray, t: _Tables, threads: int) -> np.ndarray:
    """Steps 2 and 3 of the method on the levels ``lev`` of a region whose core is ``box`` (in ``lev``) and ``core`` (in ``m``)."""
    from pipeline.analyze import _lt_kernels as kern

    K = t.n_levels
    cen = np.concatenate(_in_threads(kern.centres, lev.shape[0], threads, lev, t.need, t.ring, box, t.reach))
    cen, clev = kern.sort_by_level(cen, lev.reshape(-1), K)
    cz, cy, cx = (s.stop - s.start for s in core)
    mz, my, mx = (s.start for s in core)
    bits = np.empty((cz, cy, -(-cx // kern._XW)), kern.WORD)
    cols = np.empty((cz, bits.shape[2], (cy + 63) // 64), np.uint64)
    _in_threads(kern.pack_bits, cz, threads, m, mz, my, mx, cx, bits, cols)
    groups = np.empty((-(-cz // kern._GROUP), cols.shape[1], cols.shape[2]), np.uint64)
    _in_threads(kern.group_summary, groups.shape[0], threads, cols, groups)
    out = np.zeros((cz, cy, cx), lev.dtype)
    ey, ex = lev.shape[1], lev.shape[2]
    # threads paint whole groups of planes
    parts = [(a * kern._GROUP, min(cz, b * kern._GROUP)) for a, b in _split(groups.shape[0], threads)]
    if len(parts) > 1:
        zc = cen // (ey * ex) - box[0]
        rz = t.rz_of[clev]
        jobs = []
        for z0, z1 in parts:
            sel = (zc + rz >= z0) & (zc - rz < z1)
            jobs.append((cen[sel], clev[sel], z0, z1))
        with ThreadPoolExecutor(len(jobs)) as pool:
            for f in [pool.submit(kern.paint, c, lv, ey, ex, box[0], box[2], box[4], t.rz_of, t.dz_base, t.ry_of,
                                  t.row_w, bits, cols, groups, out, z0, z1) for c, lv, z0, z1 in jobs]:
                f.result()
    else:
        kern.paint(cen, clev, ey, ex, box[0], box[2], box[4], t.rz_of, t.dz_base, t.ry_of, t.row_w, bits, cols, groups, out, 0, cz)
    res = np.empty((cz, cy, cx), np.float32)
    _in_threads(kern.finish, cz, threads, out, lev, box[0], box[2], box[4], m, mz, my, mx, t.values, res)
    return res


def thickness_block(
    mask: np.ndarray, core: Sequence[slice], voxel_size_nm: Sequence[float], radii_nm: np.ndarray, *, threads: int = 1
) -> np.ndarray:
    """Local thickness (nm) of the ``core`` of ``mask`` by the fast method.

    Parameters
    ----------
    mask : bool array (z, y, x)
        The phase; around the core, a halo of :func:`block_halo` voxels per
        axis wherever the volume goes on (none at its faces).
    core : three slices
        The part of ``mask`` to measure.
    voxel_size_nm : (float, float, float)
    radii_nm : array
        Radii of the sweep (nm, any order).
    threads : int
        Threads for this block.

    Returns
    -------
    float32 array of the core's shape: diameters in nm, 0 outside the phase.
    """
    vs = tuple(float(v) for v in voxel_size_nm)
    radii = np.unique(np.asarray(radii_nm, np.float64))
    m = np.ascontiguousarray(mask, dtype=bool)
    shape_c = tuple(s.stop - s.start for s in core)
    if len(radii) == 0 or not m[tuple(core)].any():
        return np.zeros(shape_c, np.float32)
    t = _tables(tuple(radii.tolist()), vs)  # type: ignore[arg-type]
    h = _cells(float(radii[-1]) * (1 + _TOL), vs)
    a = [(max(0, s.start - hh), min(n, s.stop + hh)) for s, hh, n in zip(core, h, m.shape)]
    lev, _ = _squared_edt(m, a, t.w, threads, tables=t)
    box = np.array([c for s, (lo, _) in zip(core, a) for c in (s.start - lo, s.stop - lo)], np.int64)
    return _paint(m, core, lev, box, t, threads)


def thickness_block_from_distances(
    distances: str | os.PathLike[str], region: Sequence[slice], core: Sequence[slice], mask_core: np.ndarray,
    voxel_size_nm: Sequence[float], radii_nm: np.ndarray, *, threads: int = 1,
) -> np.ndarray:
    """:func:`thickness_block` from stored squared distances: no distance transform.

    Parameters
    ----------
    distances : path
        The float32 zarr array of exact squared distances (units of the
        smallest voxel edge) that :func:`max_inscribed_radius` wrote.
    region : three slices
        The part of it to read: the block and the balls that reach it.
    core : three slices
        The block inside ``region``.
    mask_core : bool array
        The phase on the block.
    """
    from pipeline.analyze import _lt_kernels as kern
    from pipeline.io.volume import open_array_cached

    vs = tuple(float(v) for v in voxel_size_nm)
    radii = np.unique(np.asarray(radii_nm, np.float64))
    m = np.ascontiguousarray(mask_core, dtype=bool)
    if len(radii) == 0 or not m.any():
        return np.zeros(m.shape, np.float32)
    t = _tables(tuple(radii.tolist()), vs)  # type: ignore[arg-type]
    d2 = np.ascontiguousarray(open_array_cached(distances)[tuple(region)], dtype=np.float32)
    lev = np.empty(d2.shape, np.uint8 if t.n_levels < 255 else np.uint16)
    _in_threads(kern.levels, d2.shape[0], threads, d2, t.thr2, t.tab, lev)
    del d2
    box = np.array([c for s in core for c in (s.start, s.stop)], np.int64)
    return _paint(m, tuple(slice(0, n) for n in m.shape), lev, box, t, threads)


def local_thickness(
    mask: np.ndarray, voxel_size_nm: Sequence[float] = (1.0, 1.0, 1.0), *, radii: np.ndarray | None = None,
    n_radii: int = 64, threads: int | None = None, info: dict[str, Any] | None = None,
) -> np.ndarray:
    """Local thickness (nm) of the True voxels of ``mask``, in memory, by the fast method.

    Equal voxel for voxel to :func:`local_thickness_sweep` on the same radii.

    Parameters
    ----------
    mask : bool array (z, y, x)
        The phase (True).
    voxel_size_nm : (float, float, float)
    radii : array, optional
        Radii (nm); default :func:`radius_grid` up to the largest inscribed radius.
    n_radii : int
        Most radii of the default grid.
    threads : int, optional
        Threads (default: every core).
    info : dict, optional
        Filled with ``r_max_nm`` (the largest inscribed radius) and ``radii_nm``.

    Returns
    -------
    float32 array: diameters in nm, 0 outside the phase.
    """
    from pipeline.analyze import _lt_kernels as kern

    info = {} if info is None else info
    m = np.ascontiguousarray(mask, dtype=bool)
    if m.ndim != 3:
        raise ValueError(f"mask must be 3D (z, y, x); got shape {m.shape}")
    vs = tuple(float(v) for v in voxel_size_nm)
    if not m.any():
        info.update(r_max_nm=0.0, radii_nm=[])
        return np.zeros(m.shape, np.float32)
    if m.all():
        raise ValueError("the phase fills the whole volume: its local thickness is unbounded")
    th = int(threads or os.cpu_count() or 1)
    core = tuple(slice(0, n) for n in m.shape)
    vmin = min(vs)
    d2, top = _squared_edt(m, [(0, n) for n in m.shape], tuple(v / vmin for v in vs), th)
    r_max = math.sqrt(top) * vmin
    if radii is None:
        radii = radius_grid(r_max, vs, n_radii=n_radii)
    info.update(r_max_nm=r_max, radii_nm=np.asarray(radii, np.float64).tolist())
    radii = np.unique(np.asarray(radii, np.float64))
    t = _tables(tuple(radii.tolist()), vs)  # type: ignore[arg-type]
    lev = np.empty(m.shape, np.uint8 if t.n_levels < 255 else np.uint16)
    _in_threads(kern.levels, m.shape[0], th, d2, t.thr2, t.tab, lev)
    del d2
    box = np.array([0, m.shape[0], 0, m.shape[1], 0, m.shape[2]], np.int64)
    return _paint(m, core, lev, box, t, th)


# ---------------------------------------------------------------------------
# Out of core
# ---------------------------------------------------------------------------


def _regions(shape: Sequence[int], block: Sequence[int]) -> list[tuple[tuple[int, ...], tuple[slice, ...]]]:
    from pipeline.engine.blocks import block_regions

    return list(block_regions(shape, block))


def _with_halo(region: Sequence[slice], halo: Sequence[int], shape: Sequence[int]) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """The region grown by ``halo`` (clipped to the volume), and the region's place inside it."""
    ext = tuple(slice(max(0, s.start - h), min(n, s.stop + h)) for s, h, n in zip(region, halo, shape))
    core = tuple(slice(s.start - e.start, s.stop - e.start) for s, e in zip(region, ext))
    return ext, core


def _max_d2_block(mask: np.ndarray, core: tuple[slice, ...], w: tuple[float, float, float], threads: int,
                  store: str | None = None, region: tuple[slice, ...] | None = None, exact_below: float = 0.0) -> float:
    """Largest squared distance (units of the smallest edge) of the ``core`` of ``mask``; with ``store``, the
    core's squared distances are written to ``store[region]`` when they are exact (the largest below ``exact_below``)."""
    m = np.ascontiguousarray(mask, dtype=bool)
    if not m[core].any():
        return 0.0  # a store reads 0 (its fill value) where nothing is written
    d2, top = _squared_edt(m, [(s.start, s.stop) for s in core], w, threads)
    if store is not None and region is not None and top < exact_below:
        from pipeline.io.volume import open_array_cached

        open_array_cached(store, mode="r+")[region] = d2
    return top


def _threads_per_block(n_blocks: int, threads: int | None) -> int:
    if threads:
        return int(threads)
    cores = os.cpu_count() or 1
    return max(1, cores // max(1, min(cores, n_blocks)))


def max_inscribed_radius(
    mask: Any, voxel_size_nm: Sequence[float], *, start_halo_nm: float | None = None, block_voxels: int = BLOCK_VOXELS,
    threads: int | None = None, progress: str | None = None, store: str | os.PathLike[str] | None = None,
) -> float:
    """Largest distance (nm) of a phase voxel to the phase boundary, out of core.

    The distance transform of a block is exact where it is smaller than the
    block's halo: a block whose largest value is not is measured again, until
    every block is exact (``inf`` when the phase fills the whole volume). A block's distances found with too short a halo are
    upper bounds of the true ones (boundaries outside the region are not
    seen), so it is measured again once, with a halo just above the largest
    of them (twice the halo when that is infinite). ``progress`` labels a
    progress bar over the blocks.
    ``store``: a float32 zarr array of the mask's shape (fill value 0) that
    receives every block's exact squared distances (units of the smallest
    voxel edge), so that :func:`local_thickness_dask` need not compute them again.
    """
    from pipeline.progress import compute

    m = da.asarray(mask)
    if m.ndim != 3:
        raise ValueError(f"mask must be 3D (z, y, x); got shape {m.shape}")
    vs = tuple(float(v) for v in voxel_size_nm)
    vmin = min(vs)
    w = tuple(v / vmin for v in vs)
    extent = float(max(n * v for n, v in zip(m.shape, vs)))
    block = grouped_block_shape(m.shape, m.chunksize, block_voxels)
    todo = [region for _, region in _regions(m.shape, block)]
    th = _threads_per_block(len(todo), threads)
    h = float(start_halo_nm or 16 * max(vs))
    best = 0.0
    while todo:
        halo = tuple(int(math.ceil(h / v)) + 1 for v in vs)
        # the squared distance under which a block's values are exact (all of them once the halo spans the volume)
        below = math.inf if h >= extent else (h * (1 - 1e-6) / vmin) ** 2
        tasks = []
        for region in todo:
            ext, core = _with_halo(region, halo, m.shape)
            tasks.append(dask.delayed(_max_d2_block)(m[ext].astype(bool), core, w, th, None if store is None else str(store),
                                                     region, below))
        # one graph: neighbouring blocks share the reads of their halos
        found = [math.sqrt(v) * vmin for v in compute(*tasks, desc=progress)]
        exact = [f < h * (1 - 1e-6) or h >= extent for f in found]
        best = max([best] + [f for f, ok in zip(found, exact) if ok])
        # a block's distances over a smaller region are upper bounds of the true ones: a halo above the
        # largest found makes the next pass exact (one more pass, not a doubling each time)
        over = [f for f, ok in zip(found, exact) if not ok]
        todo = [r for r, ok in zip(todo, exact) if not ok]
        top = max(over, default=math.inf)
        h = min(top * (1 + 1e-5) + max(vs) if np.isfinite(top) else 2 * h, extent)
    return best if np.isfinite(best) else math.inf


def local_thickness_dask(
    mask: Any, voxel_size_nm: Sequence[float], *, radii: np.ndarray | None = None, n_radii: int = 64,
    block_voxels: int = BLOCK_VOXELS, threads: int | None = None, progress: str | None = None,
    scratch: str | os.PathLike[str] | None = None,
) -> tuple[da.Array, dict[str, Any]]:
    """Local thickness (nm) of the True voxels of a dask mask, out of core, by the fast method.

    Parameters
    ----------
    mask : dask array of bool (z, y, x)
        The phase.
    voxel_size_nm : (float, float, float)
    radii : array, optional
        Radii (nm); default :func:`radius_grid` up to the largest inscribed radius.
    n_radii : int
        Most radii of the default grid.
    block_voxels : int
        Most voxels of a block (without its halo); blocks are whole multiples
        of the mask's chunks.
    threads : int, optional
        Threads per block; default: every core for a volume of one block, else one.
    progress : str, optional
        Label of the progress bar of the largest-radius pass (the thickness
        itself is lazy: its bar is that of whatever computes it).
    scratch : path, optional
        A zarr store (created here, on storage every worker reads; 4 bytes
        per voxel) for the distances of the largest-radius pass, which the
        blocks then read instead of computing their distance transform again
        over a halo of twice the largest radius. The caller removes it once the
        thickness is computed. Without it (or for a volume of one block) the
        blocks compute their own.

    Returns
    -------
    thickness : dask array of float32
        Diameters in nm, 0 outside the phase; lazy, one task per block (a
        volume of one block is measured at once, in memory: one distance
        transform gives both the largest radius and the levels). Its chunks
        are the blocks, whole multiples of the mask's: write it with
        ``block_shape=thickness.chunksize`` (and reduce it from the written
        store) so that no block is computed twice.
    info : dict
        ``r_max_nm``, ``halo_voxels`` (per axis: what a block reads around
        it, of the mask or, with ``scratch``, of the stored distances), ``block_shape``,
        ``radii_nm``, ``values_nm`` (every value the thickness can take,
        ascending).
    """
    m = da.asarray(mask)
    if m.ndim != 3:
        raise ValueError(f"mask must be 3D (z, y, x); got shape {m.shape}")
    m = m.astype(bool)
    vs = tuple(float(v) for v in voxel_size_nm)
    block = grouped_block_shape(m.shape, m.chunksize, block_voxels)
    regions = _regions(m.shape, block)
    th = _threads_per_block(len(regions), threads)
    if len(regions) == 1:
        # one block: in memory, one distance transform for the largest radius and the levels
        return _one_block(np.asarray(m.compute()), vs, radii, n_radii, th, block)
    # store chunks that the blocks are made of, so that no two blocks write to one chunk
    chunks = tuple(c if b % c == 0 or b == n else b for c, b, n in zip(m.chunksize, block, m.shape))
    store = None if scratch is None else _distance_store(scratch, m.shape, chunks)
    rmax = max_inscribed_radius(m, vs, block_voxels=block_voxels, threads=threads, progress=progress, store=store)
    if not np.isfinite(rmax):
        raise ValueError("the phase fills the whole volume: its local thickness is unbounded")
    if radii is None:
        radii = radius_grid(rmax, vs, n_radii=n_radii)
    radii = np.asarray(radii, dtype=np.float64)
    halo = block_halo(rmax, radii, vs) if len(radii) else (0, 0, 0)
    halo = tuple(min(h, n - 1) for h, n in zip(halo, m.shape))
    # with stored distances a block reads those of the balls that reach it, and computes none
    balls = _cells(float(np.max(radii)) * (1 + _TOL), vs) if len(radii) else (0, 0, 0)
    grid = [list(range(math.ceil(n / b))) for n, b in zip(m.shape, block)]
    parts: dict[tuple[int, ...], da.Array] = {}
    for index, region in regions:
        if store is not None:
            ext, core = _with_halo(region, balls, m.shape)
            task = dask.delayed(thickness_block_from_distances)(store, ext, core, m[region], vs, radii, threads=th)
        else:
            ext, core = _with_halo(region, halo, m.shape)
            task = dask.delayed(thickness_block)(m[ext], core, vs, radii, threads=th)
        parts[index] = da.from_delayed(task, shape=tuple(s.stop - s.start for s in region), dtype=np.float32)
    lt = da.block([[[parts[(i, j, k)] for k in grid[2]] for j in grid[1]] for i in grid[0]])
    read = balls if store is not None else halo  # what a block reads around it
    info = {"r_max_nm": rmax, "halo_voxels": list(read), "block_shape": list(block), "radii_nm": radii.tolist(),
            "values_nm": thickness_values(radii, vs).tolist()}
    return lt, info


def _distance_store(path: str | os.PathLike[str], shape: Sequence[int], chunks: Sequence[int]) -> str:
    """A float32 zarr array (fill 0, the mask's chunks, lz4) for the squared distances; an earlier one is replaced."""
    import shutil

    import zarr

    from pipeline.io.codecs import compressors_named

    p = os.fspath(path)
    shutil.rmtree(p, ignore_errors=True)
    zarr.create_array(p, shape=tuple(int(n) for n in shape), chunks=tuple(int(c) for c in chunks), dtype="float32",
                      fill_value=0.0, compressors=compressors_named("lz4"), zarr_format=3)
    return p


def _one_block(m: np.ndarray, vs: tuple[float, ...], radii: np.ndarray | None, n_radii: int, threads: int,
               block: Sequence[int]) -> tuple[da.Array, dict[str, Any]]:
    info: dict[str, Any] = {}
    lt = local_thickness(m, vs, radii=radii, n_radii=n_radii, threads=threads, info=info)
    radii = np.asarray(info["radii_nm"])
    halo = block_halo(info["r_max_nm"], radii, vs) if len(radii) else (0, 0, 0)
    info.update(halo_voxels=[min(h, n - 1) for h, n in zip(halo, m.shape)], block_shape=list(block),
                values_nm=thickness_values(radii, vs).tolist())
    return da.from_array(lt, chunks=tuple(block)), info
