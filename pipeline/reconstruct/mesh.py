"""Triangle meshes in nm: a small container, welding of block meshes, conversion to trimesh.

Vertices are kept in *voxel-index* coordinates (z, y, x; the centre of voxel
``i`` is at ``i``) while blocks are meshed and welded, because there the
shared seam vertices are bitwise equal; :func:`to_trimesh` scales them to nm
and reorders the columns to (x, y, z).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["VoxelMesh", "weld", "concatenate", "to_trimesh"]


@dataclass
class VoxelMesh:
    """Vertices (n, 3) float64 in voxel units (z, y, x) and faces (m, 3) int64.

    Faces are oriented so that their normals point out of the meshed phase.
    """

    vertices: np.ndarray
    faces: np.ndarray

    @classmethod
    def empty(cls) -> VoxelMesh:
        return cls(np.zeros((0, 3), np.float64), np.zeros((0, 3), np.int64))


def concatenate(parts: Sequence[VoxelMesh]) -> VoxelMesh:
    """Stack meshes without merging vertices."""
    parts = [p for p in parts if len(p.faces)]
    if not parts:
        return VoxelMesh.empty()
    offsets = np.cumsum([0] + [len(p.vertices) for p in parts[:-1]])
    return VoxelMesh(
        np.concatenate([p.vertices for p in parts]),
        np.concatenate([p.faces + o for p, o in zip(parts, offsets)]),
    )


def weld(mesh: VoxelMesh) -> VoxelMesh:
    """Merge vertices with bitwise-equal coordinates and drop degenerate faces.

    Block meshes compute a seam vertex from the same field values in the
    same way, so equal coordinates (not a tolerance) identify it.
    """
    if len(mesh.faces) == 0:
        return VoxelMesh.empty()
    v = np.ascontiguousarray(mesh.vertices, dtype=np.float64)
    key = v.view(np.dtype((np.void, v.dtype.itemsize * 3))).ravel()
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    faces = inverse.ravel()[mesh.faces]
    ok = (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])
    return VoxelMesh(v[first], faces[ok].astype(np.int64))


def to_trimesh(mesh: VoxelMesh, voxel_size_nm: Sequence[float], origin_nm: Sequence[float] = (0.0, 0.0, 0.0)):  # noqa: ANN201
    """A :class:`trimesh.Trimesh` in nm with columns (x, y, z), normals out of the phase.

    Swapping z and x mirrors the space, so the face winding is reversed to
    keep normals pointing out of the meshed phase.
    """
    import trimesh

    vs = np.asarray(voxel_size_nm, dtype=np.float64)
    xyz = (mesh.vertices * vs + np.asarray(origin_nm, dtype=np.float64))[:, ::-1]
    return trimesh.Trimesh(vertices=xyz, faces=mesh.faces[:, ::-1], process=False, validate=False)
