"""Volumes as xarray DataArrays over chunked zarr v3 stores.

Data model (see DESIGN.md): dims ``("z", "y", "x")``, coordinates in nanometres,
``attrs["voxel_size_nm"] = [z, y, x]``, labels uint8 with 1 = pore, images in
their native dtype on disk. Every store carries provenance in its attrs.
"""

from __future__ import annotations

import os
import platform
import shutil
import uuid
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
import zarr

from pipeline.errors import UserError

__all__ = [
    "DIMS",
    "DEFAULT_CHUNKS",
    "SUPPORTED_DTYPES",
    "as_volume",
    "check_voxel_size",
    "voxel_size_of",
    "origin_of",
    "is_labels",
    "provenance",
    "compressors_for",
    "consolidate_store",
    "create_volume_store",
    "create_group_store",
    "open_volume",
    "open_array_cached",
    "write_volume",
    "write_volume_two_pass",
    "atomic_dir",
]

DIMS: tuple[str, str, str] = ("z", "y", "x")
#: Variables holding labels (1 = pore) rather than grey values.
LABEL_NAMES = frozenset({"labels", "mask", "segmentation"})
#: Default on-disk chunk (z, y, x): 4 MiB of uint16, a good unit for Dask tasks.
DEFAULT_CHUNKS: tuple[int, int, int] = (32, 256, 256)
SUPPORTED_DTYPES: tuple[np.dtype, ...] = tuple(
    np.dtype(t) for t in ("uint8", "uint16", "int16", "uint32", "float32", "float64", "bool")
)


def check_voxel_size(voxel_size_nm: Sequence[float], *, where: str = "voxel size") -> tuple[float, float, float]:
    """Validate a (z, y, x) voxel size in nanometres and return it as floats.

    Raises
    ------
    UserError
        Unless it holds exactly three finite values greater than zero.
    """
    values = tuple(float(v) for v in voxel_size_nm)
    if len(values) != 3 or not all(np.isfinite(v) and v > 0 for v in values):
        raise UserError(
            f"{where} {list(voxel_size_nm)} is not valid; expected three positive numbers Z,Y,X in nm"
        )
    return values  # type: ignore[return-value]


def as_volume(
    data: np.ndarray | da.Array | Any,
    voxel_size_nm: Sequence[float],
    *,
    name: str = "image",
    attrs: Mapping[str, Any] | None = None,
    origin_nm: Sequence[float] = (0.0, 0.0, 0.0),
) -> xr.DataArray:
    """Wrap a 3D array as a porelab volume.

    Parameters
    ----------
    data : array of shape (z, y, x)
        NumPy, CuPy or dask array. Not copied.
    voxel_size_nm : (float, float, float)
        Voxel edge lengths in nm along z, y, x.
    name : str
        Variable name in the store (``"image"``, ``"labels"``, ``"probability"``...).
    attrs : mapping, optional
        Extra attributes (provenance, diagnostics).
    origin_nm : (float, float, float)
        Coordinate of the first voxel centre in nm.

    Returns
    -------
    xarray.DataArray
        Dims ``("z", "y", "x")``, coordinates in nm, ``attrs["voxel_size_nm"]``.
    """
    if getattr(data, "ndim", None) != 3:
        raise ValueError(f"a volume must be 3D (z, y, x); got shape {getattr(data, 'shape', None)}")
    vs = check_voxel_size(voxel_size_nm)
    coords = {
        dim: (dim, origin_nm[i] + vs[i] * np.arange(data.shape[i], dtype=np.float64), {"units": "nm"})
        for i, dim in enumerate(DIMS)
    }
    out_attrs = dict(attrs or {})
    out_attrs["voxel_size_nm"] = list(vs)
    return xr.DataArray(data, dims=DIMS, coords=coords, name=name, attrs=out_attrs)


def voxel_size_of(vol: xr.DataArray) -> tuple[float, float, float]:
    """Return the (z, y, x) voxel size in nm recorded on a volume."""
    try:
        return check_voxel_size(vol.attrs["voxel_size_nm"])
    except KeyError:
        raise UserError(f"volume {vol.name!r} has no voxel_size_nm attribute") from None


def origin_of(vol: xr.DataArray) -> tuple[float, float, float]:
    """Centre of the first voxel (z, y, x) in nm, from the volume's coordinates (0 along a dim without them)."""
    return tuple(float(vol[d].values[0]) if d in vol.coords and vol.sizes[d] else 0.0 for d in DIMS)  # type: ignore[return-value]


def is_labels(vol: xr.DataArray) -> bool:
    """True for a label volume (variable ``labels``, ``mask`` or ``segmentation``, or boolean data), False for grey values."""
    return str(vol.name) in LABEL_NAMES or vol.dtype == np.bool_


def provenance(stage: str, params: Mapping[str, Any] | None = None, *, job_hash: str | None = None) -> dict[str, Any]:
    """Provenance record stored in a store's attrs: stage, parameters, versions."""
    import importlib.metadata as md

    import pipeline

    versions: dict[str, str] = {"porelab": pipeline.__version__, "python": platform.python_version()}
    for pkg in ("numpy", "scipy", "dask", "xarray", "zarr", "scikit-image", "torch", "ray"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            continue
    return {
        "stage": stage,
        "parameters": _jsonable(dict(params or {})),
        "job_hash": job_hash,
        "versions": versions,
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def compressors_for(name: str) -> list[Any]:
    """Blosc with bit shuffling: zstd for label volumes (about twice lz4's ratio on
    masks, which are small), lz4 for grey images (noisy data compresses little
    whatever the codec; lz4 does it 3-5x faster than zstd, which decides ingest speed)."""
    cname = "zstd" if name in LABEL_NAMES else "lz4"
    return [zarr.codecs.BloscCodec(cname=cname, clevel=3 if cname == "zstd" else 5, shuffle=zarr.codecs.BloscShuffle.bitshuffle)]


def consolidate_store(path: str | os.PathLike[str]) -> None:
    """Write the zarr v3 consolidated metadata of the store at ``path`` (in its root ``zarr.json``).

    Plain ``xarray.open_zarr(path)`` / ``xarray.open_dataarray(path, engine="zarr")``
    read it and open the store silently (without it they warn that they fell
    back to reading every node). It is a copy of every node's metadata and
    attrs: call this again after changing attrs or adding nodes, so that
    it never goes stale. porelab's own readers do not use it.
    """
    with warnings.catch_warnings():
        # "not part of the Zarr format 3 specification": xarray and zarr-python read it, which is what it is for
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        # plain files kept inside groups on purpose (a dataset's records/*.json, figures/*.png)
        warnings.filterwarnings("ignore", message="Object at .* is not recognized as a component", category=UserWarning)
        zarr.consolidate_metadata(str(path), zarr_format=3)


def create_volume_store(
    path: str | os.PathLike[str],
    template: xr.DataArray,
    *,
    chunks: Sequence[int] | None = None,
    dtype: Any = None,
    fill_value: Any = 0,
    codec: str | None = None,
) -> zarr.Array:
    """Create an empty zarr v3 store for a volume shaped like ``template``.

    Writes the metadata, coordinates and attrs of ``template`` (its data is not
    written) and consolidated metadata (:func:`consolidate_store`), and returns
    the zarr array for the variable, ready for chunk-aligned region writes
    (see :mod:`pipeline.engine.blocks`). Block writes leave the metadata as it
    is; whoever changes the attrs afterwards calls :func:`consolidate_store`.

    Parameters
    ----------
    path : path
        Store folder (``*.zarr``). Replaced if it exists.
    template : xarray.DataArray
        Dims, coords, attrs and name of the volume. May be lazy (dask).
    chunks : (int, int, int), optional
        On-disk chunk shape; defaults to :data:`DEFAULT_CHUNKS` clipped to the shape.
    dtype : dtype, optional
        On-disk dtype, default the template's.
    codec : str, optional
        A codec name of :data:`pipeline.io.codecs.CODEC_NAMES` other than ``"auto"``
        (``"none"`` stores raw chunks); default :func:`compressors_for` the variable.
    """
    name = str(template.name or "image")
    arrays = create_group_store(path, template, {name: dtype or template.dtype}, chunks=chunks, fill_value=fill_value,
                                codec=codec)
    return arrays[name]


def create_group_store(
    path: str | os.PathLike[str],
    template: xr.DataArray,
    variables: Mapping[str, Any],
    *,
    chunks: Sequence[int] | None = None,
    fill_value: Any = 0,
    primary: str | None = None,
    attrs: Mapping[str, Any] | None = None,
    codec: str | None = None,
    variable_chunks: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, zarr.Array]:
    """Create an empty zarr v3 store holding several volumes of ``template``'s shape and coordinates.

    Parameters
    ----------
    path : path
        Store folder; replaced if it exists.
    template : xarray.DataArray
        Dims, coords and attrs (given to every variable).
    variables : mapping of str to dtype
        Variable names and their on-disk dtypes (``{"probability": "float16", "mask": "uint8"}``).
    chunks, fill_value
        As in :func:`create_volume_store`.
    primary : str, optional
        The variable :func:`open_volume` opens when none is named (stored as the
        root attribute ``primary_variable``); default the first one.
    attrs : mapping, optional
        Attributes of the store's root.
    codec : str, optional
        As in :func:`create_volume_store`; the same for every variable.
    variable_chunks : mapping of str to chunks, optional
        Chunks of some variables other than ``chunks`` (volumes computed in
        other blocks, see :func:`pipeline.engine.blocks.nesting_chunks`).

    Raises
    ------
    ValueError
        No variables, or an unknown codec name (or ``"auto"``, which the caller resolves).

    Returns
    -------
    dict of str to zarr.Array
    """
    path = Path(path)
    if not variables:
        raise ValueError("a store needs at least one variable")
    if codec is not None:
        from pipeline.io.codecs import compressors_named

        named = compressors_named(codec)
    chunks = tuple(min(int(c), int(s)) for c, s in zip(chunks or DEFAULT_CHUNKS, template.shape))
    own = {str(n): tuple(min(int(c), int(s)) for c, s in zip(c_n, template.shape)) for n, c_n in (variable_chunks or {}).items()}
    unknown = set(own) - {str(n) for n in variables}
    if unknown:
        raise ValueError(f"variable_chunks names {sorted(unknown)}, which are not among the variables {list(variables)}")
    var_chunks = {str(n): own.get(str(n), chunks) for n in variables}
    var_attrs = _jsonable(dict(template.attrs))
    ds = xr.Dataset(
        {str(n): (template.dims, da.zeros(template.shape, dtype=np.dtype(dt), chunks=var_chunks[str(n)]), var_attrs)
         for n, dt in variables.items()},
        coords=template.coords,
        attrs={**_jsonable(dict(attrs or {})), "primary_variable": primary or next(iter(variables))},
    )
    if path.exists():
        shutil.rmtree(path)
    ds.to_zarr(
        path,
        mode="w",
        compute=False,
        zarr_format=3,
        consolidated=False,
        encoding={
            str(n): {"chunks": var_chunks[str(n)], "compressors": named if codec is not None else compressors_for(str(n)),
                     "fill_value": fill_value}
            for n in variables
        },
    )
    consolidate_store(path)
    return {str(n): zarr.open_array(path / str(n), mode="r+") for n in variables}


def open_volume(path: str | os.PathLike[str], name: str | None = None) -> xr.DataArray:
    """Open a volume store lazily as an xarray DataArray backed by dask.

    Parameters
    ----------
    path : path
        A ``*.zarr`` store written by porelab.
    name : str, optional
        Variable to open; by default the only data variable of the store, or
        the store's ``primary_variable`` (a segmentation's ``mask``).

    Raises
    ------
    UserError
        If the path does not exist, is not a zarr store, holds no volume or
        was left incomplete by an interrupted write.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such store; expected a .zarr folder written by porelab")
    try:
        ds = xr.open_zarr(path, zarr_format=3, consolidated=False, chunks={})
    except Exception as exc:  # noqa: BLE001 - any failure to open is a user-facing error
        raise UserError(f"{path}: cannot be opened as a zarr v3 store ({exc.__class__.__name__}: {exc})") from None
    names = [str(n) for n in ds.data_vars]
    if name is None:
        primary = ds.attrs.get("primary_variable")
        if len(names) == 1:
            name = names[0]
        elif primary in names:
            name = primary
        else:
            raise UserError(f"{path}: holds variables {names}; name the one to open")
    if name not in ds:
        raise UserError(f"{path}: has no variable {name!r}; it holds {names}")
    vol = ds[name]
    if ds.attrs.get("incomplete") or vol.attrs.get("incomplete"):
        raise UserError(f"{path}: was left incomplete by an interrupted write; run the command again")
    if vol.dims != DIMS:
        raise UserError(f"{path}: variable {name!r} has dims {vol.dims}; expected {DIMS}")
    return vol.copy(data=_light_read(path / name, vol.data))


class _ChunkReader:
    """Reads a zarr array's regions by path: what a read task pickles is the path, not the array's metadata.

    xarray's lazily indexed array pickles the whole zarr metadata, attributes
    included, into the graph; a per-slice table in the attrs (a correction's
    drift of 16,400 slices: 1.4 MB) then travels with every block computed on
    its own (``store_blocks``, two-pass writes): quadratic in the stack's
    length. The array is opened once per process (:func:`open_array_cached`).
    """

    def __init__(self, path: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.path, self.shape, self.dtype, self.ndim = path, tuple(shape), np.dtype(dtype), len(shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        return open_array_cached(self.path)[key]


_OPEN: dict[tuple[str, str], tuple[tuple[int, int], zarr.Array]] = {}


def _stamp(path: Path) -> tuple[int, int]:
    """Identity of an array's metadata file: a rewritten store has a new one (inode, mtime)."""
    st = os.stat(path / "zarr.json")
    return st.st_ino, st.st_mtime_ns


def open_array_cached(path: str | os.PathLike[str], mode: str = "r") -> zarr.Array:
    """``zarr.open_array(path, mode=mode)``, opened once per process while its ``zarr.json`` stays the same.

    Opening parses the array's metadata, attributes included: a store with
    per-slice tables in its attrs (1.4 MB of JSON for 16,400 slices) cost
    tens of ms per block read or written, a third of a two-pass write's time.
    A store rewritten or whose attrs change (a new ``zarr.json``) is opened again.
    """
    key = (str(path), mode)
    stamp = _stamp(Path(path))
    hit = _OPEN.get(key)
    if hit is None or hit[0] != stamp:
        if len(_OPEN) > 64:
            _OPEN.clear()
        hit = _OPEN[key] = (stamp, zarr.open_array(str(path), mode=mode))
    return hit[1]


def _light_read(path: Path, lazy: da.Array) -> da.Array:
    """``lazy`` (xarray's reader of the store array at ``path``) as a dask array of the same chunks whose tasks hold only the path."""
    from dask.base import tokenize

    stamp = _stamp(path)
    reader = _ChunkReader(str(path), lazy.shape, lazy.dtype)
    name = "read-" + tokenize(str(path.resolve()), stamp, lazy.shape, lazy.dtype.str, lazy.chunks)
    return da.from_array(reader, chunks=lazy.chunks, name=name, asarray=False, fancy=False,
                         meta=np.empty((0,) * lazy.ndim, dtype=lazy.dtype))


class atomic_dir:
    """Context manager giving a temporary sibling path renamed to ``path`` on success.

    The caller writes a folder (a store) or a single file there. On an
    exception the temporary folder or file is removed, so nothing
    half-written is left where a finished result is expected.
    """

    def __init__(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> None:
        self.path = Path(path)
        self.overwrite = overwrite
        self.tmp = self.path.with_name(f".{self.path.name}.partial-{uuid.uuid4().hex[:8]}")

    def __enter__(self) -> Path:
        if self.path.exists() and not self.overwrite:
            raise UserError(f"{self.path}: already exists; pass --overwrite to replace it")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return self.tmp

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            _remove(self.tmp)
            return
        if self.path.is_dir() or self.tmp.is_dir():  # a file replaces a file atomically; a folder must go first
            _remove(self.path)
        os.replace(self.tmp, self.path)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def write_volume(
    vol: xr.DataArray,
    path: str | os.PathLike[str],
    *,
    chunks: Sequence[int] | None = None,
    overwrite: bool = False,
    progress: str | None = None,
) -> Path:
    """Write a (possibly lazy) volume to a zarr v3 store, atomically.

    The volume is computed block by block (never whole in memory when it is a
    dask array) into a temporary folder that is renamed to ``path`` only when
    every block is written.

    Parameters
    ----------
    vol : xarray.DataArray
        Volume with dims (z, y, x) and ``voxel_size_nm``.
    path : path
        Destination ``*.zarr`` folder.
    chunks : (int, int, int), optional
        On-disk chunk shape (default :data:`DEFAULT_CHUNKS`).
    overwrite : bool
        Replace an existing store instead of raising :class:`UserError`.
    progress : str, optional
        Label of a progress bar over blocks; None for no bar.
    """
    from pipeline.engine.blocks import store_blocks

    path = Path(path)
    with atomic_dir(path, overwrite=overwrite) as tmp:
        target = create_volume_store(tmp, vol, chunks=chunks)
        data = vol.data if isinstance(vol.data, da.Array) else da.from_array(np.asarray(vol.data), chunks=target.chunks)
        store_blocks(data, target, markers=None, progress=progress)
    return path


def write_volume_two_pass(
    vol: xr.DataArray,
    path: str | os.PathLike[str],
    *,
    summary: Any,
    finish: Any,
    apply: Any,
    dtype: Any = None,
    chunks: Sequence[int] | None = None,
    overwrite: bool = False,
    progress: str | None = None,
) -> Path:
    """Write ``apply(vol, finish(sum of summary(block)))`` to a zarr v3 store, computing ``vol`` once, atomically.

    The out-of-core form of :func:`write_volume` for values that need a
    statistic of the whole volume (normalisation by global percentiles):
    :func:`pipeline.engine.two_pass.store_two_pass` writes ``vol``'s blocks
    while summarising them, then rewrites each in place; no block is kept in
    memory. The state returned by ``finish`` is merged into the store's
    attrs. The store appears at ``path`` only when both passes are done.

    Parameters
    ----------
    vol : xarray.DataArray
        The volume before ``apply`` (lazy); its attrs go to the store.
    path : path
        Destination ``*.zarr`` folder.
    summary, finish, apply : callable
        As in :func:`pipeline.engine.two_pass.store_two_pass`.
    dtype : dtype, optional
        The store's dtype (both passes), default ``vol``'s.
    chunks, overwrite, progress
        As in :func:`write_volume`.
    """
    from pipeline.engine.two_pass import store_two_pass

    path = Path(path)
    with atomic_dir(path, overwrite=overwrite) as tmp:
        markers = tmp.with_name(f"{tmp.name}.markers")
        try:
            target = create_volume_store(tmp, vol, chunks=chunks, dtype=dtype)
            data = vol.data if isinstance(vol.data, da.Array) else da.from_array(np.asarray(vol.data), chunks=target.chunks)
            result = store_two_pass(data, target, markers=markers, summary=summary, finish=finish, apply=apply, progress=progress)
            target.attrs.update(_jsonable(result.state))
            consolidate_store(tmp)
        finally:
            shutil.rmtree(markers, ignore_errors=True)
    return path
