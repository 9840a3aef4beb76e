"""Local thickness: the diameter of the largest inscribed ball that covers each voxel of a phase.

Algorithm (Hildebrand & Rüegsegger, as a radius sweep): with ``dt`` the
Euclidean distance (nm) of each phase voxel to the nearest voxel outside the
phase, radii ``r`` are swept from large to small; the seeds ``dt >= r``
dilated by a ball of radius ``r`` (a second distance transform) cover the
voxels whose local thickness is at least ``2 r``. A voxel gets ``2 r`` of the
first radius that covers it.

Two implementations give the same values on the same radii:

- :func:`local_thickness_inmemory` — the whole volume in memory, SciPy's EDT
  (the reference and the benchmark baseline);
- :func:`local_thickness_dask` — out of core: a first pass finds the largest
  inscribed radius ``r_max`` block by block (the halo of the distance
  transform is grown until no voxel of a block is farther from the phase
  boundary than its halo); the sweep then runs on each block with a halo of
  ``r_max`` (seeds whose balls reach into the block) plus ``r_max`` (their
  exact distance transform), using the ``edt`` package.

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

import math
from collections.abc import Sequence
from typing import Any

import dask.array as da
import numpy as np

__all__ = [
    "radius_grid",
    "sweep",
    "local_thickness_inmemory",
    "local_thickness_dask",
    "max_inscribed_radius",
    "EDGE_CORRECTION_VOXELS",
    "thickness_values",
]

#: Relative tolerance of the radius comparisons, so that float32/float64 and
#: the two EDT implementations agree on ties (distances that equal a radius).
_TOL = 1e-5
#: Voxels (of the smallest edge) added to every diameter; see the module notes.
EDGE_CORRECTION_VOXELS = 0.5


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


def sweep(dist: np.ndarray, phase: np.ndarray, radii: np.ndarray, voxel_size_nm: Sequence[float], *, backend: str = "scipy") -> np.ndarray:
    """Local thickness (diameter, nm) from a distance map, for given radii (descending).

    Parameters
    ----------
    dist : float array
        Distance (nm) of each phase voxel to the nearest voxel outside the phase.
    phase : bool array
        The phase.
    radii : array
        Radii in nm, descending.
    backend : {"scipy", "edt"}
        Distance transform used for the dilations.
    """
    out = np.zeros(dist.shape, dtype=np.float32)
    vs = tuple(float(v) for v in voxel_size_nm)
    for r in radii:
        seeds = dist >= r * (1 - _TOL)
        if not seeds.any():
            continue
        if backend == "edt":
            import edt

            d = edt.edt(~seeds, anisotropy=vs, black_border=False, parallel=1)
        else:
            import scipy.ndimage as ndi

            d = ndi.distance_transform_edt(~seeds, sampling=vs)
        new = (d <= r * (1 + _TOL)) & phase & (out == 0)
        out[new] = np.float32(2 * r)
    if len(radii):
        out[phase & (out == 0)] = np.float32(2 * radii[-1])
        out[phase] += np.float32(EDGE_CORRECTION_VOXELS * min(vs))
    return out


def local_thickness_inmemory(
    mask: np.ndarray, voxel_size_nm: Sequence[float] = (1.0, 1.0, 1.0), *, radii: np.ndarray | None = None, n_radii: int = 64
) -> np.ndarray:
    """Local thickness (nm) of the True voxels of ``mask``, all in memory with SciPy's EDT.

    Returns float32 diameters in nm, 0 outside the phase.
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
    return sweep(dist, m, np.asarray(radii, dtype=np.float64), vs, backend="scipy")


def _edt_block(block: np.ndarray, vs: tuple[float, float, float]) -> np.ndarray:
    import edt

    from pipeline.backend import to_numpy

    b = to_numpy(block).astype(bool, copy=False)  # the edt package runs on the CPU
    if b.all():
        return np.full(b.shape, np.inf, np.float32)
    return edt.edt(b, anisotropy=vs, black_border=False, parallel=1).astype(np.float32)


def _depth(r_nm: float, vs: Sequence[float]) -> tuple[int, int, int]:
    return tuple(int(math.ceil(r_nm / v)) + 1 for v in vs)  # type: ignore[return-value]


def _fit_chunks(arr: da.Array, depth: Sequence[int], *, factor: int = 4) -> da.Array:
    """Rechunk into blocks of whole input chunks, each at least ``factor`` times the halo (capped by the shape).

    map_overlap needs chunks at least as thick as the halo; four times keeps
    the recomputed halo under about 2.4 times the block's own voxels. Blocks
    stay whole multiples of the input (store) chunks, so that a writer can
    take one block as its unit of work (``block_shape``) and nothing is
    computed twice.
    """
    want = []
    for n, cs, d in zip(arr.shape, arr.chunks, depth):
        c = max(cs)
        want.append(min(int(n), c * max(1, math.ceil(factor * int(d) / c))))
    if all(len(cs) == 1 or (cs[0] == w and max(cs) == w) for cs, w in zip(arr.chunks, want)):
        return arr
    return arr.rechunk(tuple(want))


def max_inscribed_radius(mask: da.Array, voxel_size_nm: Sequence[float], *, start_halo_nm: float | None = None) -> float:
    """Largest distance (nm) of a phase voxel to the phase boundary, out of core.

    The distance transform of each block is exact where it is not larger
    than the halo; the halo doubles until the largest value is under it
    (``inf`` when the phase fills the whole volume).
    """
    vs = tuple(float(v) for v in voxel_size_nm)
    m = mask.astype(bool)
    extent = float(max(n * v for n, v in zip(m.shape, vs)))
    h = float(start_halo_nm or 16 * max(vs))
    while True:
        depth = _depth(h, vs)
        depth = tuple(min(d, n - 1) if n > 1 else 0 for d, n in zip(depth, m.shape))
        mm = _fit_chunks(m, depth)
        dt = da.map_overlap(_edt_block, mm, depth=depth, boundary="none", dtype=np.float32, vs=vs, trim=True)
        rmax = float(da.max(da.where(mm, dt, 0)).compute())
        if rmax <= h * (1 - 1e-6) or h >= extent:
            if not np.isfinite(rmax):
                return math.inf
            return rmax
        h = min(2 * h, extent)


def _lt_block(block: np.ndarray, vs: tuple[float, float, float], radii: np.ndarray) -> np.ndarray:
    from pipeline.backend import to_numpy

    b = to_numpy(block).astype(bool, copy=False)
    if not b.any():
        return np.zeros(b.shape, np.float32)
    return sweep(_edt_block(b, vs), b, radii, vs, backend="edt")


def local_thickness_dask(
    mask: Any, voxel_size_nm: Sequence[float], *, radii: np.ndarray | None = None, n_radii: int = 64
) -> tuple[da.Array, dict[str, Any]]:
    """Local thickness (nm) of the True voxels of a dask mask, out of core.

    Parameters
    ----------
    mask : dask array of bool (z, y, x)
        The phase.
    voxel_size_nm : (float, float, float)
    radii : array, optional
        Radii (nm, descending); default :func:`radius_grid` up to the largest inscribed radius.
    n_radii : int
        Most radii of the default grid.

    Returns
    -------
    thickness : dask array of float32
        Diameters in nm, 0 outside the phase; lazy. Its chunks are whole
        multiples of the mask's: write it with ``block_shape=thickness.chunksize``
        (and reduce it from the written store) so that no block is computed twice.
    info : dict
        ``r_max_nm``, ``halo_voxels`` (per axis), ``radii_nm``, ``values_nm``
        (every value the thickness can take, ascending).
    """
    m = da.asarray(mask).astype(bool)
    if m.ndim != 3:
        raise ValueError(f"mask must be 3D (z, y, x); got shape {m.shape}")
    vs = tuple(float(v) for v in voxel_size_nm)
    rmax = max_inscribed_radius(m, vs)
    if not np.isfinite(rmax):
        raise ValueError("the phase fills the whole volume: its local thickness is unbounded")
    if radii is None:
        radii = radius_grid(rmax, vs, n_radii=n_radii)
    radii = np.asarray(radii, dtype=np.float64)
    # seeds up to r_max away reach a voxel; their distance map needs r_max more
    depth = _depth(2 * max(rmax, float(radii.max()) if len(radii) else 0.0), vs)
    depth = tuple(min(d, n - 1) if n > 1 else 0 for d, n in zip(depth, m.shape))
    mm = _fit_chunks(m, depth)
    lt = da.map_overlap(_lt_block, mm, depth=depth, boundary="none", dtype=np.float32, vs=vs, radii=radii, trim=True)
    return lt, {"r_max_nm": rmax, "halo_voxels": list(depth), "radii_nm": radii.tolist(), "values_nm": thickness_values(radii, vs).tolist()}


def thickness_values(radii: np.ndarray, voxel_size_nm: Sequence[float]) -> np.ndarray:
    """The values (nm, ascending) a sweep over ``radii`` gives: float32 of 2 r plus the edge correction."""
    r = np.asarray(radii, dtype=np.float64)
    v = (2 * r).astype(np.float32) + np.float32(EDGE_CORRECTION_VOXELS * min(float(x) for x in voxel_size_nm))
    return np.unique(v)
