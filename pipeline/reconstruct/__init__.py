"""Meshes of a label volume: the paper's seven reconstruction methods and their metrics.

Modules (plain functions on arrays):

- :mod:`~pipeline.reconstruct.fields` — the scalar fields and levels of the isosurface methods.
- :mod:`~pipeline.reconstruct.isosurface` — marching cubes of one block of samples.
- :mod:`~pipeline.reconstruct.voxel` — direct voxel conversion.
- :mod:`~pipeline.reconstruct.hull` — convex hull with the 5,000-point subsampling.
- :mod:`~pipeline.reconstruct.build` — :func:`mesh_volume`: any method, block by block, seams welded.
- :mod:`~pipeline.reconstruct.mesh` — the voxel-unit mesh container, welding, trimesh in nm.
- :mod:`~pipeline.reconstruct.metrics` — Chamfer, Hausdorff, volume/area ratios, enclosed porosity.
- :mod:`~pipeline.reconstruct.compare` — every method against a ground truth (paper Fig. 11 and 12).
- :mod:`~pipeline.reconstruct.io` — PLY / STL files.

Meshes are in nm with columns (x, y, z); they enclose the phase with label
``phase`` (1 = pore by default) and are closed at the faces of the volume.
"""

from pipeline.reconstruct.build import METHODS, mesh_volume, mesh_voxels
from pipeline.reconstruct.io import write_mesh
from pipeline.reconstruct.metrics import enclosed_porosity, mesh_metrics

__all__ = ["METHODS", "mesh_volume", "mesh_voxels", "write_mesh", "mesh_metrics", "enclosed_porosity"]
