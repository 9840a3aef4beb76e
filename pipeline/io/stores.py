"""Volumes taken out of porelab zarr stores: one variable, one sample of a dataset."""

from __future__ import annotations

import os
from pathlib import Path

import xarray as xr

from pipeline.errors import UserError
from pipeline.io.volume import DIMS, as_volume, check_voxel_size

__all__ = ["is_zarr_store", "volume_from_store", "probability_of"]


def is_zarr_store(path: str | os.PathLike[str]) -> bool:
    """True for a folder holding zarr v3 metadata."""
    return (Path(path) / "zarr.json").is_file()


def volume_from_store(
    path: str | os.PathLike[str],
    *,
    variable: str = "image",
    sample: int | None = None,
    voxel_size_nm: tuple[float, float, float] | None = None,
) -> xr.DataArray:
    """A lazy (z, y, x) volume from a volume store or a dataset store.

    Parameters
    ----------
    path : path
        A porelab zarr store: a volume, or a dataset with a ``sample`` dimension.
    variable : str
        Variable to read (``"image"`` or ``"labels"`` in a dataset).
    sample : int, optional
        Sample index; required when the variable has a ``sample`` dimension.
    voxel_size_nm : (float, float, float), optional
        Overrides the voxel size recorded in the store.

    Raises
    ------
    UserError
        Unknown variable, sample out of range, or no voxel size anywhere.
    """
    p = Path(path)
    try:
        ds = xr.open_zarr(p, zarr_format=3, consolidated=False, chunks={})
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"{p}: cannot be opened as a zarr v3 store ({exc.__class__.__name__}: {exc})") from None
    if variable not in ds.data_vars:
        raise UserError(f"{p}: has no variable {variable!r}; it holds {sorted(map(str, ds.data_vars))}")
    var = ds[variable]
    if "sample" in var.dims:
        n = var.sizes["sample"]
        if sample is None:
            raise UserError(f"{p}: holds {n} samples; set sample: to one of 0..{n - 1}")
        if not 0 <= sample < n:
            raise UserError(f"{p}: sample {sample} is out of range; expected 0..{n - 1}")
        var = var.isel(sample=sample, drop=True)
    elif sample is not None:
        raise UserError(f"{p}: variable {variable!r} has no samples, but sample: {sample} was given")
    if var.dims != DIMS:
        raise UserError(f"{p}: variable {variable!r} has dims {var.dims}; expected {DIMS}")
    recorded = var.attrs.get("voxel_size_nm") or ds.attrs.get("voxel_size_nm")
    voxel = voxel_size_nm or recorded
    if voxel is None:
        raise UserError(f"{p}: records no voxel size; set voxel_size_nm: [Z, Y, X] in nm")
    voxel = check_voxel_size(voxel, where=f"{p} voxel size")
    attrs = {k: v for k, v in var.attrs.items() if k != "voxel_size_nm"}
    attrs.update(source=str(p), source_variable=variable)
    if sample is not None:
        attrs["source_sample"] = int(sample)
    return as_volume(var.data, voxel, name=variable if variable != "image" else "image", attrs=attrs)


def probability_of(path: str | os.PathLike[str]) -> xr.DataArray | None:
    """The pore probability a segmentation store holds beside its mask, or in the separate store it names; else None."""
    from pipeline.io.volume import open_volume

    p = Path(path)
    if (p / "probability").is_dir():
        return open_volume(p, "probability")
    try:
        other = open_volume(p).attrs.get("probability_store")
    except UserError:
        return None
    if other and (Path(other) / "probability").is_dir():
        return open_volume(other, "probability")
    return None
