"""Ingest: an image stack on disk to a chunked zarr v3 volume, streamed slab by slab."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import dask.array as da
import numpy as np
import xarray as xr
from dask.base import tokenize

from pipeline.engine.blocks import store_blocks
from pipeline.errors import UserError
from pipeline.io.codecs import CodecChoice, check_codec_name, choose_codec
from pipeline.io.stacks import StackSource, open_stack
from pipeline.io.volume import DEFAULT_CHUNKS, as_volume, atomic_dir, check_voxel_size, create_volume_store, provenance

__all__ = ["parse_voxel_size", "stack_volume", "ingest", "slab_shape", "codec_for_stack", "gc_frozen"]


def parse_voxel_size(text: str) -> tuple[float, float, float]:
    """Parse ``"Z,Y,X"`` (nm) from the command line.

    Raises
    ------
    UserError
        Unless the text is three comma-separated positive numbers.
    """
    parts = [p.strip() for p in str(text).split(",")]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise UserError(f"--voxel-size {text!r} is not valid; expected three positive numbers Z,Y,X in nm, e.g. 10,5,5") from None
    return check_voxel_size(values, where=f"--voxel-size {text!r}")


def slab_shape(shape: Sequence[int], chunks: Sequence[int]) -> tuple[int, int, int]:
    """Unit of ingest work: one chunk deep in z, the whole slice in y and x."""
    return (min(int(chunks[0]), int(shape[0])), int(shape[1]), int(shape[2]))


def stack_volume(source: StackSource, voxel_size_nm: Sequence[float], *, chunks: Sequence[int] = DEFAULT_CHUNKS) -> xr.DataArray:
    """Wrap a stack on disk as a lazy volume (dask chunks are z-slabs, read on demand)."""
    slab = slab_shape(source.shape, chunks)
    stat = source.path.stat()
    data = da.from_array(
        source,
        chunks=slab,
        lock=False,
        asarray=False,
        fancy=False,
        meta=np.empty((0, 0, 0), dtype=source.dtype),
        name=f"stack-{tokenize(str(source.path.resolve()), stat.st_mtime_ns, stat.st_size, source.shape)}",
    )
    return as_volume(
        data,
        voxel_size_nm,
        name="image",
        attrs={"source": str(source.path), "source_kind": source.kind},
    )


@contextmanager
def gc_frozen() -> Iterator[None]:
    """Keep the garbage collector off the objects that exist on entry, until exit.

    Importing xarray, dask and zarr leaves about a million objects that every
    full collection walks again; the many small objects made per chunk
    written trigger collections, which cost 0.3-0.6 CPU s of an ingest of
    2 GB (benchmarks/ingest.py). ``gc.freeze()`` moves them aside and
    ``gc.unfreeze()`` puts them back on exit, so nothing outlives the block.
    A process that froze objects itself is left as it is.
    """
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def codec_for_stack(source: StackSource, requested: str, chunks: Sequence[int] = DEFAULT_CHUNKS) -> CodecChoice:
    """The codec to write ``source`` with: ``requested``, or for ``"auto"`` the result of a test on its first slab.

    ``"auto"`` reads the first slab (one chunk deep in z: 64 MiB for 32 slices
    of 1024 x 1024 uint16) and compresses a few chunks of it; see
    :func:`pipeline.io.codecs.choose_codec`.

    Raises
    ------
    ValueError
        For a codec name not in :data:`pipeline.io.codecs.CODEC_NAMES`.
    """
    check_codec_name(requested)
    if requested != "auto":
        return choose_codec(requested)
    slab = slab_shape(source.shape, chunks)
    return choose_codec("auto", source.read(0, slab[0]), chunks)


def ingest(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    voxel_size_nm: Sequence[float],
    *,
    chunks: Sequence[int] = DEFAULT_CHUNKS,
    overwrite: bool = False,
    progress: str | None = "ingest",
    codec: str = "auto",
) -> Path:
    """Stream a stack into a new zarr v3 store, atomically.

    Parameters
    ----------
    path : path
        Multi-page TIFF, folder of TIFF/PNG slices, or ``.npy`` file.
    out : path
        Destination ``*.zarr`` folder; it appears only once complete.
    voxel_size_nm : (float, float, float)
        Voxel size (z, y, x) in nm.
    chunks : (int, int, int)
        On-disk chunk shape in voxels.
    overwrite : bool
        Replace an existing store.
    progress : str, optional
        Progress bar label (None for none).
    codec : str
        ``"auto"`` (default): lz4 when a sample of the first slab compresses at
        least 1.2x, else raw chunks (noisy images barely compress, and
        compressing them costs more time than writing them); or force
        ``"none"``, ``"lz4"`` or ``"zstd"``. The choice and its reason are
        recorded in the store's ``attrs["codec"]``.

    Returns
    -------
    Path
        The store written. The input dtype is kept.

    Raises
    ------
    ValueError
        For an unknown codec name.
    """
    check_codec_name(codec)
    voxel_size_nm = check_voxel_size(voxel_size_nm)
    source = open_stack(path)
    vol = stack_volume(source, voxel_size_nm, chunks=chunks)
    choice = codec_for_stack(source, codec, chunks)
    vol.attrs["codec"] = choice.to_attrs()
    vol.attrs["provenance"] = provenance("ingest", {"path": str(path), "voxel_size_nm": list(voxel_size_nm), "codec": codec})
    with atomic_dir(out, overwrite=overwrite) as tmp:
        target = create_volume_store(tmp, vol, chunks=chunks, codec=choice.name)
        with gc_frozen():
            store_blocks(vol.data, target, markers=None, progress=progress, block_shape=slab_shape(source.shape, target.chunks))
    return Path(out)
