"""Uneven illumination: a smooth background per slice (or per volume) estimated and removed.

``poly``: a least-squares polynomial surface of ``degree`` in (y, x) fitted to
a subsampled slice; ``gaussian``: a gaussian blur with sigma a fraction of
the slice size. The background is divided out (``mode="divide"``, SEM
shading is mostly multiplicative) or subtracted, keeping the slice's mean
level.
"""

from __future__ import annotations

from typing import Any, Literal

import dask.array as da
import numpy as np

from pipeline.backend import ndimage_of, to_numpy, xp_of

__all__ = ["poly_terms", "fit_background", "background", "remove_background", "estimate_backgrounds_dask", "correct_illumination_dask"]


def poly_terms(degree: int) -> list[tuple[int, int]]:
    """Exponents (i, j) of the terms ``v^i u^j`` with ``i + j <= degree``."""
    if degree < 0:
        raise ValueError(f"degree must be >= 0; got {degree}")
    return [(i, t - i) for t in range(degree + 1) for i in range(t + 1)]


def _grid(n: int) -> np.ndarray:
    return np.linspace(-1.0, 1.0, n) if n > 1 else np.zeros(1)


def fit_background(slice2d: Any, degree: int = 2, *, step: int | None = None) -> np.ndarray:
    """Coefficients of a polynomial surface fitted to one (y, x) slice.

    Coordinates are scaled to [-1, 1] along y and x; the slice is subsampled
    by ``step`` (default: about 128 samples per axis). Returns float64
    coefficients in :func:`poly_terms` order.
    """
    a = to_numpy(slice2d).astype(np.float64)
    ny, nx = a.shape
    step = step or max(1, min(ny, nx) // 128)
    v = _grid(ny)[::step]
    u = _grid(nx)[::step]
    sub = a[::step, ::step]
    vv, uu = np.meshgrid(v, u, indexing="ij")
    design = np.stack([vv.ravel() ** i * uu.ravel() ** j for i, j in poly_terms(degree)], axis=1)
    coef, *_ = np.linalg.lstsq(design, sub.ravel(), rcond=None)
    return coef


def _surface(coef: np.ndarray, shape: tuple[int, int], xp: Any, degree: int) -> Any:
    v = xp.asarray(_grid(shape[0]))[:, None]
    u = xp.asarray(_grid(shape[1]))[None, :]
    out = xp.zeros(shape, dtype=xp.float64)
    for c, (i, j) in zip(coef, poly_terms(degree)):
        out += float(c) * (v**i) * (u**j)
    return out


def background(slice2d: Any, method: Literal["poly", "gaussian"] = "poly", *, degree: int = 2, sigma_fraction: float = 0.125) -> Any:
    """Smooth background of one (y, x) slice (float64, same backend)."""
    xp = xp_of(slice2d)
    if method == "poly":
        return _surface(fit_background(slice2d, degree), slice2d.shape, xp, degree)
    if method == "gaussian":
        sigma = max(1.0, sigma_fraction * min(slice2d.shape))
        return ndimage_of(slice2d).gaussian_filter(slice2d.astype(xp.float64), sigma, mode="reflect")
    raise ValueError(f"illumination method {method!r} is not one of poly, gaussian")


def remove_background(slice2d: Any, bg: Any, mode: Literal["divide", "subtract"] = "divide") -> Any:
    """Remove background ``bg`` from a slice, keeping the mean level (float32 out)."""
    xp = xp_of(slice2d)
    a = slice2d.astype(xp.float64)
    level = float(to_numpy(bg.mean()))
    if mode == "divide":
        floor = max(abs(level) * 1e-3, 1e-12)
        out = a * (level / xp.maximum(bg, floor))
    elif mode == "subtract":
        out = a - bg + level
    else:
        raise ValueError(f"illumination mode {mode!r} is not one of divide, subtract")
    return out.astype(xp.float32)


def estimate_backgrounds_dask(arr: da.Array, degree: int = 2) -> np.ndarray:
    """Polynomial background coefficients of every slice, ``(z, n_terms)``, read slab by slab."""
    arr = arr.rechunk({1: -1, 2: -1})
    n = len(poly_terms(degree))

    def fn(block: Any) -> np.ndarray:
        return np.stack([fit_background(block[k], degree) for k in range(block.shape[0])])

    return np.asarray(arr.map_blocks(fn, dtype=np.float64, drop_axis=[1, 2], new_axis=[1], chunks=(arr.chunks[0], (n,))).compute())


def correct_illumination_dask(
    arr: da.Array,
    method: Literal["poly", "gaussian"] = "poly",
    *,
    degree: int = 2,
    sigma_fraction: float = 0.125,
    mode: Literal["divide", "subtract"] = "divide",
    coefficients: np.ndarray | None = None,
) -> da.Array:
    """Remove each slice's background from a dask stack (whole-slice chunks; exact per slice).

    ``coefficients`` (z, n_terms) fixes the polynomial per slice (from
    :func:`estimate_backgrounds_dask`, or one row repeated for a per-volume
    background); otherwise each slice is fitted where it is processed.
    """
    arr = arr.rechunk({1: -1, 2: -1})
    params = {"method": method, "degree": degree, "sigma_fraction": sigma_fraction, "mode": mode}
    if coefficients is not None and method == "poly":
        from pipeline.correct.slabs import map_slabs

        return map_slabs(arr, _correct_block, np.asarray(coefficients), dtype=np.float32, **params)
    return arr.map_blocks(_correct_block, rows=None, dtype=np.float32, **params)


def _correct_block(block: Any, rows: np.ndarray | None, method: str, degree: int, sigma_fraction: float, mode: str) -> Any:
    """Background removed from every slice of a block; ``rows`` its slices' polynomial coefficients or None."""
    xp = xp_of(block)
    out = xp.empty(block.shape, dtype=xp.float32)
    for k in range(block.shape[0]):
        if rows is not None and method == "poly":
            bg = _surface(rows[k], block.shape[1:], xp, degree)
        else:
            bg = background(block[k], method, degree=degree, sigma_fraction=sigma_fraction)
        out[k] = remove_background(block[k], bg, mode)
    return out
