"""Named on-disk codecs for image stores, and the automatic choice made at ingest.

Noisy FIB-SEM grey values compress little (about 1.1x for 16-bit data with
lz4 or zstd after bit shuffling) while compressing costs more CPU time than
reading and writing the bytes: ingest of such a stack is fastest uncompressed.
``"auto"`` compresses a sample of the first slab and writes the store
uncompressed when the ratio is below :data:`AUTO_MIN_RATIO`. The choice and
its reason go into the store's attrs (``attrs["codec"]``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = [
    "CODEC_NAMES",
    "AUTO_MIN_RATIO",
    "CodecChoice",
    "check_codec_name",
    "compressors_named",
    "sample_ratio",
    "choose_codec",
]

#: Codec names accepted by ``porelab ingest --codec`` and the ingest stage's ``codec:``.
#: ``lz4``: Blosc lz4 (level 5) with bit shuffling, the default of grey images;
#: ``zstd``: Blosc zstd (level 1) with bit shuffling, a few percent smaller and slower;
#: ``none``: chunks stored raw; ``auto``: ``none`` or ``lz4`` from a sample.
CODEC_NAMES: tuple[str, ...] = ("auto", "none", "lz4", "zstd")
#: ``auto`` compresses when the sample's ratio (raw bytes / compressed bytes) is at least this.
AUTO_MIN_RATIO: float = 1.2
#: ``auto`` compresses with this codec when it compresses at all.
AUTO_CODEC: str = "lz4"
#: Chunks compressed by the ``auto`` test (spread over the first slab), at most.
SAMPLE_CHUNKS: int = 4


@dataclass(frozen=True)
class CodecChoice:
    """The codec a store is written with, and why.

    Attributes
    ----------
    name : str
        ``"none"``, ``"lz4"`` or ``"zstd"``.
    requested : str
        What the user asked for (one of :data:`CODEC_NAMES`).
    reason : str
        One sentence for the store's attrs.
    sample_ratio : float, optional
        Raw bytes / compressed bytes of the sample (``auto`` only).
    min_ratio : float, optional
        The threshold the sample was held against (``auto`` only).
    """

    name: str
    requested: str
    reason: str
    sample_ratio: float | None = None
    min_ratio: float | None = None

    def to_attrs(self) -> dict[str, Any]:
        """JSON-ready record for ``attrs["codec"]``."""
        return {k: v for k, v in asdict(self).items() if v is not None}


def check_codec_name(name: str, *, allow_auto: bool = True) -> str:
    """Return ``name`` if it is a known codec name.

    Raises
    ------
    ValueError
        Naming the accepted codecs, for any other name.
    """
    allowed = CODEC_NAMES if allow_auto else tuple(n for n in CODEC_NAMES if n != "auto")
    if not isinstance(name, str) or name not in allowed:
        raise ValueError(f"codec {name!r} is not known; expected one of {', '.join(allowed)}")
    return name


def compressors_named(name: str) -> list[Any] | None:
    """zarr v3 compressors for a codec name (``None`` for ``"none"``: chunks stored raw).

    Raises
    ------
    ValueError
        For ``"auto"`` (it must be resolved first, see :func:`choose_codec`) or an unknown name.
    """
    import zarr

    check_codec_name(name, allow_auto=False)
    if name == "none":
        return None
    if name == "lz4":
        return [zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle=zarr.codecs.BloscShuffle.bitshuffle)]
    return [zarr.codecs.BloscCodec(cname="zstd", clevel=1, shuffle=zarr.codecs.BloscShuffle.bitshuffle)]


def _sample_regions(shape: Sequence[int], chunks: Sequence[int], n: int) -> list[tuple[slice, ...]]:
    """Up to ``n`` chunk-shaped regions of the first z chunk of ``shape``, spread over the slice.

    Chunks are taken at the centres of ``n`` equal runs of the row-major chunk
    grid, so the corner chunks (often background or a milled edge, which
    compress far better than the sample) are not favoured.
    """
    cz, cy, cx = (min(int(c), int(s)) for c, s in zip(chunks, shape))
    ny, nx = -(-int(shape[1]) // cy), -(-int(shape[2]) // cx)
    grid = [(j, i) for j in range(ny) for i in range(nx)]
    n = max(1, min(int(n), len(grid)))
    picks = sorted({grid[int((k + 0.5) * len(grid) / n)] for k in range(n)})
    return [(slice(0, cz), slice(j * cy, min((j + 1) * cy, shape[1])), slice(i * cx, min((i + 1) * cx, shape[2])))
            for j, i in picks]


def sample_ratio(sample: np.ndarray, chunks: Sequence[int], *, codec: str = AUTO_CODEC, n_chunks: int = SAMPLE_CHUNKS) -> float:
    """Compression ratio (raw bytes / compressed bytes) of ``codec`` on chunks of ``sample``.

    Parameters
    ----------
    sample : numpy.ndarray, shape (z, y, x)
        Voxels to test, typically the first slab of the stack. Not modified.
    chunks : (int, int, int)
        On-disk chunk shape in voxels; the chunks compressed are this shape.
    codec : str
        Codec name (not ``"none"`` or ``"auto"``).
    n_chunks : int
        How many chunks, spread over the slab, to compress at most.

    Returns
    -------
    float
        Total raw bytes over total compressed bytes (1.0 for an empty sample).
    """
    import numcodecs

    if getattr(sample, "ndim", None) != 3:
        raise ValueError(f"the codec sample must be 3D (z, y, x); got shape {getattr(sample, 'shape', None)}")
    if codec in ("none", "auto"):
        raise ValueError(f"sample_ratio needs a compressing codec, not {codec!r}")
    check_codec_name(codec)
    cname, clevel = {"lz4": ("lz4", 5), "zstd": ("zstd", 1)}[codec]
    blosc = numcodecs.Blosc(cname=cname, clevel=clevel, shuffle=numcodecs.Blosc.BITSHUFFLE, typesize=sample.dtype.itemsize)
    raw = packed = 0
    for region in _sample_regions(sample.shape, chunks, n_chunks):
        part = np.ascontiguousarray(sample[region])  # a copy when the region is strided; the caller's array is never written
        if part.size:
            raw += part.nbytes
            packed += len(blosc.encode(part))
    return raw / packed if packed else 1.0


def choose_codec(
    requested: str,
    sample: np.ndarray | None = None,
    chunks: Sequence[int] = (32, 256, 256),
    *,
    min_ratio: float = AUTO_MIN_RATIO,
    compress_with: str = AUTO_CODEC,
) -> CodecChoice:
    """Resolve a codec name, testing ``sample`` for ``"auto"``.

    Parameters
    ----------
    requested : str
        One of :data:`CODEC_NAMES`.
    sample : numpy.ndarray, shape (z, y, x), optional
        Voxels to test (the first slab); required for ``"auto"``. Not modified.
    chunks : (int, int, int)
        On-disk chunk shape in voxels.
    min_ratio : float
        ``auto`` compresses when the sample compresses at least this much
        (raw bytes / compressed bytes), and stores raw chunks otherwise.
    compress_with : {"lz4", "zstd"}
        The codec ``auto`` tests and then compresses with.

    Raises
    ------
    ValueError
        Unknown codec name, ``"auto"`` without a sample, or ``min_ratio`` not above 0.
    """
    check_codec_name(requested)
    if compress_with not in ("lz4", "zstd"):
        raise ValueError(f"compress_with {compress_with!r} is not valid; expected lz4 or zstd")
    if requested != "auto":
        return CodecChoice(requested, requested, f"{requested} was asked for explicitly")
    if sample is None:
        raise ValueError("codec 'auto' needs a sample of the stack to test")
    if not min_ratio > 0:
        raise ValueError(f"min_ratio must be greater than 0; got {min_ratio}")
    ratio = round(sample_ratio(sample, chunks, codec=compress_with), 3)
    if ratio < min_ratio:
        reason = (f"a sample of the first slab compresses only {ratio:.2f}x with {compress_with} (below {min_ratio:g}x): "
                  "chunks are stored raw, which ingests faster at almost no cost in size")
        return CodecChoice("none", "auto", reason, ratio, min_ratio)
    reason = f"a sample of the first slab compresses {ratio:.2f}x with {compress_with} (at least {min_ratio:g}x)"
    return CodecChoice(compress_with, "auto", reason, ratio, min_ratio)
