"""Image stacks on disk read slab by slab: multi-page TIFF, folders of TIFF/PNG slices, .npy.

A :class:`StackSource` knows its shape and dtype without reading pixels and
reads any range of slices on demand, so a stack larger than memory streams
through. It behaves like a read-only array (``shape``, ``dtype``, ``ndim``,
``__getitem__``), which lets ``dask.array.from_array`` wrap it lazily.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import UserError
from pipeline.io.volume import SUPPORTED_DTYPES

__all__ = ["StackSource", "open_stack", "natural_key", "SLICE_SUFFIXES"]

SLICE_SUFFIXES: tuple[str, ...] = (".tif", ".tiff", ".png")
_TIFF = (".tif", ".tiff")


def natural_key(name: str) -> list[Any]:
    """Sort key that puts ``slice_2`` before ``slice_10``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def _check_dtype(dtype: np.dtype, where: Path) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype not in SUPPORTED_DTYPES:
        allowed = ", ".join(str(d) for d in SUPPORTED_DTYPES)
        raise UserError(f"{where}: pixel type {dtype} is not supported; expected one of {allowed}")
    return dtype


@dataclass
class StackSource:
    """A stack of 2D slices on disk, read on demand.

    Attributes
    ----------
    path : Path
        The file or folder given by the user.
    kind : {"tiff", "slices", "npy"}
    shape : (int, int, int)
        (z, y, x) in voxels.
    dtype : numpy.dtype
    files : list of Path
        One file per slice for ``kind == "slices"``.
    """

    path: Path
    kind: str
    shape: tuple[int, int, int]
    dtype: np.dtype
    files: list[Path] = field(default_factory=list)
    _offset: int | None = None  # byte offset of a contiguous uncompressed TIFF series

    @property
    def ndim(self) -> int:
        return 3

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        key = key + (slice(None),) * (3 - len(key))
        zsl = key[0]
        if isinstance(zsl, (int, np.integer)):
            return self.read(int(zsl), int(zsl) + 1)[(0,) + tuple(key[1:])]
        if not isinstance(zsl, slice) or zsl.step not in (None, 1):
            raise IndexError("stack sources support contiguous z slices only")
        start, stop, _ = zsl.indices(self.shape[0])
        return self.read(start, stop)[(slice(None),) + tuple(key[1:])]

    def read(self, start: int, stop: int) -> np.ndarray:
        """Read slices ``start:stop`` (z) as a new array of shape (stop-start, y, x)."""
        stop = max(start, min(stop, self.shape[0]))
        if self.kind == "npy":
            arr = np.load(self.path, mmap_mode="r")
            if arr.ndim == 2:  # one slice
                arr = arr[None]
            return np.array(arr[start:stop], copy=True)
        if self.kind == "tiff":
            return self._read_tiff(start, stop)
        out = np.empty((stop - start, *self.shape[1:]), dtype=self.dtype)
        for i, f in enumerate(self.files[start:stop]):
            out[i] = _read_slice(f, self.shape[1:], self.dtype)
        return out

    def _read_tiff(self, start: int, stop: int) -> np.ndarray:
        if self._offset is not None:
            # one read() into the new array: a memory map would fault page by page (3-10x slower)
            out = np.empty((stop - start, *self.shape[1:]), dtype=self.dtype)
            plane = int(np.prod(self.shape[1:])) * self.dtype.itemsize
            with open(self.path, "rb", buffering=0) as f:
                f.seek(self._offset + start * plane)
                view, got = memoryview(out).cast("B"), 0
                while got < out.nbytes:
                    n = f.readinto(view[got:])
                    if not n:
                        raise UserError(f"{self.path}: slice {start + got // plane} cannot be read; the TIFF is truncated")
                    got += n
            return out
        import tifffile

        out = np.empty((stop - start, *self.shape[1:]), dtype=self.dtype)
        try:
            with tifffile.TiffFile(self.path) as tif:
                pages = tif.series[0].pages
                for i in range(start, stop):
                    out[i - start] = pages[i].asarray()
        except Exception as exc:  # noqa: BLE001
            raise UserError(f"{self.path}: slice {i} cannot be read ({exc}); the TIFF may be truncated") from None
        return out


def _read_slice(path: Path, shape: Sequence[int], dtype: np.dtype) -> np.ndarray:
    try:
        if path.suffix.lower() in _TIFF:
            import tifffile

            img = tifffile.imread(path)
        else:
            from PIL import Image

            with Image.open(path) as im:
                img = np.asarray(im)
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"{path}: cannot be read as an image ({exc.__class__.__name__}: {exc})") from None
    if img.ndim == 3 and img.shape[-1] in (3, 4):
        raise UserError(f"{path}: is a colour image with shape {img.shape}; expected a grayscale slice")
    if tuple(img.shape) != tuple(shape):
        raise UserError(f"{path}: slice shape {tuple(img.shape)} differs from the first slice's {tuple(shape)}")
    if img.dtype != dtype:
        raise UserError(f"{path}: pixel type {img.dtype} differs from the first slice's {dtype}")
    return img


class _LogErrors(logging.Handler):
    """Collects the errors tifffile logs (it logs, not raises, on a broken page chain)."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _open_tiff(path: Path) -> StackSource:
    import tifffile

    tiff_log = logging.getLogger("tifffile")
    errors = _LogErrors()
    tiff_log.addHandler(errors)
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            shape = tuple(int(s) for s in series.shape)
            dtype = np.dtype(series.dtype)
            offset = series.dataoffset
            if len(shape) == 2:
                shape = (1, *shape)
            elif len(shape) != 3 or shape[-1] in (3, 4) and series.axes.endswith("S"):
                raise UserError(
                    f"{path}: holds an image of shape {shape} (axes {series.axes}); expected grayscale slices (z, y, x)"
                )
            n_pages = len(series.pages)
            # A truncated file often opens fine: check that the last slice is really there.
            expected_end = None if offset is None else offset + int(np.prod(shape)) * dtype.itemsize
            if offset is not None and expected_end > path.stat().st_size:
                raise UserError(
                    f"{path}: is truncated ({path.stat().st_size} bytes, the {shape[0]} slices need {expected_end})"
                )
            if offset is None:
                series.pages[n_pages - 1].asarray()
            if errors.messages:
                raise UserError(f"{path}: is damaged or truncated (tifffile: {errors.messages[0].split('> ', 1)[-1]})")
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"{path}: cannot be read as a TIFF stack ({exc.__class__.__name__}: {exc})") from None
    finally:
        tiff_log.removeHandler(errors)
    return StackSource(path, "tiff", shape, _check_dtype(dtype, path), _offset=offset)  # type: ignore[arg-type]


def _open_npy(path: Path) -> StackSource:
    try:
        arr = np.load(path, mmap_mode="r")
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"{path}: cannot be read as a .npy array ({exc.__class__.__name__}: {exc})") from None
    if arr.ndim not in (2, 3):
        raise UserError(f"{path}: holds an array of shape {arr.shape}; expected a 3D stack (z, y, x) or one 2D slice")
    shape = tuple(int(s) for s in arr.shape)
    return StackSource(path, "npy", shape if arr.ndim == 3 else (1, *shape), _check_dtype(arr.dtype, path))  # type: ignore[arg-type]


def _open_folder(path: Path, files: list[Path] | None = None) -> StackSource:
    if files is None:
        files = sorted(
            (p for p in path.iterdir() if p.is_file() and p.suffix.lower() in SLICE_SUFFIXES and not p.name.startswith(".")),
            key=lambda p: natural_key(p.name),
        )
    if not files:
        raise UserError(f"{path}: holds no slices; expected .tif, .tiff or .png files")
    suffixes = {p.suffix.lower() in _TIFF for p in files}
    if len(suffixes) > 1:
        raise UserError(f"{path}: mixes TIFF and PNG slices; expected one kind of file")
    first = files[0]
    try:
        if first.suffix.lower() in _TIFF:
            import tifffile

            with tifffile.TiffFile(first) as tif:
                shape2 = tuple(int(s) for s in tif.series[0].shape)
                dtype = np.dtype(tif.series[0].dtype)
        else:
            from PIL import Image

            with Image.open(first) as im:
                arr = np.asarray(im)
                shape2, dtype = tuple(arr.shape), arr.dtype
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"{first}: cannot be read as an image ({exc.__class__.__name__}: {exc})") from None
    if len(shape2) != 2:
        raise UserError(f"{first}: has shape {shape2}; expected one grayscale 2D slice per file")
    return StackSource(path, "slices", (len(files), *shape2), _check_dtype(dtype, first), files=files)  # type: ignore[arg-type]


def open_stack(path: str | os.PathLike[str]) -> StackSource:
    """Open a stack for streaming reads, checking what can be checked cheaply.

    Parameters
    ----------
    path : path
        A multi-page TIFF (``.tif``/``.tiff``), a ``.npy`` file, or a folder of
        TIFF or PNG slices (sorted in natural order: ``slice_2`` before ``slice_10``);
        a single image (one-page TIFF, PNG, 2D ``.npy``) is a stack of one slice.

    Raises
    ------
    UserError
        Missing path, empty folder, unreadable or truncated file, unsupported
        pixel type, or a shape that is not a grayscale stack.
    """
    p = Path(path)
    if not p.exists():
        raise UserError(f"{p}: no such file or folder; expected a TIFF stack, a folder of slices or a .npy file")
    if p.is_dir():
        return _open_folder(p)
    suffix = p.suffix.lower()
    if suffix in _TIFF:
        return _open_tiff(p)
    if suffix == ".npy":
        return _open_npy(p)
    if suffix == ".png":
        return _open_folder(p.parent, files=[p])
    raise UserError(f"{p}: has suffix {suffix!r}; expected .tif, .tiff, .png, .npy or a folder of slices")
