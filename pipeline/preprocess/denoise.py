"""Denoising filters on (z, y, x) stacks: gaussian, median, bilateral; per slice or 3D.

Plain array functions (NumPy or CuPy) plus :func:`denoise_dask`, which maps
one of them over the chunks of a dask array with exactly the halo it reads,
so the chunked result equals the in-memory one.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import dask.array as da
import numpy as np

from pipeline.backend import ndimage_of, to_numpy, xp_of
from pipeline.preprocess.median import PAD_MODES, median_filter

__all__ = [
    "METHODS",
    "gaussian",
    "median",
    "bilateral",
    "denoise",
    "halo_depth",
    "output_range",
    "merged_chunks",
    "denoise_dask",
    "estimate_noise_sigma",
]

Method = Literal["none", "gaussian", "median", "bilateral"]
METHODS: tuple[str, ...] = ("none", "gaussian", "median", "bilateral")


def _check(image: Any, dims: int) -> None:
    if getattr(image, "ndim", None) != 3:
        raise ValueError(f"expected a 3D (z, y, x) array; got shape {getattr(image, 'shape', None)}")
    if dims not in (2, 3):
        raise ValueError(f"dims must be 2 (per slice) or 3; got {dims}")


def _float(image: Any) -> Any:
    xp = xp_of(image)
    return image if image.dtype in (np.float32, np.float64) else image.astype(xp.float32)


def _float_dtype(dtype: Any) -> np.dtype:
    """float64 stays float64; everything else is filtered as float32."""
    return np.dtype(np.float64) if np.dtype(dtype) == np.float64 else np.dtype(np.float32)


def gaussian(image: Any, sigma: float = 1.0, *, dims: int = 2, truncate: float = 4.0, mode: str = "reflect") -> Any:
    """Gaussian blur of a (z, y, x) stack.

    Parameters
    ----------
    image : ndarray (z, y, x)
        NumPy or CuPy array; integers are filtered as float32.
    sigma : float
        Standard deviation in voxels (> 0).
    dims : {2, 3}
        2 blurs every slice in (y, x) only; 3 blurs along z too.
    truncate : float
        Kernel radius in sigmas (radius = int(truncate * sigma + 0.5) voxels).
    mode : str
        Border rule of :mod:`scipy.ndimage`.

    Returns
    -------
    ndarray
        float32 (float64 stays float64), same shape.
    """
    _check(image, dims)
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0 voxels; got {sigma}")
    sig = (0.0, sigma, sigma) if dims == 2 else (sigma, sigma, sigma)
    # The filter reads any dtype into float64 line buffers, so writing float32 straight
    # from integer input equals filtering a float32 copy, without the copy.
    out = xp_of(image).empty(image.shape, dtype=_float_dtype(image.dtype))
    return ndimage_of(image).gaussian_filter(image, sig, output=out, truncate=truncate, mode=mode)


def median(image: Any, size: int = 3, *, dims: int = 2, mode: str = "reflect") -> Any:
    """Exact median filter (see :mod:`pipeline.preprocess.median`); keeps the dtype."""
    _check(image, dims)
    return median_filter(image, size, dims=dims, mode=mode)


def bilateral(
    image: Any,
    sigma_spatial: float = 1.0,
    sigma_range: float = 0.1,
    *,
    dims: int = 2,
    truncate: float = 2.0,
    mode: str = "reflect",
) -> Any:
    """Edge-preserving bilateral filter of a (z, y, x) stack.

    Each voxel becomes the average of its neighbours within
    ``radius = ceil(truncate * sigma_spatial)`` voxels, weighted by
    ``exp(-d^2 / 2 sigma_spatial^2) * exp(-(I_n - I_0)^2 / 2 sigma_range^2)``,
    so smoothing stops at edges whose contrast is large against
    ``sigma_range``.

    Parameters
    ----------
    image : ndarray (z, y, x)
        NumPy or CuPy array.
    sigma_spatial : float
        Spatial standard deviation in voxels (> 0).
    sigma_range : float
        Intensity standard deviation in the image's units (> 0); about 2-3
        times the noise level (see :func:`estimate_noise_sigma`).
    dims : {2, 3}
        2: neighbours in the same slice; 3: neighbours in z too.
    truncate : float
        Window radius in spatial sigmas.
    mode : str
        Border rule of :mod:`scipy.ndimage`.

    Returns
    -------
    ndarray
        float32 (float64 stays float64), same shape.
    """
    _check(image, dims)
    if not sigma_spatial > 0 or not sigma_range > 0:
        raise ValueError(f"sigma_spatial and sigma_range must be > 0; got {sigma_spatial}, {sigma_range}")
    xp = xp_of(image)
    img = _float(image)
    r = bilateral_radius(sigma_spatial, truncate)
    rz = r if dims == 3 else 0
    pad = xp.pad(img, ((rz, rz), (r, r), (r, r)), mode=PAD_MODES[mode]) if mode != "constant" else xp.pad(img, ((rz, rz), (r, r), (r, r)))
    z, y, x = img.shape
    num = xp.zeros_like(img)
    den = xp.zeros_like(img)
    inv_s = -0.5 / (sigma_spatial * sigma_spatial)
    inv_r = img.dtype.type(-0.5 / (sigma_range * sigma_range))
    for dz in range(-rz, rz + 1):
        for dy in range(-r, r + 1):
            for dx in range(-r, r + 1):
                d2 = dz * dz + dy * dy + dx * dx
                if d2 > r * r:
                    continue
                nb = pad[rz + dz : rz + dz + z, r + dy : r + dy + y, r + dx : r + dx + x]
                diff = nb - img
                w = xp.exp(diff * diff * inv_r) * img.dtype.type(math.exp(d2 * inv_s))
                num += w * nb
                den += w
    return num / den


def bilateral_radius(sigma_spatial: float, truncate: float = 2.0) -> int:
    """Window radius in voxels of :func:`bilateral`."""
    return max(1, int(math.ceil(truncate * sigma_spatial)))


def estimate_noise_sigma(image: Any) -> float:
    """Robust estimate of additive noise std of a stack, in the image's units.

    Uses the median absolute deviation of the normalised second difference
    along x (Immerkaer-like), which ignores smooth structure and most edges.
    """
    a = to_numpy(image).astype(np.float64)
    d = a[..., 2:] - 2 * a[..., 1:-1] + a[..., :-2]
    if d.size == 0:
        return 0.0
    return float(1.4826 * np.median(np.abs(d - np.median(d))) / math.sqrt(6.0))


def denoise(image: Any, method: Method = "gaussian", *, dims: int = 2, mode: str = "reflect", **params: Any) -> Any:
    """Apply one denoising ``method`` (``none``, ``gaussian``, ``median``, ``bilateral``).

    ``params`` are the method's own keywords (``sigma``; ``size``;
    ``sigma_spatial``, ``sigma_range``). ``none`` returns the input unchanged.
    """
    if method == "none":
        return image
    if method == "gaussian":
        return gaussian(image, dims=dims, mode=mode, **params)
    if method == "median":
        return median(image, dims=dims, mode=mode, **params)
    if method == "bilateral":
        return bilateral(image, dims=dims, mode=mode, **params)
    raise ValueError(f"denoise method {method!r} is not one of {METHODS}")


def halo_depth(method: Method, *, dims: int = 2, **params: Any) -> tuple[int, int, int]:
    """Voxels each filter reads beyond a block, per axis (z, y, x)."""
    if method == "none":
        r = 0
    elif method == "gaussian":
        r = int(params.get("truncate", 4.0) * float(params.get("sigma", 1.0)) + 0.5)
    elif method == "median":
        r = int(params.get("size", 3)) // 2
    elif method == "bilateral":
        r = bilateral_radius(float(params.get("sigma_spatial", 1.0)), float(params.get("truncate", 2.0)))
    else:
        raise ValueError(f"denoise method {method!r} is not one of {METHODS}")
    return (r if dims == 3 else 0, r, r)


def output_range(method: Method, input_range: tuple[float, float], *, mode: str = "reflect") -> tuple[float, float]:
    """A range that holds every output value of ``method``, from the input's ``(min, max)``.

    Every filter here returns, per voxel, a weighted average with
    non-negative weights summing to one (gaussian, bilateral) or one of the
    values it reads (median, none), so its output stays within the range of
    the values it reads: the input's, plus the padding value 0 when
    ``mode="constant"``. Lets the histogram of a filtered volume be binned
    before the filter runs (no min/max pass over the filtered data).

    Parameters
    ----------
    method : {"none", "gaussian", "median", "bilateral"}
    input_range : (float, float)
        Minimum and maximum of the input, in its units.
    mode : str
        Border rule the filter is run with.

    Returns
    -------
    (float, float)
        ``(lo, hi)`` in the input's units.
    """
    if method not in METHODS:
        raise ValueError(f"denoise method {method!r} is not one of {METHODS}")
    lo, hi = (float(v) for v in input_range)
    if mode == "constant" and method != "none":
        lo, hi = min(lo, 0.0), max(hi, 0.0)
    return lo, hi


def denoise_dask(arr: da.Array, method: Method = "gaussian", *, dims: int = 2, mode: str = "reflect", **params: Any) -> da.Array:
    """Map :func:`denoise` over the chunks of ``arr`` with its exact halo.

    Blocks are extended by :func:`halo_depth` from their neighbours
    (``boundary="none"``: nothing is invented at the volume's edges, where the
    filter applies its own ``mode``), filtered, and trimmed; the result equals
    ``denoise`` on the whole array. Chunks smaller than the halo are merged
    first. Along an axis held in one chunk there is no neighbour to read
    from, so no halo is exchanged there (full-slice chunks need none for 2D
    filters).
    """
    if method == "none":
        return arr
    depth = halo_depth(method, dims=dims, **params)
    dtype = arr.dtype if method == "median" else (np.float64 if arr.dtype == np.float64 else np.float32)
    arr = _ensure_min_chunks(arr, depth)
    depth = tuple(d if len(c) > 1 else 0 for d, c in zip(depth, arr.chunks))
    if max(depth) == 0:
        return arr.map_blocks(denoise, method=method, dims=dims, mode=mode, dtype=dtype, **params)
    return da.map_overlap(
        denoise,
        arr,
        method=method,
        depth={i: d for i, d in enumerate(depth)},
        boundary="none",
        trim=True,
        dtype=dtype,
        dims=dims,
        mode=mode,
        **params,
    )


#: Largest block :func:`merged_chunks` makes: 2**23 voxels, 32 MiB as float32.
MERGE_VOXELS = 1 << 23


def merged_chunks(chunks: tuple[tuple[int, ...], ...], depth: tuple[int, ...], max_voxels: int = MERGE_VOXELS) -> tuple[tuple[int, ...], ...]:
    """Chunks for filtering: whole chunks merged along y, then x, into full slices while blocks stay small.

    A filter's tasks cost per block (scheduling, halo exchange with every
    neighbour) besides their voxels; blocks that span whole slices have no
    neighbour along y and x, so a 2D filter exchanges no halo at all. An
    axis with a halo (``depth > 0``) is merged into one chunk when the
    largest block then holds at most ``max_voxels``. Chunks are only merged,
    never split, so rechunking to the result moves no data inside a chunk.

    Parameters
    ----------
    chunks : tuple of tuple of int
        Dask chunks of a (z, y, x) array.
    depth : (int, int, int)
        The filter's halo per axis (:func:`halo_depth`).
    max_voxels : int
        Largest block allowed after merging.

    Returns
    -------
    tuple of tuple of int
        The new chunks (``chunks`` itself when nothing merges).
    """
    out = list(chunks)
    for axis in (1, 2):
        if depth[axis] == 0 or len(out[axis]) == 1:
            continue
        merged = out[:axis] + [(sum(out[axis]),)] + out[axis + 1 :]
        if int(np.prod([max(c) for c in merged])) <= max_voxels:
            out = merged
    return tuple(out)


def _ensure_min_chunks(arr: da.Array, depth: tuple[int, ...]) -> da.Array:
    """Rechunk so every chunk is at least as large as the halo along each axis."""
    new = []
    changed = False
    for chunks, d, n in zip(arr.chunks, depth, arr.shape):
        if d and min(chunks) < d and len(chunks) > 1:
            changed = True
            size = max(d, max(chunks))
            new.append(size if size < n else n)
        else:
            new.append(chunks)
    return arr.rechunk(tuple(new)) if changed else arr
