"""Array backend: NumPy on CPU, CuPy on GPU.

The choice is made once per worker with :func:`resolve_backend` and carried by
the arrays themselves; stage functions ask an array which module it belongs to
(:func:`xp_of`, :func:`ndimage_of`) instead of catching errors deep inside a
filter.
"""

from __future__ import annotations

import functools
from types import ModuleType
from typing import Any, Literal

import numpy as np

from pipeline.errors import UserError

__all__ = [
    "BackendName",
    "gpu_available",
    "resolve_backend",
    "array_module",
    "xp_of",
    "ndimage_of",
    "to_numpy",
    "to_backend",
    "chunks_on",
    "volume_on",
]

BackendName = Literal["numpy", "cupy", "auto"]


@functools.cache
def gpu_available() -> bool:
    """Return True when CuPy imports and a CUDA device really runs a kernel."""
    try:
        import cupy  # type: ignore[import-not-found]

        if cupy.cuda.runtime.getDeviceCount() < 1:
            return False
        # A device that is listed but unusable (driver mismatch) fails here.
        return int((cupy.arange(4) * 2).sum().get()) == 12
    except Exception:  # noqa: BLE001 - any failure means "no usable GPU"
        return False


def resolve_backend(name: str) -> Literal["numpy", "cupy"]:
    """Turn a requested backend into the one this worker will use.

    Parameters
    ----------
    name : {"numpy", "cupy", "auto"}
        ``"auto"`` picks CuPy when a CUDA device is usable, else NumPy.

    Returns
    -------
    str
        ``"numpy"`` or ``"cupy"``.

    Raises
    ------
    UserError
        If ``"cupy"`` is asked for and no usable CUDA device exists, or the
        name is unknown.
    """
    if name == "numpy":
        return "numpy"
    if name == "auto":
        return "cupy" if gpu_available() else "numpy"
    if name == "cupy":
        if not gpu_available():
            raise UserError(
                "backend 'cupy' was requested but no usable CUDA device with CuPy was found; "
                "use backend: numpy or auto"
            )
        return "cupy"
    raise UserError(f"backend {name!r} is unknown; expected one of numpy, cupy, auto")


def array_module(name: Literal["numpy", "cupy"]) -> ModuleType:
    """Return the array module (``numpy`` or ``cupy``) for a resolved backend name."""
    if name == "cupy":
        import cupy  # type: ignore[import-not-found]

        return cupy
    return np


def xp_of(arr: Any) -> ModuleType:
    """Return ``numpy`` or ``cupy``, whichever owns ``arr``."""
    if type(arr).__module__.startswith("cupy"):
        import cupy  # type: ignore[import-not-found]

        return cupy
    return np


def ndimage_of(arr: Any) -> ModuleType:
    """Return ``scipy.ndimage`` or ``cupyx.scipy.ndimage`` to match ``arr``."""
    if type(arr).__module__.startswith("cupy"):
        import cupyx.scipy.ndimage as ndi  # type: ignore[import-not-found]

        return ndi
    import scipy.ndimage as ndi

    return ndi


def to_numpy(arr: Any) -> np.ndarray:
    """Return ``arr`` as a NumPy array (copying from the GPU when needed)."""
    if type(arr).__module__.startswith("cupy"):
        return arr.get()
    return np.asarray(arr)


def to_backend(arr: np.ndarray, name: Literal["numpy", "cupy"]) -> Any:
    """Move a NumPy array to the resolved backend ``name``."""
    return array_module(name).asarray(arr)


def chunks_on(arr: Any, name: Literal["numpy", "cupy"]) -> Any:
    """A dask array whose chunks live on the resolved backend ``name`` (lazy).

    Each chunk is moved when a worker computes it (``cupy.asarray`` on the
    GPU of that worker); the stage functions then run on CuPy chunks, and
    the writers copy results back to the host block by block.
    """
    meta = getattr(arr, "_meta", None)
    if name == "cupy":
        if xp_of(meta).__name__ == "cupy":
            return arr
        import cupy  # type: ignore[import-not-found]

        return arr.map_blocks(cupy.asarray, dtype=arr.dtype, meta=cupy.empty((0,) * arr.ndim, dtype=arr.dtype))
    if meta is not None and xp_of(meta) is not np:
        return arr.map_blocks(to_numpy, dtype=arr.dtype, meta=np.empty((0,) * arr.ndim, dtype=arr.dtype))
    return arr


def volume_on(vol: Any, name: Literal["numpy", "cupy"]) -> Any:
    """An xarray volume whose dask chunks live on the backend ``name`` (see :func:`chunks_on`)."""
    import dask.array as da

    data = vol.data if isinstance(vol.data, da.Array) else da.from_array(vol.data, chunks=-1)
    return vol.copy(data=chunks_on(data, name))
