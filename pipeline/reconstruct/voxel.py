"""Direct voxel conversion: one square (two triangles) per face between the phase and the rest.

The mesh encloses exactly the phase's voxels (volume = voxel count times the
voxel volume). Voxel ``i`` is the cube ``[i - 0.5, i + 0.5]`` in voxel units.
Two voxels of the phase that touch only along an edge share that edge with
four faces: the surface is closed and consistently oriented, but such edges
are not 2-manifold (trimesh's ``is_watertight`` is then False).
"""

from __future__ import annotations

import numpy as np

from pipeline.reconstruct.mesh import VoxelMesh

__all__ = ["voxel_faces"]

# corners (b, c) of a face's square, counter-clockwise seen from +a for a cyclic (a, b, c)
_SQUARE = np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]])


def voxel_faces(ext: np.ndarray, origin: tuple[int, int, int]) -> VoxelMesh:
    """Faces of the voxels of a block's core, from the block's mask padded by one voxel.

    Parameters
    ----------
    ext : bool array
        Phase mask of the block plus one voxel on every side (False beyond the volume).
    origin : (int, int, int)
        Global index of the first core voxel (``ext[1, 1, 1]``).
    """
    m = np.asarray(ext, dtype=bool)
    core = m[1:-1, 1:-1, 1:-1]
    verts, faces = [], []
    n = 0
    for a in range(3):
        b, c = (a + 1) % 3, (a + 2) % 3
        for sign in (1, -1):
            sl = [slice(1, -1)] * 3
            sl[a] = slice(1 + sign, m.shape[a] - 1 + sign)
            idx = np.argwhere(core & ~m[tuple(sl)])
            if len(idx) == 0:
                continue
            centre = idx.astype(np.float64) + np.asarray(origin, dtype=np.float64)
            centre[:, a] += 0.5 * sign
            quad = np.repeat(centre[:, None, :], 4, axis=1)
            quad[:, :, b] += _SQUARE[:, 0]
            quad[:, :, c] += _SQUARE[:, 1]
            k = len(idx)
            q = n + 4 * np.arange(k)[:, None]
            tri = np.array([[0, 1, 2], [0, 2, 3]]) if sign > 0 else np.array([[0, 2, 1], [0, 3, 2]])
            faces.append((q[:, None, :] + tri[None, :, :]).reshape(-1, 3))
            verts.append(quad.reshape(-1, 3))
            n += 4 * k
    if not verts:
        return VoxelMesh.empty()
    return VoxelMesh(np.concatenate(verts), np.concatenate(faces).astype(np.int64))
