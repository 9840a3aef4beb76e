"""Curtaining: vertical stripes (constant along y, the milling direction) removed per slice.

``profile`` (default): each row is high-passed across x with a median filter
of ``width`` px (keeps edges of the structure, takes out thin stripes), the
column profile of that residue is its median along y (robust: structure
edges are rare in a column, a stripe is in every row), and only columns where
the profile stands out from its own standard error are corrected, so an image
without stripes is left nearly untouched.

``wavelet_fft``: the wavelet-Fourier filter of Muench et al. (2009): the
vertical-detail coefficients of a ``levels``-level wavelet decomposition are
damped near zero vertical frequency by ``1 - exp(-k^2 / 2 sigma^2)``.
"""

from __future__ import annotations

from typing import Any, Literal

import dask.array as da
import numpy as np

from pipeline.backend import ndimage_of, to_numpy, xp_of

__all__ = ["stripe_profile", "destripe_profile", "destripe_wavelet_fft", "destripe", "destripe_dask"]


def stripe_profile(slice2d: Any, *, width: int = 15, threshold: float = 3.0) -> Any:
    """Stripe offset of every column of one (y, x) slice (float64, length x).

    Parameters
    ----------
    width : int
        Median window across x in px (odd); stripes narrower than about
        ``width / 2`` are found.
    threshold : float
        Columns whose median residue is under ``threshold`` standard errors
        (robust, from the column's own spread) are set to 0.
    """
    xp = xp_of(slice2d)
    ndi = ndimage_of(slice2d)
    a = slice2d.astype(xp.float64)
    ny = a.shape[0]
    width = max(3, int(width) | 1)
    residue = a - ndi.median_filter(a, size=(1, width), mode="reflect")
    prof = xp.median(residue, axis=0)
    spread = 1.4826 * xp.median(xp.abs(residue - prof[None, :]), axis=0)
    se = 1.2533 * spread / np.sqrt(max(ny, 1))
    return xp.where(xp.abs(prof) > threshold * se, prof, 0.0)


def destripe_profile(slice2d: Any, *, width: int = 15, threshold: float = 3.0) -> Any:
    """Subtract :func:`stripe_profile` from every row (float32 out)."""
    xp = xp_of(slice2d)
    return (slice2d.astype(xp.float64) - stripe_profile(slice2d, width=width, threshold=threshold)[None, :]).astype(xp.float32)


def destripe_wavelet_fft(slice2d: Any, *, levels: int = 4, sigma: float = 2.0, wavelet: str = "db4") -> Any:
    """Muench et al. (2009) wavelet-Fourier destriping of one (y, x) slice (CPU; float32 out)."""
    import pywt

    xp = xp_of(slice2d)
    a = to_numpy(slice2d).astype(np.float64)
    coeffs = pywt.wavedec2(a, wavelet, level=levels)
    out = [coeffs[0]]
    for ch, cv, cd in coeffs[1:]:
        f = np.fft.fft(cv, axis=0)
        k = np.fft.fftfreq(cv.shape[0]) * cv.shape[0]
        damp = 1.0 - np.exp(-(k**2) / (2.0 * sigma * sigma))
        out.append((ch, np.real(np.fft.ifft(f * damp[:, None], axis=0)), cd))
    rec = pywt.waverec2(out, wavelet)[: a.shape[0], : a.shape[1]]
    return xp.asarray(rec.astype(np.float32))


def destripe(stack: Any, method: Literal["profile", "wavelet_fft"] = "profile", **params: Any) -> Any:
    """Destripe every slice of a (z, y, x) stack; float32 out."""
    if getattr(stack, "ndim", None) != 3:
        raise ValueError(f"expected a 3D (z, y, x) array; got shape {getattr(stack, 'shape', None)}")
    xp = xp_of(stack)
    fn = {"profile": destripe_profile, "wavelet_fft": destripe_wavelet_fft}.get(method)
    if fn is None:
        raise ValueError(f"destripe method {method!r} is not one of profile, wavelet_fft")
    out = xp.empty(stack.shape, dtype=xp.float32)
    for k in range(stack.shape[0]):
        out[k] = fn(stack[k], **params)
    return out


def destripe_dask(arr: da.Array, method: Literal["profile", "wavelet_fft"] = "profile", **params: Any) -> da.Array:
    """:func:`destripe` over whole-slice chunks of a dask stack (exact)."""
    arr = arr.rechunk({1: -1, 2: -1})
    return arr.map_blocks(destripe, method, dtype=np.float32, **params)
