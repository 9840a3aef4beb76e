"""Curtaining: vertical stripes (constant along y, the milling direction) removed per slice.

A curtain adds an offset ``s(x)`` to every pixel of column ``x``; it does not
change the shape of the column's intensity distribution, it shifts it. The
structure (pores, solid, texture) changes from row to row, the stripes do not.

``histogram`` (default) registers each column's intensity histogram on the
histogram of the whole slice:

1. Flat pixels only: the gradient magnitude (Sobel; the x-derivative taken
   on the slice minus the current stripe estimate, the y-derivative is blind
   to stripes) selects the ``keep`` fraction of the flattest pixels. Edges of the structure, whose blurred ramps bias any
   column statistic, are left out.
2. Each column's histogram of flat pixels is cross-correlated (FFT along the
   intensity axis, gaussian kernel of width ``bandwidth``, by default the
   noise level estimated from row-to-row differences) with the histogram of
   the whole destriped slice; the shift of the correlation peak (parabolic
   sub-bin fit) is the column's offset. Two passes (estimate, rebuild the
   reference from the destriped slice, estimate again).
   Unlike a column mean or median, the peak shift does not depend on how much
   pore or solid a column holds: phases line up wherever they are.
3. Broad trends across x (illumination, longer than ``background_px``) are a
   running median of the offsets and are kept in the image; what is left is
   the stripe profile (its level anchored on the stripe-free columns).
4. Significance: the offsets are estimated again from two interleaved halves
   of the rows (blocks of 8 rows) and from 4 bands of rows, top to bottom.
   Stripes are the same in all of them; noise and structure are not, so the
   robust spread of the half-differences (pooled over columns, scaled by each
   column's pixel count) is the standard error of an offset, raised where the
   4 band offsets of a column disagree (their variance, smoothed over 2 px):
   content that is not the same from top to bottom (a charging patch, a
   feature of the structure) is not taken for a stripe. A non-negative
   garrote at ``threshold`` standard errors leaves columns without a
   significant stripe alone and shrinks the rest only slightly.

``profile`` (the older method, kept for the baseline and for comparison):
each row high-passed across x with a median filter of ``width`` px, the column
profile of that residue is its median along y, thresholded by its standard error.

Conventions: offsets are in the image's own units and are subtracted
(``out = slice - s(x)``); x is the last axis, y the one before it; output is
float32; inputs are never modified. NumPy or CuPy arrays (the module follows
the input's array module).

Limits (measured with tests/correct/test_destripe.py's generators and on
rendered stacks; fraction = 1 - energy(out - clean) / energy(striped - clean)):

* dense thin stripes (one every 12 px, 0.7-2.5 px wide, up to 8 % of the
  range, constant along y) over a blurred two-phase structure with noise
  (3 % of the range), 200 x 180 px: 97.1 % / 96.3 % of the stripe energy
  removed for seeds 0 / 1 (92.8-98.1 % over seeds 0-5; the ``profile`` method
  removes 14-52 %); a stripe-free image changes by 0.03-0.06 % of its range RMS.
* the same stripes with an amplitude varying slowly along y (+-30 %):
  86-93 % (seeds 0-5); one offset per column leaves the part that changes.
* curtains of :func:`pipeline.synth.render_builtin.render_builtin`
  (``curtain_amp`` 0.1, most starting part-way down the slice, some 20-40 px
  wide) on textured, edge-brightened, charged and shaded 256 x 256 renders
  with noise of 4 % of the range: 31-71 % removed (seeds 1-4; one offset per
  column could reach 77-97 %, ``profile`` reaches 1-9 %); on 160 x 160
  renders only 11-39 % (``profile`` 18-27 %). The histograms of textured
  images have broad peaks, so a column's make-up moves its offset by a few %
  of the range, and the significance test then leaves weak curtains in. A
  clean render changes by 0.2-0.7 % of its range RMS.
* stripes broader than about ``background_px`` / 2 are taken for
  illumination and left in; stripes stronger than ``max_amplitude`` of the
  range are only partly removed; clipped (saturated) pixels do not show a
  stripe and pull its estimate towards 0; images with few rows estimate less
  well (the error of an offset falls as 1 / sqrt(rows)).
* time and memory: 33 ms per 512 x 512 float32 slice, 100 ms per 1024 x 1024 (noisy two-phase), on
  one CPU core with NumPy (``profile``: 66 ms and 240 ms); peak temporaries
  about 70 x the slice (23 MB for a 325 x 256 float32 slice).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import dask.array as da
import numpy as np

from pipeline.backend import ndimage_of, xp_of

__all__ = [
    "stripe_profile",
    "destripe_profile",
    "column_offsets",
    "destripe_histogram",
    "destripe",
    "destripe_dask",
    "stripe_offsets_dask",
    "apply_offsets_dask",
    "METHODS",
]

#: Names accepted by :func:`destripe` and :func:`destripe_dask`.
METHODS: tuple[str, ...] = ("histogram", "profile")

_MIN_PIXELS = 8  # a column with fewer flat pixels is left alone
_BANDS = 4  # runs of rows, top to bottom, whose offsets must agree


# --------------------------------------------------------------------------- profile (older method)
def stripe_profile(slice2d: Any, *, width: int = 15, threshold: float = 3.0) -> Any:
    """Stripe offset of every column of one (y, x) slice by the median-residue method (float64, length x).

    Parameters
    ----------
    slice2d : array (y, x), NumPy or CuPy
        One slice; not modified.
    width : int
        Median window across x in px (made odd, at least 3); stripes
        narrower than about ``width / 2`` are found.
    threshold : float
        Columns whose median residue is under ``threshold`` standard errors
        (robust, from the column's own spread) are set to 0.

    Returns
    -------
    array (x,)
        Offset to subtract from every row, in the slice's units.
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
    """Subtract :func:`stripe_profile` from every row of a (y, x) slice (float32 out)."""
    xp = xp_of(slice2d)
    return (slice2d.astype(xp.float64) - stripe_profile(slice2d, width=width, threshold=threshold)[None, :]).astype(xp.float32)


# --------------------------------------------------------------------------- histogram (default)
def _peak_shift(score: Any, m: int) -> Any:
    """Sub-bin position (bins, in [-m, m]) of the maximum of circular correlations ``score[..., t]``."""
    xp = xp_of(score)
    sc = xp.concatenate([score[..., score.shape[-1] - m :], score[..., : m + 1]], axis=-1)  # lags -m..m
    j = xp.clip(xp.argmax(sc, axis=-1), 1, 2 * m - 1)
    y0 = xp.take_along_axis(sc, (j - 1)[..., None], axis=-1)[..., 0]
    y1 = xp.take_along_axis(sc, j[..., None], axis=-1)[..., 0]
    y2 = xp.take_along_axis(sc, (j + 1)[..., None], axis=-1)[..., 0]
    den = y0 - 2.0 * y1 + y2
    off = xp.where(den < 0, 0.5 * (y0 - y2) / xp.where(den < 0, den, -1.0), 0.0)
    return (j - m).astype(xp.float64) + xp.clip(off, -1.0, 1.0)


def _fast_len(n: int, xp: Any) -> int:
    """A transform length >= n that the FFT of the array module does fast."""
    if xp is np:
        import scipy.fft

        return int(scipy.fft.next_fast_len(int(n), real=True))
    return 1 << int(math.ceil(math.log2(n)))


def _rfft(a: Any, n: int) -> Any:
    """Real FFT along the last axis in single precision (scipy.fft for NumPy: float32 in, complex64 out)."""
    xp = xp_of(a)
    if xp is np:
        import scipy.fft

        return scipy.fft.rfft(a.astype(np.float32), n, axis=-1)
    return xp.fft.rfft(a.astype(xp.float32), n, axis=-1)


def _irfft(f: Any, n: int) -> Any:
    """Inverse of :func:`_rfft` (real output, last axis)."""
    xp = xp_of(f)
    if xp is np:
        import scipy.fft

        return scipy.fft.irfft(f, n, axis=-1)
    return xp.fft.irfft(f, n, axis=-1)


def _garrote(v: Any, t: Any) -> Any:
    """Non-negative garrote: 0 where ``|v| <= t``, else ``v - t**2 / v``."""
    xp = xp_of(v)
    t2 = t * t
    big = v * v > t2
    return xp.where(big, v - t2 / xp.where(big, v, 1.0), 0.0)


def _background(v: Any, half_width: int) -> Any:
    """Running median along the last axis over ``2 * half_width + 1`` px, smoothed (gaussian, half_width / 4)."""
    ndi = ndimage_of(v)
    size = (1,) * (v.ndim - 1) + (2 * half_width + 1,)
    b = ndi.median_filter(v, size=size, mode="reflect")
    return ndi.gaussian_filter1d(b, max(half_width / 4.0, 0.5), axis=-1, mode="reflect")


def column_offsets(
    slice2d: Any,
    *,
    keep: float = 0.6,
    threshold: float = 2.5,
    background_px: int = 64,
    max_amplitude: float = 0.25,
    bandwidth: float | None = None,
    n_iter: int = 2,
    return_se: bool = False,
) -> Any:
    """Stripe offset of every column of one (y, x) slice by histogram registration (float64, length x).

    See the module docstring for the method.

    Parameters
    ----------
    slice2d : array (y, x), NumPy or CuPy
        One slice, any real dtype; not modified.
    keep : float
        Fraction (0, 1] of the flattest pixels (smallest gradient magnitude)
        whose intensities are registered.
    threshold : float
        Offsets under ``threshold`` standard errors are set to 0, larger ones
        shrunk by a non-negative garrote; 0 keeps the raw estimate.
    background_px : int
        Half-width in px of the running median across x taken as
        illumination and kept in the image (0: only the median level of the
        profile is removed).
    max_amplitude : float
        Largest offset searched, as a fraction of the slice's 0.5-99.5
        percentile range.
    bandwidth : float, optional
        Gaussian kernel width in intensity units; default the noise standard
        deviation (from row-to-row differences), at least 1/256 of the range.
    n_iter : int
        Registration passes (the reference is rebuilt from the destriped
        slice between passes).
    return_se : bool
        Also return the standard error of every offset.

    Returns
    -------
    array (x,) or (array (x,), array (x,))
        Offsets to subtract from every row, in the slice's units (and their
        standard errors).
    """
    xp = xp_of(slice2d)
    ndi = ndimage_of(slice2d)
    if getattr(slice2d, "ndim", None) != 2:
        raise ValueError(f"expected a 2D (y, x) slice; got shape {getattr(slice2d, 'shape', None)}")
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep must be in (0, 1]; got {keep}")
    ny, nx = (int(v) for v in slice2d.shape)
    zeros = xp.zeros(nx, dtype=xp.float64)
    a = slice2d.astype(xp.float32)
    if ny < 4 or nx < 3:
        return (zeros, zeros + xp.inf) if return_se else zeros

    sub = 2 if ny * nx >= 4096 else 1  # percentiles and noise from every other pixel: plenty
    lo, hi = (float(v) for v in xp.percentile(a[::sub, ::sub], xp.asarray([0.5, 99.5])))
    span = hi - lo
    if not math.isfinite(span) or span <= 0.0:
        return (zeros, zeros + xp.inf) if return_se else zeros
    dy = (a[1:] - a[:-1])[::sub, ::sub]
    noise = 1.4826 * float(xp.median(xp.abs(dy - xp.median(dy)))) / math.sqrt(2.0)
    h = float(bandwidth) if bandwidth else noise
    step = max(h / 4.0, span / 1024.0)  # histogram bin
    h = max(h, 2.0 * step, span / 256.0)
    m = max(2, int(math.ceil(max_amplitude * span / step)))  # lags searched: -m..m bins
    # the histograms hold the values (plus the kernel's tails); the transform length leaves
    # room for the lags, so correlations at -m..m do not wrap around
    pad = int(math.ceil(3.0 * h / step))
    origin = lo - pad * step
    nb = int(math.ceil(span / step)) + 2 * pad
    nfft = _fast_len(nb + m + 1, xp)
    kf = xp.fft.rfftfreq(nfft)
    kernel = xp.exp(-2.0 * (math.pi * (h / step) * kf) ** 2).astype(xp.float32)  # gaussian of sigma h, in Fourier

    # bin of every pixel keyed by column; for the significance test also by row half
    # (interleaved blocks of rows: noise and structure differ, stripes do not) and by row
    # band (_BANDS runs of rows from top to bottom: a stripe is the same in all of them)
    itype = xp.int32 if _BANDS * nx * nb < 2**31 else xp.int64
    idx = xp.clip(((a - np.float32(origin)) * np.float32(1.0 / step)).astype(itype), 0, nb - 1)
    key = (xp.arange(nx, dtype=itype)[None, :] * nb + idx).ravel()
    del idx
    block = max(1, min(8, ny // 4))
    half = xp.repeat(((xp.arange(ny) // block) % 2).astype(itype) * (nx * nb), nx)
    band = xp.repeat(((xp.arange(ny) * _BANDS) // ny).astype(itype) * (nx * nb), nx)

    # gradient magnitude (Sobel, reflecting borders): the y part is stripe-free; the x part of the
    # slice minus the current profile is sobel_x(slice) - 4 * central difference of the profile
    gy = ndi.sobel(a, axis=0)
    gx0 = ndi.sobel(a, axis=1)
    gy2 = gy * gy
    del gy

    raw = zeros
    for _ in range(max(1, int(n_iter))):
        dxs = (4.0 * ndi.correlate1d(raw, xp.asarray([-1.0, 0.0, 1.0]), mode="reflect")).astype(xp.float32)
        g2 = gx0 - dxs[None, :]
        g2 *= g2
        g2 += gy2
        if keep < 1.0:
            cut = float(xp.percentile(g2[::sub, ::sub], 100.0 * keep))
            w = (g2 <= cut).astype(xp.float32).ravel()
        else:
            w = xp.ones(ny * nx, dtype=xp.float32)
        hist = xp.bincount(key, weights=w, minlength=nx * nb).reshape(nx, nb)
        f_col = _rfft(hist, nfft)
        # reference: every column's histogram moved back by its current offset (a phase ramp)
        f_ref = (f_col * xp.exp(1j * (2.0 * math.pi * kf[None, :] * (raw / step)[:, None]).astype(xp.float32))).sum(axis=0)
        g = xp.conj(f_ref) * kernel
        raw = _peak_shift(_irfft(f_col * g, nfft), m) * step
    del f_col, hist
    hist_half = xp.bincount(key + half, weights=w, minlength=2 * nx * nb).astype(xp.float32).reshape(2, nx, nb)
    halves = _peak_shift(_irfft(_rfft(hist_half, nfft) * g, nfft), m) * step  # (2, x)
    n_half = hist_half.sum(axis=-1, dtype=xp.float64)  # (2, x)
    del hist_half
    hist_band = xp.bincount(key + band, weights=w, minlength=_BANDS * nx * nb).astype(xp.float32).reshape(_BANDS, nx, nb)
    bands = _peak_shift(_irfft(_rfft(hist_band, nfft) * g, nfft), m) * step  # (_BANDS, x)
    n_band = hist_band.sum(axis=-1, dtype=xp.float64)  # (_BANDS, x)
    del hist_band

    count = n_half.sum(axis=0)
    usable = xp.all(n_half >= _MIN_PIXELS / 2, axis=0) & xp.all(n_band >= 1, axis=0)
    # error of the whole-column offset from the half difference, pooled over columns:
    # var(a - b) = s^2 (1/n_a + 1/n_b), so (a - b) sqrt(n_a n_b) / n has the variance s^2 / n
    d = (halves[0] - halves[1]) * xp.sqrt(n_half[0] * n_half[1]) / xp.maximum(count, 1.0)
    d = d[usable]
    se_pool = 1.4826 * float(xp.median(xp.abs(d - xp.median(d)))) if int(d.size) >= 5 else noise
    se = se_pool * xp.sqrt(float(xp.median(count)) / xp.maximum(count, 1.0))
    # consistency along y: the spread of the band offsets (each band's median level taken
    # out), smoothed over a few columns, counts as error too; content that is not the same
    # from top to bottom (charging, a feature of the structure) is then left alone
    bands = bands - xp.median(bands, axis=-1, keepdims=True)
    spread = ndi.gaussian_filter1d(xp.var(bands, axis=0, ddof=1) / _BANDS, 2.0, mode="reflect")
    se = xp.sqrt(xp.maximum(se * se, spread))

    raw = xp.where(usable, raw, 0.0)
    if background_px and background_px > 0:
        prof = raw - _background(raw, int(background_px))
    else:
        prof = raw - (xp.median(raw[usable]) if bool(usable.any()) else 0.0)
    if threshold and threshold > 0:
        prof = _garrote(prof, threshold * se)
    prof = xp.where(usable, prof, 0.0)
    se = xp.where(usable, se, xp.inf)
    return (prof, se) if return_se else prof


def destripe_histogram(slice2d: Any, **params: Any) -> Any:
    """Subtract :func:`column_offsets` from every row of a (y, x) slice (float32 out)."""
    xp = xp_of(slice2d)
    return slice2d.astype(xp.float32) - column_offsets(slice2d, **params).astype(xp.float32)[None, :]


# --------------------------------------------------------------------------- stacks
def destripe(stack: Any, method: Literal["histogram", "profile"] = "histogram", **params: Any) -> Any:
    """Destripe every (y, x) slice of a (z, y, x) stack; float32 out, input unchanged.

    Parameters
    ----------
    stack : array (z, y, x), NumPy or CuPy
        Slices; stripes run along y (constant in y, fixed in x).
    method : {"histogram", "profile"}
        ``histogram`` (:func:`column_offsets`) or the older ``profile``
        (:func:`stripe_profile`).
    **params
        Keyword arguments of the method's function.

    Returns
    -------
    array (z, y, x) float32
        Destriped stack, same array module as ``stack``.
    """
    if getattr(stack, "ndim", None) != 3:
        raise ValueError(f"expected a 3D (z, y, x) array; got shape {getattr(stack, 'shape', None)}")
    xp = xp_of(stack)
    fn = {"histogram": destripe_histogram, "profile": destripe_profile}.get(method)
    if fn is None:
        raise ValueError(f"destripe method {method!r} is not one of: {', '.join(METHODS)}")
    out = xp.empty(stack.shape, dtype=xp.float32)
    for k in range(stack.shape[0]):
        out[k] = fn(stack[k], **params)
    return out


def destripe_dask(arr: da.Array, method: Literal["histogram", "profile"] = "histogram", **params: Any) -> da.Array:
    """:func:`destripe` over a dask (z, y, x) stack; equal to the in-memory result.

    Every slice is estimated as a whole, so the stack is rechunked to whole
    (y, x) slices (z chunks are kept); the result has those chunks.
    """
    if arr.ndim != 3:
        raise ValueError(f"expected a 3D (z, y, x) array; got shape {arr.shape}")
    if method not in METHODS:
        raise ValueError(f"destripe method {method!r} is not one of: {', '.join(METHODS)}")
    arr = arr.rechunk({1: -1, 2: -1})
    return arr.map_blocks(destripe, method, dtype=np.float32, **params)


def _offsets(stack: Any, method: str, **params: Any) -> Any:
    """Offsets (z, x) of every slice of a (z, y, x) block, float64."""
    xp = xp_of(stack)
    fn = stripe_profile if method == "profile" else column_offsets
    return xp.stack([fn(stack[k], **params) for k in range(stack.shape[0])]) if stack.shape[0] else xp.zeros((0, stack.shape[2]))


def _subtract(stack: Any, offsets: Any, method: str) -> Any:
    """``stack - offsets[:, None, :]`` rounded as :func:`destripe` rounds (float32 out)."""
    xp = xp_of(stack)
    offsets = xp.asarray(offsets)
    offsets = offsets[:, None, :] if offsets.ndim == 2 else offsets
    if method == "profile":
        return (stack.astype(xp.float64) - offsets).astype(xp.float32)
    return stack.astype(xp.float32) - offsets.astype(xp.float32)


def stripe_offsets_dask(arr: da.Array, method: Literal["histogram", "profile"] = "histogram", **params: Any) -> np.ndarray:
    """Stripe offsets of every slice of a dask (z, y, x) stack, computed slab by slab.

    Returns a small NumPy array (z, x) (float64, the stack's units), the
    offsets :func:`destripe` subtracts: estimate once, apply with
    :func:`apply_offsets_dask` as often as needed (the estimate is the
    expensive part of destriping).
    """
    if arr.ndim != 3:
        raise ValueError(f"expected a 3D (z, y, x) array; got shape {arr.shape}")
    if method not in METHODS:
        raise ValueError(f"destripe method {method!r} is not one of: {', '.join(METHODS)}")
    arr = arr.rechunk({1: -1, 2: -1})

    def fn(block: Any) -> np.ndarray:
        out = _offsets(block, method, **params)
        return out.get() if hasattr(out, "get") else np.asarray(out)  # CuPy -> host: the result is small

    offsets = arr.map_blocks(fn, dtype=np.float64, drop_axis=[1], chunks=(arr.chunks[0], arr.chunks[2]))
    return np.asarray(offsets.compute())


def _subtract_block(block: Any, rows: np.ndarray, method: str, block_info: Any = None) -> Any:
    """:func:`_subtract` of one block; ``rows`` holds the block's slices' offsets, all columns."""
    x0, x1 = block_info[0]["array-location"][2] if block_info else (0, block.shape[2])
    return _subtract(block, rows[:, x0:x1], method)


def apply_offsets_dask(arr: da.Array, offsets: np.ndarray, method: Literal["histogram", "profile"] = "histogram") -> da.Array:
    """Subtract per-slice column offsets (z, x) from a dask stack; equal to :func:`destripe_dask`.

    Chunks are kept (the subtraction is per pixel); float32 out. Each slab's
    task carries only its own slices' offsets (:func:`pipeline.correct.slabs.map_slabs`):
    offsets given as a dask array of their own would be root tasks, which
    the distributed scheduler holds back while it computes every block of
    ``arr`` first (the whole stack in memory; measured on 1 worker).
    """
    from pipeline.correct.slabs import map_slabs

    offsets = np.asarray(offsets, dtype=np.float64)
    if arr.ndim != 3 or offsets.shape != (arr.shape[0], arr.shape[2]):
        raise ValueError(f"offsets of shape {offsets.shape} do not fit a stack of shape {arr.shape}; expected (z, x)")
    return map_slabs(arr, _subtract_block, offsets, dtype=np.float32, method=method)
