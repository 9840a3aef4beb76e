"""Mesh a label volume with one of the seven methods, block by block, seams welded.

The volume is never whole in memory: each block reads its region plus the
halo its method needs (from a NumPy array, a dask array or a zarr-backed
volume), meshes it and returns its triangles; the block meshes are welded
into one mesh (which is held in memory). With one block the same code
meshes the whole volume at once, and the chunked mesh equals it: the same
triangles, up to order.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from typing import Any

import dask
import numpy as np

from pipeline.reconstruct.fields import FIELDS, block_extent, block_field, halo
from pipeline.reconstruct.hull import convex_hull_mesh, hull_candidates
from pipeline.reconstruct.isosurface import mesh_samples, samples_area
from pipeline.reconstruct.mesh import VoxelMesh, concatenate, to_trimesh, weld
from pipeline.reconstruct.voxel import voxel_faces

__all__ = ["METHODS", "DEFAULT_BLOCK", "mesh_volume", "mesh_voxels", "median_level", "surface_area"]

#: The paper's seven methods (annex 7.1), in its order.
METHODS: tuple[str, ...] = (
    "mc_basic",
    "mc_smoothed",
    "mc_hole_filled",
    "voxel_direct",
    "convex_hull",
    "dual_contouring",
    "multiscale",
)
#: Default block (z, y, x) in voxels: 16 MiB of float32 field.
DEFAULT_BLOCK: tuple[int, int, int] = (128, 128, 256)
#: Bins of the histogram that gives the median level of dual contouring.
MEDIAN_BINS = 1 << 16


def _check(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"method {method!r} is not one of {', '.join(METHODS)}")


class _Reader:
    """Reads regions of a NumPy, CuPy or dask array inside a task.

    Handing a dask array itself to ``dask.delayed`` would make every task
    receive the *whole* computed array; this wrapper is opaque to dask, so a
    task reads only its block plus halo (a dask slice computed on the spot
    with the synchronous scheduler: zarr reads, no nested cluster calls).
    """

    def __init__(self, arr: Any) -> None:
        self.arr = arr
        self.shape = tuple(int(n) for n in arr.shape)
        self.ndim = len(self.shape)

    def __getitem__(self, region: tuple[slice, ...]) -> Any:
        block = self.arr[region]
        if hasattr(block, "compute"):
            block = block.compute(scheduler="sync")
        return block


def _source(mask: Any) -> _Reader:
    """A reader of the array behind a mask (an xarray volume -> its data)."""
    arr = getattr(mask, "data", mask) if hasattr(mask, "dims") else mask
    if getattr(arr, "ndim", None) != 3:
        raise ValueError(f"mask must be 3D (z, y, x); got shape {getattr(arr, 'shape', None)}")
    return _Reader(arr)


def _phase_of(block: Any, phase: int) -> np.ndarray:
    from pipeline.backend import to_numpy

    return to_numpy(block) == phase  # meshing runs on the CPU; CuPy blocks are copied over


def _ranges(n: int, step: int, start: int = 0) -> list[tuple[int, int]]:
    return [(a, min(a + step, n)) for a in range(start, n, step)]


def _cube_blocks(shape: Sequence[int], block: Sequence[int]) -> list[tuple[tuple[int, int], ...]]:
    """Blocks of cubes of the padded sample grid: lower corners -1 .. n-1 per axis."""
    per_axis = [[(a - 1, b - 1) for a, b in _ranges(n + 1, int(s))] for n, s in zip(shape, block)]
    return list(itertools.product(*per_axis))


def _block_samples(src: Any, shape: tuple[int, int, int], cubes: tuple[tuple[int, int], ...], method: str,
                   params: dict, phase: int) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Field samples of a block of cubes (one more sample than cubes per axis), 0 beyond the volume."""
    s_lo = [c0 for c0, _ in cubes]
    s_hi = [c1 + 1 for _, c1 in cubes]
    inner = tuple(slice(max(0, a), min(n, b)) for a, b, n in zip(s_lo, s_hi, shape))
    out = np.zeros([b - a for a, b in zip(s_lo, s_hi)], dtype=np.float32)
    if all(r.stop > r.start for r in inner):
        ext_sl, pads = block_extent(shape, inner, halo(method, params))
        f = block_field(_phase_of(src[ext_sl], phase), pads, method, params)
        dst = tuple(slice(r.start - a, r.stop - a) for r, a in zip(inner, s_lo))
        out[dst] = f
    return out, tuple(s_lo)  # type: ignore[return-value]


def _mc_block(src: Any, shape: tuple[int, int, int], cubes: Any, method: str, params: dict, phase: int,
              level: float) -> VoxelMesh:
    samples, origin = _block_samples(src, shape, cubes, method, params, phase)
    return mesh_samples(samples, level, origin)


def _hist_block(src: Any, shape: tuple[int, int, int], region: tuple[slice, ...], method: str, params: dict,
                phase: int) -> np.ndarray:
    ext_sl, pads = block_extent(shape, region, halo(method, params))
    f = block_field(_phase_of(src[ext_sl], phase), pads, method, params)
    f = f[f > 0]
    return np.histogram(np.clip(f, 0.0, 1.0), bins=MEDIAN_BINS, range=(0.0, 1.0))[0].astype(np.int64)


def _hull_block(src: Any, shape: tuple[int, int, int], cubes: Any, phase: int) -> np.ndarray:
    m = _mc_block(src, shape, cubes, "mc_basic", {}, phase, float(FIELDS["mc_basic"].level))
    return hull_candidates(m.vertices) if len(m.vertices) else np.zeros((0, 3))


def _voxel_block(src: Any, shape: tuple[int, int, int], region: tuple[slice, ...], phase: int) -> VoxelMesh:
    ext_sl, pads = block_extent(shape, region, 1)
    m = np.pad(_phase_of(src[ext_sl], phase), pads, mode="constant", constant_values=False)
    return voxel_faces(m, tuple(r.start for r in region))  # type: ignore[arg-type]


def _run_blocks(fn: Any, src: _Reader, args: list[tuple[Any, ...]], progress: str | None = None) -> list[Any]:
    """``[fn(src, *a) for a in args]`` in parallel (on the active Dask client if there is one), in order.

    On a client the reader (with the dask graph of the whole volume behind
    it) goes to each worker once, scattered, instead of inside every task.
    """
    from pipeline.engine.blocks import active_client, compute_tasks

    client = active_client()
    shared = client.scatter(src, broadcast=True, hash=False) if client is not None and args else src
    tasks = [dask.delayed(fn, pure=False)(shared, *a) for a in args]
    return compute_tasks(tasks, progress=progress)


def median_level(mask: Any, method: str = "dual_contouring", *, phase: int = 1, params: dict | None = None,
                 block_shape: Sequence[int] = DEFAULT_BLOCK) -> float:
    """Median of the non-zero field of ``method`` over the volume, from a 65,536-bin histogram.

    The level is the centre of the bin holding the median, the same for any
    block shape (exact to 1/131,072 of the field's range [0, 1]).
    """
    src = _source(mask)
    shape = tuple(int(s) for s in src.shape)
    params = dict(params or {})
    regions = [tuple(slice(a, b) for a, b in r) for r in itertools.product(*[_ranges(n, int(s)) for n, s in zip(shape, block_shape)])]
    hists = _run_blocks(_hist_block, src, [(shape, r, method, params, phase) for r in regions])
    hist = np.sum(hists, axis=0) if hists else np.zeros(MEDIAN_BINS, np.int64)
    total = int(hist.sum())
    if total == 0:
        return 0.5
    k = int(np.searchsorted(np.cumsum(hist), (total + 1) // 2))
    return (k + 0.5) / MEDIAN_BINS


def mesh_voxels(
    mask: Any,
    method: str = "mc_basic",
    *,
    phase: int = 1,
    block_shape: Sequence[int] | None = None,
    params: dict | None = None,
    seed: int = 0,
    max_points: int = 5000,
    progress: str | None = None,
) -> tuple[VoxelMesh, dict[str, Any]]:
    """Mesh of one phase of a label volume in voxel units (z, y, x), and facts about it.

    Parameters
    ----------
    mask : array (z, y, x)
        Labels (uint8, 1 = pore, 0 = solid) as a NumPy or dask array or an
        xarray volume; read block by block.
    method : str
        One of :data:`METHODS`.
    phase : int
        Label value of the meshed phase (1: the pores).
    block_shape : (int, int, int), optional
        Block of the chunked mesh in voxels; None meshes the volume as one block.
    params : dict, optional
        Method parameters overriding the paper's (``sigma``, ``sigmas``, ``weights``,
        ``closing_iterations``, ``level``).
    seed : int
        Seed of the convex hull's point subsampling.
    max_points : int
        Points kept for the convex hull (the paper's 5,000).
    progress : str, optional
        Label of a progress bar over the blocks.

    Returns
    -------
    mesh : VoxelMesh
        Welded mesh, normals out of the phase.
    info : dict
        ``level`` used (isosurface methods), ``blocks``.
    """
    _check(method)
    src = _source(mask)
    shape: tuple[int, int, int] = tuple(int(s) for s in src.shape)  # type: ignore[assignment]
    params = dict(params or {})
    block = tuple(int(b) for b in (block_shape or (n + 2 for n in shape)))
    if any(b < 1 for b in block):
        raise ValueError(f"block_shape {block} must be positive")
    info: dict[str, Any] = {"method": method}
    if method == "voxel_direct":
        regions = [tuple(slice(a, b) for a, b in r) for r in itertools.product(*[_ranges(n, s) for n, s in zip(shape, block)])]
        parts = _run_blocks(_voxel_block, src, [(shape, r, phase) for r in regions], progress)
        info["blocks"] = len(regions)
        return weld(concatenate(parts)), info
    if method == "convex_hull":
        cubes = _cube_blocks(shape, block)
        cands = [c for c in _run_blocks(_hull_block, src, [(shape, c, phase) for c in cubes], progress) if len(c)]
        info["blocks"] = len(cubes)
        pts = np.concatenate(cands) if cands else np.zeros((0, 3))
        info["hull_points"] = int(min(len(pts), max_points))
        return convex_hull_mesh(pts, max_points=max_points, seed=seed), info
    spec = FIELDS[method]
    if "level" in params:
        level = float(params.pop("level"))
    elif spec.level == "median":
        level = median_level(src, method, phase=phase, params=params, block_shape=block)
    else:
        level = float(spec.level)
    if spec.whole_slices:
        block = (block[0], shape[1] + 2, shape[2] + 2)
    cubes = _cube_blocks(shape, block)
    parts = _run_blocks(_mc_block, src, [(shape, c, method, params, phase, level) for c in cubes], progress)
    info.update(level=level, blocks=len(cubes))
    return weld(concatenate(parts)), info


def mesh_volume(
    mask: Any,
    method: str = "mc_basic",
    *,
    voxel_size_nm: Sequence[float] | None = None,
    phase: int = 1,
    block_shape: Sequence[int] | None = None,
    params: dict | None = None,
    seed: int = 0,
    max_points: int = 5000,
    progress: str | None = None,
):  # noqa: ANN201 - trimesh.Trimesh
    """Mesh of one phase of a label volume in nm, as a :class:`trimesh.Trimesh` (x, y, z columns).

    Parameters (and ``progress``) are those of :func:`mesh_voxels`; ``voxel_size_nm`` (z, y, x)
    defaults to the volume's ``attrs["voxel_size_nm"]`` for an xarray volume.
    The mesh's ``metadata`` holds the method, level and block count.
    """
    if voxel_size_nm is None:
        if not hasattr(mask, "attrs") or "voxel_size_nm" not in mask.attrs:
            raise ValueError("voxel_size_nm is needed for a mask that is not a porelab volume")
        voxel_size_nm = mask.attrs["voxel_size_nm"]
    vm, info = mesh_voxels(mask, method, phase=phase, block_shape=block_shape, params=params, seed=seed,
                           max_points=max_points, progress=progress)
    tm = to_trimesh(vm, voxel_size_nm)
    tm.metadata.update(info)
    tm.metadata["voxel_size_nm"] = [float(v) for v in voxel_size_nm]
    return tm


def _area_block(src: Any, shape: tuple[int, int, int], cubes: Any, method: str, params: dict, phase: int,
                level: float, vs: tuple[float, float, float]) -> float:
    samples, _ = _block_samples(src, shape, cubes, method, params, phase)
    return samples_area(samples, level, vs)


def surface_area(
    mask: Any,
    voxel_size_nm: Sequence[float],
    *,
    method: str = "mc_smoothed",
    params: dict | None = None,
    phase: int = 1,
    block_shape: Sequence[int] = DEFAULT_BLOCK,
    progress: str | None = None,
) -> float:
    """Area (nm²) of the isosurface of one phase, summed block by block (no mesh kept).

    Faces of the volume are not counted: the samples beyond the volume
    repeat its faces' values instead of closing the surface. ``progress``
    labels a progress bar over the blocks.
    """
    src = _source(mask)
    shape: tuple[int, int, int] = tuple(int(s) for s in src.shape)  # type: ignore[assignment]
    params = dict(params or {})
    spec = FIELDS[method]
    level = float(params.pop("level", spec.level if spec.level != "median" else 0.5))
    vs = tuple(float(v) for v in voxel_size_nm)
    block = tuple(int(b) for b in block_shape)
    if spec.whole_slices:
        block = (block[0], shape[1] + 2, shape[2] + 2)
    cubes = [c for c in _cube_blocks(shape, block)]
    # only cubes between samples inside the volume: the open surface, not the box faces
    inner = []
    for c in cubes:
        r = tuple((max(a, 0), min(b, n - 1)) for (a, b), n in zip(c, shape))
        if all(b > a for a, b in r):
            inner.append(r)
    areas = _run_blocks(_area_block, src, [(shape, c, method, params, phase, level, vs) for c in inner], progress)
    return float(sum(areas))
