"""Convex hull of the marching-cubes surface points, with the paper's 5,000-point subsampling."""

from __future__ import annotations

import numpy as np

from pipeline.reconstruct.mesh import VoxelMesh

__all__ = ["hull_candidates", "convex_hull_mesh"]


def hull_candidates(points: np.ndarray) -> np.ndarray:
    """The points of ``points`` that are vertices of their convex hull (all of them when degenerate)."""
    from scipy.spatial import ConvexHull, QhullError

    p = np.asarray(points, dtype=np.float64)
    if len(p) < 5:
        return p
    try:
        return p[ConvexHull(p).vertices]
    except QhullError:
        return p


def convex_hull_mesh(points: np.ndarray, *, max_points: int = 5000, seed: int = 0) -> VoxelMesh:
    """Convex polyhedron around ``points`` (voxel units), outward normals.

    Parameters
    ----------
    points : (n, 3) array
        Surface points (z, y, x), typically the union of the hull vertices of
        each block's marching-cubes surface, which has the same hull as all points.
    max_points : int
        When there are more points, ``max_points`` of them are drawn at random
        (seeded; the paper's 5,000-point subsampling).
    seed : int
        Seed of the subsampling.
    """
    from scipy.spatial import ConvexHull, QhullError

    p = np.unique(np.asarray(points, dtype=np.float64), axis=0)  # sorted: independent of block order
    if len(p) > max_points:
        p = p[np.sort(np.random.default_rng(seed).choice(len(p), size=max_points, replace=False))]
    if len(p) < 4:
        return VoxelMesh.empty()
    try:
        hull = ConvexHull(p)
    except QhullError:
        return VoxelMesh.empty()
    faces = hull.simplices.astype(np.int64)
    # orient each facet outwards: its normal must point away from the centroid
    centre = p.mean(axis=0)
    tri = p[faces]
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    flip = np.einsum("ij,ij->i", normal, tri[:, 0] - centre) < 0
    faces[flip] = faces[flip][:, ::-1]
    used, inverse = np.unique(faces, return_inverse=True)
    return VoxelMesh(p[used], inverse.reshape(-1, 3).astype(np.int64))
