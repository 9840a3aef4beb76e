"""OME-Zarr export: a multiscale pyramid with its physical scale in nanometres, for napari, Fiji and the web viewers.

OME-NGFF 0.4 (zarr v2, read by every NGFF tool today) or 0.5 (zarr v3). One
pass over the volume: each slab is written to level 0 and, once a whole
chunk row of a level is complete, downsampled into the next, so every level
is written chunk-aligned and no level is ever whole in memory. Grey levels
are block means, labels block modes (see :mod:`.downsample`); each level's
``coordinateTransformations`` give its voxel size (scale) and the centre of
its first voxel (translation) in nm, so every level lands on the same
coordinates as the volume.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
import zarr

import pipeline
from pipeline.engine.blocks import block_regions
from pipeline.errors import UserError
from pipeline.io.export.downsample import default_levels, downsample_mean, downsample_mode, pyramid_factors
from pipeline.io.export.slabs import iter_slabs
from pipeline.io.volume import DIMS, atomic_dir, compressors_for, is_labels, origin_of, voxel_size_of

__all__ = ["NGFF_VERSIONS", "OME_CHUNKS", "write_ome_zarr", "multiscales_metadata"]

NGFF_VERSIONS: tuple[str, ...] = ("0.4", "0.5")
#: Chunk (z, y, x) of every level, clipped to the level's shape.
OME_CHUNKS: tuple[int, int, int] = (32, 256, 256)
#: Slices of the next level made per downsampling call (bounds its temporaries).
DOWNSAMPLE_SLICES: int = 4
#: Colour of pore voxels in viewers that read NGFF label metadata (napari); solid (0) is transparent.
PORE_RGBA: list[int] = [255, 170, 0, 255]


def multiscales_metadata(
    name: str,
    voxel_size_nm: Sequence[float],
    origin_nm: Sequence[float],
    factors: Sequence[Sequence[int]],
    *,
    labels: bool,
    version: str,
) -> dict[str, Any]:
    """The NGFF ``multiscales`` entry of a (z, y, x) pyramid whose level ``i + 1`` is level ``i`` downsampled by ``factors[i]``."""
    cumulative = [np.ones(3)]
    for f in factors:
        cumulative.append(cumulative[-1] * np.asarray(f, dtype=np.float64))
    vs, org = np.asarray(voxel_size_nm, np.float64), np.asarray(origin_nm, np.float64)
    datasets = [
        {
            "path": str(level),
            "coordinateTransformations": [
                {"type": "scale", "scale": [float(v) for v in vs * c]},
                # a block's centre: (c - 1) / 2 voxels of level 0 past the centre of its first voxel
                {"type": "translation", "translation": [float(v) for v in org + (c - 1) / 2 * vs]},
            ],
        }
        for level, c in enumerate(cumulative)
    ]
    entry: dict[str, Any] = {
        "name": name,
        "axes": [{"name": d, "type": "space", "unit": "nanometer"} for d in DIMS],
        "datasets": datasets,
        "type": "mode" if labels else "mean",
        "metadata": {
            "description": "block mode, ties to the block's first voxel" if labels else "block mean",
            "method": f"pipeline.io.export.downsample.{'downsample_mode' if labels else 'downsample_mean'}",
            "version": pipeline.__version__,
            "factors": [list(map(int, f)) for f in factors],
        },
    }
    if version == "0.4":
        entry["version"] = "0.4"
    return entry


@dataclass
class _Level:
    """One pyramid level being written: slices arrive in z order and go out in whole chunk rows."""

    array: Any  # zarr.Array
    down: Callable[[np.ndarray, Sequence[int]], np.ndarray]
    factor: tuple[int, int, int] | None = None
    next: _Level | None = None
    buffer: list[np.ndarray] = field(default_factory=list)
    filled: int = 0
    z: int = 0

    @property
    def chunk_z(self) -> int:
        return int(self.array.chunks[0])

    def push(self, block: np.ndarray) -> None:
        self.buffer.append(block)
        self.filled += len(block)
        if self.filled >= self.chunk_z:
            self._flush(self.filled - self.filled % self.chunk_z)

    def finish(self) -> None:
        if self.filled:
            self._flush(self.filled)
        if self.next is not None:
            self.next.finish()

    def _flush(self, n: int) -> None:
        # n is a whole number of chunks (an even count of slices: OME_CHUNKS[0] is even, and a level
        # whose chunk is clipped to its depth is flushed only once, whole), or the end of the volume;
        # so the z-blocks of the next level never straddle two flushes.
        data = self.buffer[0] if len(self.buffer) == 1 else np.concatenate(self.buffer)
        rows, rest = data[:n], data[n:]
        self.buffer, self.filled = ([rest] if len(rest) else []), len(rest)
        for _, sub in block_regions(rows.shape, self.array.chunks):  # one chunk per write (see engine.blocks)
            target = (slice(self.z + sub[0].start, self.z + sub[0].stop), *sub[1:])
            self.array[target] = np.ascontiguousarray(rows[sub])
        self.z += n
        if self.next is not None and self.factor is not None:
            step = DOWNSAMPLE_SLICES * self.factor[0]  # a few slices at a time: small float temporaries
            for i in range(0, n, step):
                self.next.push(self.down(rows[i : i + step], self.factor))


def _create_array(root: Any, level: int, shape: Sequence[int], dtype: np.dtype, name: str, version: str) -> Any:
    chunks = tuple(min(c, int(s)) or 1 for c, s in zip(OME_CHUNKS, shape))
    common: dict[str, Any] = dict(
        name=str(level), shape=tuple(int(s) for s in shape), chunks=chunks, dtype=dtype, fill_value=0,
        config={"write_empty_chunks": True},
    )
    if version == "0.4":
        from numcodecs import Blosc

        codec = compressors_for(name)[0]
        blosc = Blosc(cname=codec.cname.value, clevel=codec.clevel, shuffle=Blosc.BITSHUFFLE)
        return root.create_array(compressors=blosc, chunk_key_encoding={"name": "v2", "separator": "/"}, **common)
    return root.create_array(compressors=compressors_for(name), dimension_names=DIMS, **common)


def write_ome_zarr(
    vol: xr.DataArray,
    path: str | os.PathLike[str],
    *,
    levels: int | None = None,
    version: str = "0.4",
    overwrite: bool = False,
    progress: str | None = None,
) -> Path:
    """Write ``vol`` as an OME-Zarr multiscale image, streamed slab by slab, atomically.

    Parameters
    ----------
    vol : xarray.DataArray
        A (z, y, x) volume with ``voxel_size_nm`` (lazy or in memory).
        Label volumes (:func:`is_labels`) are written with NGFF
        ``image-label`` metadata (1 = pore) and downsampled by mode; boolean
        data is written as uint8.
    path : path
        Destination folder (``*.ome.zarr``); it appears only once complete.
    levels : int, optional
        Pyramid levels including full resolution (default
        :func:`~pipeline.io.export.downsample.default_levels`: until the
        longest side is at most 512 voxels).
    version : {"0.4", "0.5"}
        OME-NGFF version: 0.4 on zarr v2 or 0.5 on zarr v3.
    overwrite : bool
        Replace an existing ``path``.
    progress : str, optional
        Label of a progress bar over slabs.

    Returns
    -------
    Path
        ``path``. Level ``i`` is the array ``path/i``; its scale is the voxel
        size in nm times the product of the factors before it.
    """
    if version not in NGFF_VERSIONS:
        raise UserError(f"OME-NGFF version {version!r} is not supported; expected one of {', '.join(NGFF_VERSIONS)}")
    voxel = voxel_size_of(vol)
    n_levels = default_levels(voxel, vol.shape) if levels is None else int(levels)
    if n_levels < 1:
        raise UserError(f"levels {levels} is not valid; expected 1 or more pyramid levels")
    factors = pyramid_factors(voxel, vol.shape, n_levels)
    labels = is_labels(vol)
    dtype = np.dtype(np.uint8) if vol.dtype == np.bool_ else np.dtype(vol.dtype)
    name = str(vol.name or "image")
    down = downsample_mode if labels else downsample_mean
    low, high = np.inf, -np.inf
    with atomic_dir(path, overwrite=overwrite) as tmp:
        root = zarr.open_group(str(tmp), mode="w", zarr_format=2 if version == "0.4" else 3)
        shape = [int(s) for s in vol.shape]
        chain: list[_Level] = []
        for level in range(n_levels):
            chain.append(_Level(_create_array(root, level, shape, dtype, name, version), down))
            if level < len(factors):
                chain[-1].factor = factors[level]
                shape = [-(-s // k) for s, k in zip(shape, factors[level])]
        for a, b in zip(chain, chain[1:]):
            a.next = b
        for _, slab in iter_slabs(vol, progress=progress):
            slab = slab.astype(dtype, copy=False)
            if slab.size and not labels:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN slab
                    low, high = min(low, float(np.nanmin(slab))), max(high, float(np.nanmax(slab)))
            chain[0].push(slab)
        chain[0].finish()
        root.attrs.update(_root_attrs(vol, name, voxel, factors, labels=labels, version=version, dtype=dtype, window=(low, high)))
    return Path(path)


def _root_attrs(
    vol: xr.DataArray,
    name: str,
    voxel: Sequence[float],
    factors: Sequence[Sequence[int]],
    *,
    labels: bool,
    version: str,
    dtype: np.dtype,
    window: tuple[float, float],
) -> dict[str, Any]:
    ome: dict[str, Any] = {"multiscales": [multiscales_metadata(name, voxel, origin_of(vol), factors, labels=labels, version=version)]}
    if labels:
        ome["image-label"] = {
            "colors": [{"label-value": 1, "rgba": PORE_RGBA}],
            "properties": [{"label-value": 0, "name": "solid"}, {"label-value": 1, "name": "pore"}],
        }
    else:
        low, high = window if np.isfinite(window).all() else (0.0, 1.0)
        info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
        ome["omero"] = {
            "channels": [{
                "label": name, "color": "FFFFFF", "active": True, "coefficient": 1.0, "family": "linear", "inverted": False,
                "window": {"min": float(info.min) if info else low, "max": float(info.max) if info else high,
                           "start": low, "end": high},
            }],
            "rdefs": {"model": "greyscale", "defaultZ": int(vol.shape[0]) // 2},
        }
    # what the volume was: outside the NGFF keys, which readers ignore
    ours = {"porelab": {"voxel_size_nm": list(voxel), "provenance": vol.attrs.get("provenance")}}
    if version == "0.4":
        for key in ("image-label", "omero"):
            if key in ome:
                ome[key]["version"] = "0.4"
        return {**ome, **ours}
    return {"ome": {"version": "0.5", **ome}, **ours}
