"""Everything porelab measures on a label volume, as one JSON-able dict."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import dask.array as da
import numpy as np

from pipeline.analyze.porosity import porosity_stats
from pipeline.analyze.psd import fit_lognormal_hist, thickness_histogram
from pipeline.analyze.thickness import local_thickness_dask
from pipeline.analyze.transport import connectivity, geometric_tortuosity
from pipeline.analyze.truth import truth_metrics

__all__ = ["measure", "SSA_METHOD", "SSA_SIGMA"]

#: Isosurface of the specific surface area: gaussian sigma 0.7 voxel, within 1 % of a sphere's area.
SSA_METHOD = "mc_smoothed"
SSA_SIGMA = 0.7


def _data(vol: Any) -> da.Array:
    data = getattr(vol, "data", vol) if hasattr(vol, "dims") else vol
    return data if isinstance(data, da.Array) else da.from_array(np.asarray(data), chunks=(64, 256, 256))


def measure(
    labels: Any,
    voxel_size_nm: Sequence[float],
    *,
    truth: Any = None,
    block_shape: Sequence[int] = (64, 64, 64),
    n_radii: int = 64,
    in_memory_voxels: int = 256_000_000,
    tortuosity: bool = True,
    tortuosity_voxels: int = 32_000_000,
    thickness_store: Any = None,
    probability: Any = None,
) -> dict[str, Any]:
    """Porosity, pore sizes, specific surface, connectivity, tortuosity and truth metrics.

    Parameters
    ----------
    labels : array or xarray volume (z, y, x)
        uint8, 1 = pore; NumPy or dask (read block by block).
    voxel_size_nm : (float, float, float)
    truth : array, optional
        Ground-truth labels of the same shape.
    block_shape : (int, int, int)
        Block of the porosity map.
    n_radii : int
        Most radii of the local-thickness sweep.
    in_memory_voxels : int
        Connectivity needs the volume in memory; above this many voxels it is skipped.
    tortuosity : bool
        Compute the geometric tortuosity (in memory, up to ``tortuosity_voxels``).
    probability : array, optional
        The pore probability the labels came from (a segmentation store's
        ``probability``): the truth metrics then include the cross-entropy.
    thickness_store : path, optional
        Also write the local thickness (nm) there (a zarr volume, block by
        block); the histogram is then read back from it, so that nothing is computed twice.

    Returns
    -------
    dict
        ``porosity`` (global, per_slice, per_block), ``psd`` (histogram
        ``counts``/``edges_nm``, ``fit``, ``r_max_nm``, ``halo_voxels``),
        ``surface`` (area, specific surface per nm), ``connectivity``,
        ``tortuosity``, ``truth`` (when given), ``seconds`` per part, ``skipped``.
    """
    vs = tuple(float(v) for v in voxel_size_nm)
    arr = _data(labels)
    if arr.ndim != 3:
        raise ValueError(f"labels must be 3D (z, y, x); got shape {arr.shape}")
    out: dict[str, Any] = {"shape": list(arr.shape), "voxel_size_nm": list(vs), "seconds": {}, "skipped": {}}
    t0 = time.perf_counter()
    out["porosity"] = porosity_stats(arr, block_shape=block_shape)
    out["seconds"]["porosity"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    pore = arr == 1
    psd: dict[str, Any] = {}
    if 0 < out["porosity"]["porosity"] < 1:
        lt, info = local_thickness_dask(pore, vs, n_radii=n_radii)
        if thickness_store is not None:
            from pipeline.analyze.store import write_blocks
            from pipeline.io.volume import as_volume, open_volume

            write_blocks(as_volume(lt, vs, name="thickness", attrs={"units": "nm", "r_max_nm": info["r_max_nm"]}),
                         thickness_store, block_shape=lt.chunksize, chunks=arr.chunksize)
            lt = open_volume(thickness_store).data
            psd_store = str(thickness_store)
        counts, edges = thickness_histogram(lt, values=np.asarray(info["values_nm"]))
        psd = {"counts": counts.tolist(), "edges_nm": edges.tolist(), "r_max_nm": info["r_max_nm"],
               "halo_voxels": info["halo_voxels"], "n_radii": len(info["radii_nm"])}
        if thickness_store is not None:
            psd["thickness_store"] = psd_store
        try:
            psd["fit"] = fit_lognormal_hist(counts, edges)
        except ValueError as exc:
            out["skipped"]["psd_fit"] = str(exc)
    else:
        out["skipped"]["psd"] = "the volume has no pore or no solid voxel"
    out["psd"] = psd
    out["seconds"]["psd"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    from pipeline.reconstruct.build import surface_area

    area = surface_area(arr, vs, method=SSA_METHOD, params={"sigma": SSA_SIGMA}, block_shape=(128, 128, 256))
    v_total = float(np.prod(np.asarray(arr.shape) * np.asarray(vs)))
    por = out["porosity"]["porosity"]
    out["surface"] = {
        "area_nm2": area,
        "specific_surface_per_nm": area / v_total,
        "specific_surface_pore_per_nm": area / (por * v_total) if por > 0 else float("nan"),
        "method": f"{SSA_METHOD} sigma {SSA_SIGMA}",
    }
    out["seconds"]["surface"] = time.perf_counter() - t0

    n_vox = int(np.prod(arr.shape))
    if n_vox <= in_memory_voxels:
        t0 = time.perf_counter()
        p = np.asarray(pore.compute())
        out["connectivity"] = connectivity(p)
        out["seconds"]["connectivity"] = time.perf_counter() - t0
        if tortuosity and n_vox <= tortuosity_voxels:
            t0 = time.perf_counter()
            out["tortuosity"] = {name: geometric_tortuosity(p, vs, axis=ax) for ax, name in enumerate("zyx")}
            out["seconds"]["tortuosity"] = time.perf_counter() - t0
        elif tortuosity:
            out["skipped"]["tortuosity"] = f"{n_vox} voxels is above tortuosity_voxels={tortuosity_voxels}"
        del p
    else:
        out["skipped"]["connectivity"] = f"{n_vox} voxels is above in_memory_voxels={in_memory_voxels}"

    if truth is not None:
        t0 = time.perf_counter()
        out["truth"] = truth_metrics(arr, _data(truth), probability=None if probability is None else _data(probability))
        out["truth_per_slice"] = [float(v) for v in (_data(truth) == 1).mean(axis=(1, 2)).compute()]
        out["seconds"]["truth"] = time.perf_counter() - t0
    return out
