"""Everything porelab measures on a label volume, as one JSON-able dict."""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np

from pipeline.analyze.porosity import porosity_stats
from pipeline.analyze.psd import distribution_summary, fit_lognormal_hist, thickness_histogram
from pipeline.analyze.thickness import local_thickness_dask
from pipeline.analyze.transport import BYTES_PER_VOXEL, connectivity, geometric_tortuosity, tortuosity_factor
from pipeline.analyze.truth import truth_metrics
from pipeline.engine.blocks import centred_box

__all__ = ["measure", "SSA_METHOD", "SSA_SIGMA", "TORTUOSITY_METHODS", "TRANSPORT_VOXELS", "CENTRE_VOXELS"]

#: What ``tortuosity_method`` can ask for.
TORTUOSITY_METHODS = ("factor", "geometric", "both")
#: Largest volume (voxels) for the transport measures: 64 Mvox, about 1.9 GiB for the diffusion solve (31 B/voxel).
TRANSPORT_VOXELS = 64 * 2**20
#: The centred sub-volume of ``transport_roi="centre"`` on a larger volume: 16.8 Mvox (256³ for a cube), a few
#: minutes per axis of the diffusion solve on 2 cores.
CENTRE_VOXELS = 2**24

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
    tortuosity_method: str = "factor",
    solid_tortuosity: bool = False,
    transport_voxels: int = TRANSPORT_VOXELS,
    transport_roi: Sequence[Sequence[int]] | str | None = None,
    thickness_store: Any = None,
    probability: Any = None,
    progress: str | None = None,
    scratch_dir: Any = None,
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
        Connectivity needs the volume in memory; above this many voxels it is
        skipped, or measured on the centred sub-volume with ``transport_roi="centre"``.
    tortuosity : bool
        Measure the transport (``False``: recorded under ``skipped``).
    tortuosity_method : {"factor", "geometric", "both"}
        The tortuosity factor of steady diffusion per axis (with the
        effective diffusivity and MacMullin number), the geometric
        tortuosity per axis (shortest paths, cheaper), or both.
    solid_tortuosity : bool
        Also the tortuosity factor of the solid phase.
    transport_voxels : int
        Largest volume for the transport measures (in memory, about
        ``BYTES_PER_VOXEL`` + 6 bytes per voxel); above it they are skipped
        with the reason, unless ``transport_roi`` picks a sub-volume.
    transport_roi : ((z0, z1), (y0, y1), (x0, x1)) or "centre", optional
        Measure the transport on this sub-volume (voxel indices, end
        excluded). ``"centre"``: the whole volume where it fits
        ``transport_voxels``, else its centred sub-volume of
        :data:`CENTRE_VOXELS` voxels (in the volume's proportions), and
        the connectivity of a volume above ``in_memory_voxels`` on the
        same sub-volume; each records its ``roi``.
    probability : array, optional
        The pore probability the labels came from (a segmentation store's
        ``probability``): the truth metrics then include the cross-entropy.
    thickness_store : path, optional
        Also write the local thickness (nm) there (a zarr volume, block by
        block); the histogram is then read back from it, so that nothing is computed twice.
    progress : str, optional
        Prefix of the progress bars of the long parts (``"<progress>: porosity"``...).
    scratch_dir : path, optional
        A folder every worker reads and writes (a run's work folder) for the
        local thickness's distances (4 bytes per voxel while it runs, removed
        after): a volume of several blocks then needs one distance transform,
        not two. Without it each block computes its own again.

    Returns
    -------
    dict
        ``porosity`` (``porosity.porosity`` the global value, ``per_slice``,
        ``per_block``), ``psd`` (histogram ``counts``/``edges_nm``, the
        distribution's own ``median_nm``/``mean_nm``/percentiles, ``fit``
        with its goodness and ``fit.poor``, ``r_max_nm``, ``halo_voxels``),
        ``surface`` (area, specific surface per nm), ``connectivity``,
        ``transport`` (``pore``/``solid``: per axis ``tau``,
        ``effective_diffusivity``, ``macmullin``...; ``geometric``: per axis;
        ``roi``), ``truth`` (when given), ``seconds`` per part, ``skipped``
        (every measurement left out, with the reason).
    """
    vs = tuple(float(v) for v in voxel_size_nm)
    if tortuosity_method not in TORTUOSITY_METHODS:
        raise ValueError(f"tortuosity_method {tortuosity_method!r} is unknown; expected one of {', '.join(TORTUOSITY_METHODS)}")
    arr = _data(labels)
    if arr.ndim != 3:
        raise ValueError(f"labels must be 3D (z, y, x); got shape {arr.shape}")
    out: dict[str, Any] = {"shape": list(arr.shape), "voxel_size_nm": list(vs), "seconds": {}, "skipped": {}}
    t0 = time.perf_counter()
    def bar(part: str) -> str | None:
        return None if progress is None else f"{progress}: {part}"

    out["porosity"] = porosity_stats(arr, block_shape=block_shape, progress=bar("porosity"))
    out["seconds"]["porosity"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    pore = arr == 1
    psd: dict[str, Any] = {}
    if 0 < out["porosity"]["porosity"] < 1:
        # one name: a store left by a run that was killed is replaced by the next, not kept beside it
        scratch = None if scratch_dir is None else Path(scratch_dir) / "thickness-distances.zarr"
        try:
            psd = _pore_sizes(pore, arr, vs, n_radii, thickness_store, scratch, bar, out["skipped"])
        finally:
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)
    else:
        out["skipped"]["psd"] = "the volume has no pore or no solid voxel"
    out["psd"] = psd
    out["seconds"]["psd"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    from pipeline.reconstruct.build import surface_area

    area = surface_area(arr, vs, method=SSA_METHOD, params={"sigma": SSA_SIGMA}, block_shape=(128, 128, 256),
                        progress=bar("surface"))
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
        out["connectivity"] = connectivity(np.asarray(pore.compute()))
        out["seconds"]["connectivity"] = time.perf_counter() - t0
    elif isinstance(transport_roi, str) and transport_roi == "centre":
        t0 = time.perf_counter()
        box = centred_box(arr.shape, min(CENTRE_VOXELS, in_memory_voxels))
        assert box is not None  # the volume is above in_memory_voxels
        region = tuple(slice(a, b) for a, b in box)
        out["connectivity"] = connectivity(np.asarray(pore[region].compute())) | {"roi": [list(r) for r in box]}
        out["seconds"]["connectivity"] = time.perf_counter() - t0
    else:
        out["skipped"]["connectivity"] = (f"{n_vox} voxels is above in_memory_voxels={in_memory_voxels}; "
                                          "transport_roi='centre' measures it on the centred sub-volume")

    if not tortuosity:
        out["skipped"]["tortuosity"] = "not asked for (tortuosity=False, --no-tortuosity)"
    else:
        t0 = time.perf_counter()
        _transport(out, arr, vs, tortuosity_method, solid_tortuosity, transport_voxels, transport_roi)
        out["seconds"]["tortuosity"] = time.perf_counter() - t0

    if truth is not None:
        t0 = time.perf_counter()
        out["truth"] = truth_metrics(arr, _data(truth), probability=None if probability is None else _data(probability))
        out["truth_per_slice"] = [float(v) for v in (_data(truth) == 1).mean(axis=(1, 2)).compute()]
        out["seconds"]["truth"] = time.perf_counter() - t0
    return out


def _pore_sizes(pore: Any, arr: Any, vs: tuple[float, ...], n_radii: int, thickness_store: Any, scratch: Path | None,
                bar: Any, skipped: dict[str, str]) -> dict[str, Any]:
    """The pore-size distribution by local thickness (written to ``thickness_store`` when given)."""
    lt, info = local_thickness_dask(pore, vs, n_radii=n_radii, progress=bar("largest pore"), scratch=scratch)
    if thickness_store is not None:
        from pipeline.analyze.store import write_blocks
        from pipeline.io.volume import as_volume, open_volume

        write_blocks(as_volume(lt, vs, name="thickness", attrs={"units": "nm", "r_max_nm": info["r_max_nm"]}),
                     thickness_store, block_shape=lt.chunksize, chunks=arr.chunksize, progress=bar("local thickness"))
        lt = open_volume(thickness_store).data
    counts, edges = thickness_histogram(lt, values=np.asarray(info["values_nm"]),
                                        progress=bar("pore sizes" if thickness_store is not None else "local thickness"))
    psd: dict[str, Any] = {"counts": counts.tolist(), "edges_nm": edges.tolist(), "r_max_nm": info["r_max_nm"],
                           "halo_voxels": info["halo_voxels"], "n_radii": len(info["radii_nm"])}
    if thickness_store is not None:
        psd["thickness_store"] = str(thickness_store)
    psd.update(distribution_summary(counts, edges))
    try:
        psd["fit"] = fit_lognormal_hist(counts, edges)
    except ValueError as exc:
        skipped["psd_fit"] = str(exc)
    return psd


def _transport(out: dict[str, Any], arr: da.Array, vs: tuple[float, ...], method: str, solid: bool, limit: int,
               roi: Sequence[Sequence[int]] | str | None) -> None:
    """The transport measures into ``out["transport"]`` (or the reason under ``out["skipped"]``)."""
    region = tuple(slice(0, n) for n in arr.shape)
    if isinstance(roi, str):
        if roi != "centre":
            raise ValueError(f"transport_roi {roi!r} is unknown; expected 'centre' or ((z0, z1), (y0, y1), (x0, x1))")
        roi = centred_box(arr.shape, min(CENTRE_VOXELS, limit)) if int(np.prod(arr.shape)) > limit else None
    if roi is not None:
        region = tuple(slice(int(a), int(b)) for a, b in roi)
        if len(region) != 3 or any(not 0 <= s.start < s.stop <= n for s, n in zip(region, arr.shape)):
            raise ValueError(f"transport_roi {[list(r) for r in roi]} is not inside the volume {list(arr.shape)}; "
                             "expected (start, stop) per axis with 0 <= start < stop <= size")
    n_vox = int(np.prod([s.stop - s.start for s in region]))
    if n_vox > limit:
        out["skipped"]["tortuosity"] = (
            f"{n_vox} voxels is above transport_voxels={limit} (about {(BYTES_PER_VOXEL + 6) * limit / 2**30:.1f} GiB); "
            "measure a sub-volume with transport_roi (--transport-roi Z0:Z1,Y0:Y1,X0:X1)")
        return
    lab = np.asarray(arr[region].compute())
    res: dict[str, Any] = {"roi": [[s.start, s.stop] for s in region], "method": method}
    phases = [("pore", 1)] + ([("solid", 0)] if solid else [])
    if method in ("factor", "both"):
        for name, value in phases:
            ph = lab == value
            res[name] = {ax: tortuosity_factor(ph, vs, axis=i) for i, ax in enumerate("zyx")}
            del ph
    if method in ("geometric", "both"):
        ph = lab == 1
        res["geometric"] = {ax: geometric_tortuosity(ph, vs, axis=i) for i, ax in enumerate("zyx")}
    out["transport"] = res


def summary_line(m: dict[str, Any]) -> str:
    """One line of what :func:`measure` found, as ``porelab measure`` prints it.

    The pore size is the distribution's own median; the log-normal fit's
    median comes beside it only with its goodness of fit (KS distance), and
    "poor fit" when :data:`pipeline.analyze.psd.FIT_KS_MAX` is passed.
    """
    parts = [f"porosity {m['porosity']['porosity']:.4f}"]
    psd = m.get("psd") or {}
    if "median_nm" in psd:
        txt = f"pore size (local thickness, volume-weighted) median {psd['median_nm']:.1f} nm, mean {psd['mean_nm']:.1f} nm"
        fit = psd.get("fit")
        if fit:
            txt += (f" (log-normal fit: median {fit['median_nm']:.1f} nm, σ {fit['sigma']:.2f}, KS {fit['ks']:.3f}"
                    + (", poor fit" if fit.get("poor") else "") + ")")
        parts.append(txt)
    parts.append(f"specific surface {m['surface']['specific_surface_per_nm']:.4g} /nm")
    tr = m.get("transport") or {}
    for phase in ("pore", "solid"):
        if phase in tr:
            parts.append(f"{phase} tortuosity factor " + " ".join(f"{a} {_num(v['tau'])}" for a, v in tr[phase].items())
                         + ", MacMullin " + " ".join(f"{a} {_num(v['macmullin'])}" for a, v in tr[phase].items()))
    if "geometric" in tr:
        parts.append("geometric tortuosity " + " ".join(f"{a} {_num(v)}" for a, v in tr["geometric"].items()))
    if "truth" in m:
        parts.append(f"IoU {m['truth']['iou_pore']:.3f}, porosity error {m['truth']['porosity_error']:+.4f}"
                     + (f", CE {m['truth']['ce']:.4f}" if "ce" in m["truth"] else ""))
    if m.get("skipped"):
        parts.append("skipped: " + ", ".join(sorted(m["skipped"])))
    return ", ".join(parts)


def _num(v: float | None) -> str:
    # metrics read back from JSON hold null where the value was infinite (no path) or undefined
    return f"{v:.3f}" if v is not None and np.isfinite(v) else "none (no path)"
