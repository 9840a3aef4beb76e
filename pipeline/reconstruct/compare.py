"""Every reconstruction method against a ground truth (the paper's Fig. 11 and 12).

For each structure, each method meshes the label volume; the mesh is compared
with the ground-truth mesh (:func:`~pipeline.reconstruct.metrics.mesh_metrics`)
and its enclosed porosity with the true porosity. :func:`summarize` gives
the mean and standard deviation over structures, the bars and error bars of
the paper's figures.

:func:`sphere_structure` makes test structures with an exact truth: solid
spheres (analytic) sampled at voxel centres give the label volume, and the
same spheres sampled ``supersample`` times finer give the truth mesh and porosity.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.reconstruct.build import METHODS, mesh_volume
from pipeline.reconstruct.metrics import enclosed_porosity, mesh_metrics

__all__ = ["Case", "sphere_structure", "compare_methods", "summarize"]


@dataclass
class Case:
    """One structure: labels (1 = pore), voxel size (nm), truth mesh (nm) and true porosity."""

    name: str
    labels: np.ndarray
    voxel_size_nm: tuple[float, float, float]
    truth_mesh: Any
    truth_porosity: float


def _sample_spheres(shape: Sequence[int], spheres: np.ndarray, factor: int) -> np.ndarray:
    """Pore labels (1 outside every sphere) at voxel centres ``factor`` times finer (voxel units)."""
    fine = tuple(int(n) * factor for n in shape)
    solid = np.zeros(fine, dtype=bool)
    for z, y, x, r in spheres:
        c = (np.array([z, y, x]) + 0.5) * factor - 0.5  # centre in fine indices
        rf = r * factor
        lo = np.maximum(np.floor(c - rf).astype(int), 0)
        hi = np.minimum(np.ceil(c + rf).astype(int) + 1, fine)
        if np.any(hi <= lo):
            continue
        g = np.ogrid[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        d2 = (g[0] - c[0]) ** 2 + (g[1] - c[1]) ** 2 + (g[2] - c[2]) ** 2
        solid[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] |= d2 <= rf * rf
    return (~solid).astype(np.uint8)


def sphere_structure(
    shape: Sequence[int] = (48, 48, 48),
    *,
    porosity: float = 0.5,
    radius_vox: tuple[float, float] = (3.0, 7.0),
    voxel_size_nm: Sequence[float] = (10.0, 10.0, 10.0),
    supersample: int = 2,
    flip_fraction: float = 0.0,
    seed: int = 0,
    name: str | None = None,
) -> Case:
    """Random overlapping solid spheres with an exact, finer ground truth.

    Parameters
    ----------
    shape : (int, int, int)
        Label volume shape (voxels).
    porosity : float
        Spheres are added until the pore fraction is at most this.
    radius_vox : (float, float)
        Sphere radii drawn uniformly in this range (voxels).
    voxel_size_nm : (float, float, float)
        Voxel size; the truth mesh is in nm.
    supersample : int
        The truth is sampled this many times finer per axis.
    flip_fraction : float
        Fraction of the voxels on the pore/solid boundary flipped at random
        (a segmentation's boundary errors); 0 keeps the ideal sampling.
    seed : int
        Seed of the spheres and flips.
    """
    from pipeline.reconstruct.build import mesh_voxels
    from pipeline.reconstruct.mesh import to_trimesh

    if not 0 < porosity < 1:
        raise ValueError(f"porosity {porosity} must be in (0, 1)")
    rng = np.random.default_rng(seed)
    shape = tuple(int(n) for n in shape)
    vol = float(np.prod(np.asarray(shape, dtype=float) + 2 * radius_vox[1]))  # centres fill the padded box
    spheres = []
    frac_solid = 0.0
    while frac_solid < 1 - porosity:
        r = rng.uniform(*radius_vox)
        c = rng.uniform(-r, np.asarray(shape) + r)
        spheres.append([*c, r])
        # Boolean-model estimate of the covered fraction, checked exactly at the end
        frac_solid = 1 - np.exp(-sum(4 / 3 * np.pi * s[3] ** 3 for s in spheres) / vol)
    sp = np.asarray(spheres)
    labels = _sample_spheres(shape, sp, 1)
    fine = _sample_spheres(shape, sp, supersample)
    if flip_fraction > 0:
        import scipy.ndimage as ndi

        edge = labels.astype(bool) ^ ndi.binary_erosion(labels.astype(bool), border_value=1)
        edge |= ndi.binary_dilation(labels.astype(bool)) & ~labels.astype(bool)
        idx = np.flatnonzero(edge)
        flip = rng.choice(idx, size=int(flip_fraction * len(idx)), replace=False)
        labels.flat[flip] ^= 1
    vs = tuple(float(v) for v in voxel_size_nm)
    fvs = tuple(v / supersample for v in vs)
    origin = tuple(-0.5 * v + 0.5 * f for v, f in zip(vs, fvs))
    vm, _ = mesh_voxels(fine, "mc_basic")
    truth = to_trimesh(vm, fvs, origin)
    return Case(name or f"spheres-{seed}", labels, vs, truth, float(fine.mean()))  # type: ignore[arg-type]


def compare_methods(
    cases: Sequence[Case],
    methods: Sequence[str] = METHODS,
    *,
    n_points: int = 20000,
    seed: int = 0,
    block_shape: Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    """One row per (structure, method): mesh metrics, enclosed porosity and its error, time.

    Returns
    -------
    list of dict
        ``structure``, ``method``, the keys of :func:`mesh_metrics`,
        ``porosity``, ``true_porosity``, ``porosity_abs_error``,
        ``voxel_porosity`` (pore voxels of the labels), ``faces``,
        ``watertight``, ``seconds`` (meshing only).
    """
    rows = []
    for case in cases:
        for m in methods:
            t0 = time.perf_counter()
            mesh = mesh_volume(case.labels, m, voxel_size_nm=case.voxel_size_nm, block_shape=block_shape, seed=seed)
            sec = time.perf_counter() - t0
            row: dict[str, Any] = {"structure": case.name, "method": m}
            row.update(mesh_metrics(mesh, case.truth_mesh, n_points=n_points, seed=seed))
            por = enclosed_porosity(mesh, case.labels.shape, case.voxel_size_nm)
            row.update(
                porosity=por,
                true_porosity=case.truth_porosity,
                porosity_abs_error=abs(por - case.truth_porosity),
                voxel_porosity=float(case.labels.mean()),
                faces=int(len(mesh.faces)),
                watertight=bool(mesh.is_watertight),
                seconds=sec,
            )
            rows.append(row)
    return rows


def summarize(rows: Sequence[dict[str, Any]], keys: Sequence[str] = ("chamfer_nm", "hausdorff_nm", "hausdorff95_nm",
              "volume_ratio", "area_ratio", "porosity_abs_error")) -> list[dict[str, Any]]:
    """Mean and standard deviation over structures of each method's metrics, in method order."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    out = []
    for m in methods:
        sel = [r for r in rows if r["method"] == m]
        entry: dict[str, Any] = {"method": m, "n": len(sel)}
        for k in keys:
            v = np.asarray([r[k] for r in sel], dtype=np.float64)
            entry[k] = float(v.mean())
            entry[f"{k}_std"] = float(v.std(ddof=1)) if len(v) > 1 else 0.0
        out.append(entry)
    return out
