"""Export a porelab volume for other tools: a Fiji TIFF, an OME-Zarr pyramid for napari, or raw voxels.

Every writer streams the volume slab by slab (never whole in memory) and is
atomic: the output appears at its path only once complete.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import xarray as xr

from pipeline.errors import UserError
from pipeline.io.export.ome_zarr import NGFF_VERSIONS, write_ome_zarr
from pipeline.io.export.raw import sidecar_path, write_raw
from pipeline.io.export.tiff import write_tiff

__all__ = ["FORMATS", "Exported", "format_for", "export_source", "export_volume", "export_store",
           "write_tiff", "write_ome_zarr", "write_raw", "NGFF_VERSIONS"]

#: Export formats and the file name endings each expects.
FORMATS: dict[str, tuple[str, ...]] = {"tiff": (".tif", ".tiff"), "ome-zarr": (".ome.zarr", ".zarr"), "raw": (".raw",)}


@dataclass(frozen=True)
class Exported:
    """What an export wrote: the format, the files, and the volume's shape, dtype and voxel size."""

    format: str
    files: tuple[Path, ...]
    shape: tuple[int, int, int]
    dtype: str
    voxel_size_nm: tuple[float, float, float]
    levels: int = 1


def format_for(path: str | os.PathLike[str], to: str | None = None) -> str:
    """The export format: ``to`` when given (checked against the name's ending), else the one the ending names.

    Raises
    ------
    UserError
        Unknown ``to``, an ending that names another format, or no ``to``
        and an ending that names none.
    """
    name = Path(path).name.lower()
    named = next((fmt for fmt, ends in FORMATS.items() if name.endswith(ends)), None)
    if to is None:
        if named is None:
            raise UserError(f"{path}: its name does not tell the format; pass --to tiff, ome-zarr or raw")
        return named
    if to not in FORMATS:
        raise UserError(f"--to {to} is not a format; expected tiff, ome-zarr or raw")
    if named is not None and named != to:
        raise UserError(f"{path}: the name is for {named}, not --to {to}; expected a name ending in {' or '.join(FORMATS[to])}")
    return to


def export_source(store: str | os.PathLike[str], *, variable: str | None = None, sample: int | None = None) -> xr.DataArray:
    """The volume to export from a porelab store: its only variable, or ``variable`` (of sample ``sample`` of a dataset).

    Raises
    ------
    UserError
        A missing or unreadable store, a dataset without ``sample``, or what
        :func:`pipeline.io.volume.open_volume` and
        :func:`pipeline.io.stores.volume_from_store` refuse.
    """
    from pipeline.io.stores import volume_from_store
    from pipeline.io.volume import open_volume

    p = Path(store)
    if variable is None and sample is None:
        if p.exists():
            n = _samples(p)
            if n is not None:
                raise UserError(f"{p}: is a dataset of {n} samples; choose one with --sample 0..{n - 1} (and --variable image or labels)")
        return open_volume(p)
    if not p.exists():
        raise UserError(f"{p}: no such store; expected a .zarr folder written by porelab")
    return volume_from_store(p, variable=variable or "image", sample=sample)


def _samples(path: Path) -> int | None:
    """The number of samples of a dataset store, None for a store of volumes."""
    import zarr

    try:
        root = zarr.open_group(str(path), mode="r", use_consolidated=False)
        labels = root.get("labels")
    except Exception:  # noqa: BLE001 - open_volume says what is wrong with it
        return None
    dims = getattr(getattr(labels, "metadata", None), "dimension_names", None)
    return int(labels.shape[0]) if dims and dims[0] == "sample" else None


def export_volume(
    vol: xr.DataArray,
    path: str | os.PathLike[str],
    fmt: str,
    *,
    levels: int | None = None,
    ngff: str = "0.4",
    overwrite: bool = False,
    progress: str | None = None,
) -> Exported:
    """Export ``vol`` to ``path`` as ``fmt`` (``tiff``, ``ome-zarr`` or ``raw``); ``levels`` and ``ngff`` are for OME-Zarr."""
    from pipeline.io.export.downsample import default_levels
    from pipeline.io.volume import voxel_size_of

    voxel = voxel_size_of(vol)
    path = Path(path)
    n_levels = 1
    if fmt == "tiff":
        files: tuple[Path, ...] = (write_tiff(vol, path, overwrite=overwrite, progress=progress),)
    elif fmt == "ome-zarr":
        n_levels = default_levels(voxel, vol.shape) if levels is None else int(levels)
        files = (write_ome_zarr(vol, path, levels=n_levels, version=ngff, overwrite=overwrite, progress=progress),)
    elif fmt == "raw":
        files = (write_raw(vol, path, overwrite=overwrite, progress=progress), sidecar_path(path))
    else:
        raise UserError(f"format {fmt!r} is unknown; expected tiff, ome-zarr or raw")
    return Exported(fmt, files, tuple(int(s) for s in vol.shape), str(vol.dtype), voxel, n_levels)  # type: ignore[arg-type]


def export_store(
    store: str | os.PathLike[str],
    path: str | os.PathLike[str],
    *,
    to: str | None = None,
    variable: str | None = None,
    sample: int | None = None,
    levels: int | None = None,
    ngff: str = "0.4",
    overwrite: bool = False,
    progress: str | None = "export",
) -> Exported:
    """Export a volume of a porelab store (the entry point of ``porelab export``).

    Parameters
    ----------
    store : path
        A volume store, or a dataset store with ``variable`` and ``sample``.
    path : path
        Output: ``*.tif``, ``*.ome.zarr`` or ``*.raw`` (plus ``*.raw.json``).
    to : {"tiff", "ome-zarr", "raw"}, optional
        Format; by default the one ``path``'s name ends with.
    variable, sample
        As in :func:`export_source`.
    levels, ngff
        OME-Zarr pyramid levels (default: until the longest side is at most
        512 voxels) and OME-NGFF version (0.4 or 0.5).
    overwrite : bool
        Replace existing output.
    progress : str, optional
        Label of the progress bar; None for none.

    Raises
    ------
    UserError
        Bad format or name, output that would replace the store itself,
        existing output without ``overwrite``, or a store that cannot be read.
    """
    fmt = format_for(path, to)
    src, out = Path(store).resolve(), Path(path).resolve()
    if out == src or src in out.parents or out in src.parents:
        raise UserError(f"{path}: is the store being exported, inside it or around it; choose another output path")
    if levels is not None and int(levels) < 1:
        raise UserError(f"--levels {levels} is not valid; expected 1 or more pyramid levels")
    vol = export_source(store, variable=variable, sample=sample)
    return export_volume(vol, path, fmt, levels=levels, ngff=ngff, overwrite=overwrite,
                         progress=None if progress is None else f"{progress} {fmt}")
