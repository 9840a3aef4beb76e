"""Marching cubes over one block of the padded sample grid.

The sample grid of a volume of shape ``n`` is its field padded by one sample
of 0 on every face (indices ``-1 .. n``), so every surface is closed at the
faces of the volume. Cubes are indexed by their lower corner ``-1 .. n-1``;
a block owns a range of cubes and needs the samples of that range plus one.
"""

from __future__ import annotations

import numpy as np
from skimage.measure import marching_cubes

from pipeline.reconstruct.mesh import VoxelMesh

__all__ = ["mesh_samples", "samples_area"]

#: Triangles whose areas are summed at a time (bounds the float64 temporaries to about 20 MiB).
AREA_BATCH = 1 << 18


def mesh_samples(samples: np.ndarray, level: float, origin: tuple[int, int, int]) -> VoxelMesh:
    """Marching cubes (Lewiner) of a block of samples, vertices in global voxel units.

    Parameters
    ----------
    samples : float32 array
        Field samples of the block (cubes between them are meshed).
    level : float
        Isosurface level; the phase is where the field is above it.
    origin : (int, int, int)
        Global index (z, y, x) of ``samples[0, 0, 0]``.
    """
    if min(samples.shape) < 2 or not (samples.max() > level > samples.min()):
        return VoxelMesh.empty()
    verts, faces, _, _ = marching_cubes(samples, level=float(level), method="lewiner", allow_degenerate=False)
    v = verts.astype(np.float64) + np.asarray(origin, dtype=np.float64)
    # skimage orients normals towards decreasing values: reverse to point out of the phase (field > level)
    return VoxelMesh(v, faces.astype(np.int64)[:, ::-1])


def samples_area(samples: np.ndarray, level: float, voxel_size: tuple[float, float, float]) -> float:
    """Area of the marching-cubes isosurface of a block of samples, in the units of ``voxel_size``².

    The same triangles as :func:`mesh_samples`, but no mesh is built: the
    areas are summed :data:`AREA_BATCH` triangles at a time.
    """
    if min(samples.shape) < 2 or not (samples.max() > level > samples.min()):
        return 0.0
    verts, faces, _, _ = marching_cubes(samples, level=float(level), method="lewiner", allow_degenerate=False)
    scale = np.asarray(voxel_size, dtype=np.float64)
    total = 0.0
    for i in range(0, len(faces), AREA_BATCH):
        t = verts[faces[i : i + AREA_BATCH]].astype(np.float64) * scale
        total += float(0.5 * np.linalg.norm(np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]), axis=1).sum())
    return total
