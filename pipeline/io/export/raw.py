"""Raw export: the voxels as one headerless little-endian file, with a JSON sidecar that says how to read it.

``OUT.raw`` holds z slices one after the other, each row-major (x fastest),
little-endian; ``OUT.raw.json`` gives the shape, dtype, byte order, voxel
size and origin in nm, and the line that opens it in Fiji (an ImageJ macro)
and in NumPy.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from pipeline.io.export.slabs import iter_slabs
from pipeline.io.volume import atomic_dir, origin_of, voxel_size_of

__all__ = ["sidecar_path", "raw_dtype", "raw_sidecar", "write_raw", "read_raw"]

# ImageJ's File > Import > Raw names of the pixel types
_IMAGEJ_TYPES = {"u1": "8-bit", "i2": "16-bit Signed", "u2": "16-bit Unsigned", "i4": "32-bit Signed",
                 "u4": "32-bit Unsigned", "f4": "32-bit Real", "f8": "64-bit Real"}


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    """The JSON sidecar of a raw file: ``OUT.raw`` → ``OUT.raw.json``."""
    p = Path(path)
    return p.with_name(p.name + ".json")


def raw_dtype(dtype: Any) -> np.dtype:
    """The little-endian dtype written for ``dtype`` (bool as uint8)."""
    dt = np.dtype(np.uint8) if np.dtype(dtype) == np.bool_ else np.dtype(dtype)
    return dt.newbyteorder("<") if dt.itemsize > 1 else dt


def raw_sidecar(vol: xr.DataArray, path: str | os.PathLike[str]) -> dict[str, Any]:
    """The sidecar describing ``vol`` written raw at ``path``."""
    dt = raw_dtype(vol.dtype)
    z, y, x = (int(s) for s in vol.shape)
    vz, vy, vx = voxel_size_of(vol)
    where = str(Path(path).resolve())
    code = dt.str.lstrip("<>|=")
    imagej = _IMAGEJ_TYPES.get(code)
    fiji = None if imagej is None else (
        f'run("Raw...", "open=[{where}] image=[{imagej}] width={x} height={y} number={z} little-endian"); '
        f'run("Properties...", "unit=nm pixel_width={vx:g} pixel_height={vy:g} voxel_depth={vz:g}");'
    )
    return {
        "file": Path(path).name,
        "shape": [z, y, x],
        "axes": "zyx (x fastest)",
        "dtype": np.dtype(dt).name,
        "numpy_dtype": dt.str,
        "byte_order": "little",
        "bytes": z * y * x * dt.itemsize,
        "voxel_size_nm": [vz, vy, vx],
        "origin_nm": list(origin_of(vol)),
        "name": str(vol.name or "image"),
        "provenance": vol.attrs.get("provenance"),
        "fiji": fiji,
        "numpy": f'numpy.memmap("{where}", dtype="{dt.str}", mode="r", shape=({z}, {y}, {x}))',
    }


def write_raw(vol: xr.DataArray, path: str | os.PathLike[str], *, overwrite: bool = False, progress: str | None = None) -> Path:
    """Write ``vol`` as a raw file and its sidecar (:func:`sidecar_path`), streamed slab by slab, atomically.

    Parameters
    ----------
    vol : xarray.DataArray
        A (z, y, x) volume with ``voxel_size_nm`` (lazy or in memory).
    path : path
        Destination ``*.raw``. The raw file appears first, its sidecar
        right after, each only once complete.
    overwrite : bool
        Replace existing files.
    progress : str, optional
        Label of a progress bar over slabs.
    """
    dt = raw_dtype(vol.dtype)
    path = Path(path)
    meta = raw_sidecar(vol, path)
    with atomic_dir(sidecar_path(path), overwrite=overwrite) as tmp_meta, atomic_dir(path, overwrite=overwrite) as tmp_raw:
        with open(tmp_raw, "wb") as fh:
            for _, slab in iter_slabs(vol, progress=progress):
                fh.write(np.ascontiguousarray(slab, dtype=dt).data)
        tmp_meta.write_text(json.dumps(meta, indent=2) + "\n")
    return path


def read_raw(path: str | os.PathLike[str]) -> np.memmap:
    """Map a raw file written by :func:`write_raw` (its shape and dtype from the sidecar), read-only."""
    meta = json.loads(sidecar_path(path).read_text())
    return np.memmap(path, dtype=np.dtype(meta["numpy_dtype"]), mode="r", shape=tuple(meta["shape"]))
