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

``onset`` (opt-in; offsets that switch on part-way down the slice,
:func:`onset_offsets`): each column's offset is ``before`` above an onset
row and ``after`` below it (a sigmoid step), or constant; fitted by weighted
least squares on the bright phase only (Otsu mask, eroded, relative to its
local level), over a grid of onset rows and widths; standard errors scaled
by two interleaved halves of the rows, then a garrote. Offsets are tables
(4, x) per slice (:func:`onset_field` makes the (y, x) field).

``onset`` with ``pool_slices`` W > 0 (:func:`pooled_onset_offsets`): the
bright-phase residues of every slice are summed per column and per band of
rows (:func:`onset_stats`, a small (2, bands, x) table), the tables of W
slices either side are added (curtains stay in place from slice to slice),
and the step or constant is fitted on the sums; a step only where it
explains ``select`` error variances more than a constant; the error scale
from even against odd bands; the garrote on the pooled estimate; ``passes``
(mask and level taken on the slices minus the previous pooled estimate).
:func:`stripe_offsets_dask` computes the tables slab by slab and pools them
in memory, so slabs do not limit the window (equal to the in-memory result).

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
  wide) on textured, edge-brightened, charged and shaded renders
  (tests/correct/test_destripe_renders.py: noise-free detector plus gaussian
  noise of 8 levels, about 4 % of the range; slices 2, 6, 10 of 12), seeds 1-4,
  fraction removed / clean render changed (% of its range RMS):

  - ``histogram`` 256 x 256: 0.31 0.31 0.36 0.71 / 0.22 0.40 0.68 0.26;
    160 x 160: 0.39 0.11 0.21 0.58 / 0.56 0.46 0.38 0.87.
  - ``onset`` 256 x 256: 0.44 0.39 0.49 0.58 / 0.08 0.22 0.17 0.10;
    160 x 160: 0.47 0.12 0.23 0.48 / 0.40 0.71 0.59 0.50.
  - with the renderer's own detector noise (Poisson, dose 60, read noise;
    about 23 levels on the solid), ``onset`` 256: 0.30 0.26 0.23 0.43 / 0.01
    0.17 0.07 0.00, 160: 0.28 0.04 0.08 0.24 / 0.24 0.28 0.42 0.41;
    ``histogram`` 256: 0.07 0.01 0.07 0.47 / 0.14 0.39 0.19 0.43, 160: 0.28
    -0.04 0.00 0.21 / 0.13 0.29 0.25 0.24.
  - one offset per column at best (the true field's column mean) removes
    0.77 0.83 0.80 0.97 (256) and 0.92 0.86 0.88 0.94 (160); one per band of
    1/8 of the rows 0.99.

  The goal of issue 11 (85 % removed, a clean render changed < 0.5 %) is not
  reached by any method here. The limit is the texture of the solid: on a
  noise-free clean render the mean of a column's face-solid pixels relative to
  their local level varies by 3.0-3.4 levels RMS (160) and 2.0-2.3 (256) from
  column to column, as much as the weaker curtains (8-20 levels at their peak,
  0.1 x 0.4-1 of the range), so the significance test must leave those in, and
  short segments (an onset near the top or bottom) are not trusted.
* ``onset`` pooled over slices (``pool_slices`` 8, :data:`POOLED_DEFAULTS`;
  :func:`pooled_onset_offsets`), 28 consecutive slices of the same renders
  (slices 2-25 scored), seeds 1-4, fraction removed / clean change (%):

  - gaussian noise 8 levels: 160: 0.73 0.70 0.77 0.72 / 0.44 0.50 0.34 0.12;
    256: 0.44 0.56 0.64 0.86 / 0.06 0.26 0.08 0.04.
  - the renderer's own noise: 160: 0.70 0.69 0.75 0.67 / 0.27 0.15 0.29 0.05;
    256: 0.39 0.50 0.57 0.84 / 0.01 0.23 0.04 0.01.
  - the premise that pooling cuts the error by sqrt(window / 3) does not
    hold: on a noise-free clean render the column means of the bright phase
    correlate from slice to slice by 0.7-0.85 (lag 1), 0.3-0.5 (lag 4) and
    still 0.2-0.45 (lag 8) (the structure, pore edges, lasts many slices),
    so 17 slices cut their RMS only from 3.3 to 2.3 levels (160, level 24 px)
    or 2.0 to 1.0 (level 8 px). Without any garrote the pooled fit removes
    only 0.53-0.74 (160), so the goal of issue 11 is still not reached; with a
    perfect (noise-free) estimate the same model removes 0.96-0.996.
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
from pipeline.progress import compute

__all__ = [
    "stripe_profile",
    "destripe_profile",
    "column_offsets",
    "destripe_histogram",
    "destripe",
    "destripe_dask",
    "stripe_offsets_dask",
    "apply_offsets_dask",
    "onset_offsets",
    "onset_field",
    "destripe_onset",
    "stripe_rms",
    "onset_stats",
    "onset_pooled",
    "pooled_onset_offsets",
    "POOLED_DEFAULTS",
    "METHODS",
    "ONSET_ROWS",
]

#: Names accepted by :func:`destripe` and :func:`destripe_dask`.
METHODS: tuple[str, ...] = ("histogram", "profile", "onset")

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


# --------------------------------------------------------------------------- onset (opt-in, y-dependent)
#: Rows of an ``onset`` offsets table: value before the onset, after it, onset row, onset width (px).
ONSET_ROWS: int = 4


def _otsu(values: Any, bins: int = 256) -> float:
    """Otsu threshold of ``values`` (between their 0.5 and 99.5 percentiles)."""
    xp = xp_of(values)
    lo, hi = (float(t) for t in xp.percentile(values, xp.asarray([0.5, 99.5])))
    if not hi > lo:
        return lo
    h, e = xp.histogram(xp.clip(values, lo, hi), bins=bins, range=(lo, hi))
    h = h.astype(xp.float64)
    c = 0.5 * (e[:-1] + e[1:])
    w0 = xp.cumsum(h)
    w1 = w0[-1] - w0
    m0 = xp.cumsum(h * c)
    between = w0 * w1 * (m0 / xp.maximum(w0, 1.0) - (m0[-1] - m0) / xp.maximum(w1, 1.0)) ** 2
    return float(c[int(xp.argmax(between))])


def onset_field(table: Any, ny: int) -> Any:
    """Stripe field (y, x) of one slice from its ``onset`` table (4, x) (float64, same array module).

    ``before + (after - before) * sigmoid((y - onset_row) / onset_width)``.
    """
    xp = xp_of(table)
    before, after, y0, w = table[0], table[1], table[2], table[3]
    y = xp.arange(int(ny), dtype=xp.float64)[:, None]
    z = xp.clip(-(y - y0[None, :]) / xp.maximum(w[None, :], 1e-6), -60.0, 60.0)
    return before[None, :] + (after - before)[None, :] / (1.0 + xp.exp(z))


def _pair_fit(p: Any, wgt: Any, num: Any) -> tuple[Any, Any, Any, Any, Any]:
    """Weighted least squares of ``b (1 - p) + a p`` per column: (b, a, var factor b, var factor a, ok)."""
    xp = xp_of(p)
    q = 1.0 - p
    s11, s01, s00 = (p * p * wgt).sum(0), (p * q * wgt).sum(0), (q * q * wgt).sum(0)
    r1, r0 = (p * num).sum(0), (q * num).sum(0)
    det = s00 * s11 - s01 * s01
    ok = det > 1e-6 * (s00 + s11) ** 2 + 1e-12
    d = xp.where(ok, det, 1.0)
    return (s11 * r0 - s01 * r1) / d, (s00 * r1 - s01 * r0) / d, s11 / d, s00 / d, ok


def _onset_residue(a: Any, field: Any, *, erode_px: int, level_px: float, clip: float, smooth_x: float) -> tuple[Any, Any, Any, Any]:
    """Bright-phase residues of one slice (float32 ``a``) given the current stripe field: (r, mask, num, wgt).

    ``r``: residue relative to the local level of the bright phase, the field
    added back, 0 off the mask; ``num``, ``wgt``: ``r`` and the mask smoothed
    across x (float64), the sums the least squares are made of.
    """
    xp = xp_of(a)
    ndi = ndimage_of(a)
    cor = a - field
    sm = ndi.gaussian_filter(cor, 1.0)
    m = sm > _otsu(sm[::2, ::2])
    if erode_px > 0:
        m = ndi.binary_erosion(m, iterations=int(erode_px))
    if float(m.mean()) < 0.05:
        m = xp.ones(a.shape, dtype=bool)
    mf = m.astype(xp.float32)
    level = ndi.gaussian_filter(mf * cor, level_px) / xp.maximum(ndi.gaussian_filter(mf, level_px), 1e-6)
    r = cor - level
    if clip and clip > 0:
        sr = 1.4826 * float(xp.median(xp.abs(r[m])))
        r = xp.clip(r, -clip * sr, clip * sr)
    r = (r + field) * mf
    num = ndi.gaussian_filter1d(r, smooth_x, axis=1).astype(xp.float64)
    wgt = ndi.gaussian_filter1d(mf, smooth_x, axis=1).astype(xp.float64)
    return r, mf, num, wgt


def onset_offsets(
    slice2d: Any,
    *,
    threshold: float = 4.0,
    erode_px: int = 2,
    level_px: float = 24.0,
    smooth_x: float = 1.0,
    onset_widths: tuple[float, ...] = (0.02, 0.05),
    onset_range: tuple[float, float] = (0.2, 0.8),
    clip: float = 2.5,
    n_iter: int = 2,
) -> Any:
    """Stripe offsets of one (y, x) slice that may switch on part-way down: an ``onset`` table (4, x).

    Every column's offset is ``before`` above a row ``onset`` and ``after``
    below it (a sigmoid step of width ``onset_width``), or the same all the way
    down; measured on the bright phase only.

    1. Face pixels: the slice (minus the current stripe field) blurred by 1 px,
       above its Otsu threshold, eroded by ``erode_px`` (edges and their
       brightening left out).
    2. Their local level (gaussian of ``level_px``, masked) is the reference;
       residues are winsorised at ``clip`` robust standard deviations and
       smoothed across x by ``smooth_x`` px.
    3. Per column, weighted least squares of ``before (1 - s) + after s`` for
       every sigmoid ``s`` of a grid (onset rows in ``onset_range`` of the
       height, widths ``onset_widths`` of the height) and of a constant; the
       best fit is kept.
    4. Standard errors from the fit, scaled by the spread of the differences
       of two interleaved halves of the rows (texture and smoothing correlate
       pixels); ``before`` and ``after`` shrunk by a non-negative garrote at
       ``threshold`` standard errors. ``n_iter`` passes (mask and level taken
       on the destriped slice).

    Parameters
    ----------
    slice2d : array (y, x), NumPy or CuPy
        One slice; not modified.
    threshold : float
        Garrote threshold in standard errors (0: raw fit).
    erode_px : int
        Erosion of the bright-phase mask in px.
    level_px : float
        Gaussian width (px) of the local level of the bright phase; broader
        trends (illumination, charging) are not stripes.
    smooth_x : float
        Gaussian smoothing of the residues across x in px.
    onset_widths : tuple of float
        Sigmoid widths searched, fractions of the height.
    onset_range : (float, float)
        Onset rows searched, fractions of the height (shorter segments are
        not trusted).
    clip : float
        Winsorisation of the residues in robust standard deviations (0: off).
    n_iter : int
        Passes.

    Returns
    -------
    array (4, x) float64
        Rows ``before``, ``after``, ``onset_row``, ``onset_width`` (px); see
        :func:`onset_field`.
    """
    xp = xp_of(slice2d)
    ndi = ndimage_of(slice2d)
    if getattr(slice2d, "ndim", None) != 2:
        raise ValueError(f"expected a 2D (y, x) slice; got shape {getattr(slice2d, 'shape', None)}")
    ny, nx = (int(v) for v in slice2d.shape)
    table = xp.zeros((ONSET_ROWS, nx), dtype=xp.float64)
    table[3] = 1.0
    a = slice2d.astype(xp.float32)
    if ny < 8 or nx < 3 or not float(a.max()) > float(a.min()):
        return table
    y = xp.arange(ny, dtype=xp.float64)
    phis, meta = [], []
    y0s = np.arange(onset_range[0], onset_range[1] + 1e-9, 0.025) * ny
    for wf in onset_widths:
        w = max(float(wf) * ny, 0.5)
        for y0 in y0s:
            phis.append(1.0 / (1.0 + xp.exp(-(y - float(y0)) / w)))
            meta.append((float(y0), w))
    n_sig = len(phis)
    phi = xp.stack(phis)  # (K, y)
    meta_y0 = xp.asarray([m[0] for m in meta] + [-1e9])
    meta_w = xp.asarray([m[1] for m in meta] + [1.0])
    half = ((xp.arange(ny) // 8) % 2).astype(bool)
    cols = xp.arange(nx)
    field = xp.zeros((ny, nx), dtype=xp.float32)
    for _ in range(max(1, int(n_iter))):
        r, mf, num, wgt = _onset_residue(a, field, erode_px=erode_px, level_px=level_px, clip=clip, smooth_x=smooth_x)
        # every sigmoid at once: normal equations as (K, y) @ (y, x) products
        q = 1.0 - phi
        s11, s01, s00 = (phi * phi) @ wgt, (phi * q) @ wgt, (q * q) @ wgt
        r1, r0 = phi @ num, q @ num
        det = s00 * s11 - s01 * s01
        ok = det > 1e-6 * (s00 + s11) ** 2 + 1e-12
        d = xp.where(ok, det, 1.0)
        bb = (s11 * r0 - s01 * r1) / d
        aa = (s00 * r1 - s01 * r0) / d
        expl = xp.where(ok, bb * r0 + aa * r1, -xp.inf)
        n_all, r_all = wgt.sum(0), num.sum(0)
        c = r_all / xp.maximum(n_all, 1e-9)
        expl = xp.concatenate([expl, xp.where(n_all > 1.0, c * r_all, -xp.inf)[None]], axis=0)
        k = xp.argmax(expl, axis=0)
        const = k == n_sig
        ks = xp.minimum(k, n_sig - 1)
        b = xp.where(const, c, bb[ks, cols])
        av = xp.where(const, c, aa[ks, cols])
        usable = xp.where(const, n_all > 1.0, ok[ks, cols])
        vb = xp.where(const, 1.0 / xp.maximum(n_all, 1e-9), s11[ks, cols] / d[ks, cols])
        va = xp.where(const, 1.0 / xp.maximum(n_all, 1e-9), s00[ks, cols] / d[ks, cols])
        pk = xp.where(const[None, :], 1.0, phi[ks].T)  # (y, x): the chosen shape per column
        fit = b[None, :] * (1.0 - pk) + av[None, :] * pk
        res = (r - fit) * mf
        sig2 = float((res * res).sum()) / max(float(mf.sum()), 1.0)
        # error scale from two interleaved halves of the rows fitted with the same shapes
        halves = []
        for sel in (half, ~half):
            ws, ns = wgt * sel[:, None], num * sel[:, None]
            hb, ha, hvb, hva, hok = _pair_fit(pk, ws, ns)
            nh = ws.sum(0)
            hc = ns.sum(0) / xp.maximum(nh, 1e-9)
            halves.append((xp.where(const, hc, hb), xp.where(const, hc, ha),
                           xp.where(const, 1.0 / xp.maximum(nh, 1e-9), hvb), xp.where(const, 1.0 / xp.maximum(nh, 1e-9), hva),
                           xp.where(const, nh > 1.0, hok)))
        both = halves[0][4] & halves[1][4] & usable
        zb = (halves[0][0] - halves[1][0]) / xp.sqrt(xp.maximum(sig2 * (halves[0][2] + halves[1][2]), 1e-12))
        za = (halves[0][1] - halves[1][1]) / xp.sqrt(xp.maximum(sig2 * (halves[0][3] + halves[1][3]), 1e-12))
        zz = xp.concatenate([zb[both & ~const], za[both]])
        scale = 1.4826 * float(xp.median(xp.abs(zz))) if int(zz.size) >= 10 else 1.0
        se_b = scale * xp.sqrt(sig2 * vb)
        se_a = scale * xp.sqrt(sig2 * va)
        if threshold and threshold > 0:
            b, av = _garrote(b, threshold * se_b), _garrote(av, threshold * se_a)
        b, av = xp.where(usable, b, 0.0), xp.where(usable, av, 0.0)
        table = xp.stack([b, av, meta_y0[k], meta_w[k]])
        field = onset_field(table, ny).astype(xp.float32)
    return table


def destripe_onset(slice2d: Any, **params: Any) -> Any:
    """Subtract the :func:`onset_offsets` field from a (y, x) slice (float32 out)."""
    xp = xp_of(slice2d)
    return slice2d.astype(xp.float32) - onset_field(onset_offsets(slice2d, **params), slice2d.shape[0]).astype(xp.float32)


def stripe_rms(offsets: np.ndarray, ny: int) -> np.ndarray:
    """RMS over each slice of the stripe field an offsets table describes, (z,) float64.

    ``offsets`` is what :func:`stripe_offsets_dask` returns: (z, x) (one
    offset per column) or (z, 4, x) (``onset`` tables); ``ny`` the rows.
    """
    offsets = np.asarray(offsets, dtype=np.float64)
    if offsets.ndim == 2:
        return np.sqrt(np.mean(offsets**2, axis=1))
    return np.asarray([float(np.sqrt(np.mean(onset_field(t, ny) ** 2))) for t in offsets])


# --------------------------------------------------------------------------- stacks
def destripe(stack: Any, method: Literal["histogram", "profile", "onset"] = "histogram", **params: Any) -> Any:
    """Destripe every (y, x) slice of a (z, y, x) stack; float32 out, input unchanged.

    Parameters
    ----------
    stack : array (z, y, x), NumPy or CuPy
        Slices; stripes run along y (constant in y, fixed in x).
    method : {"histogram", "profile", "onset"}
        ``histogram`` (:func:`column_offsets`), the older ``profile``
        (:func:`stripe_profile`) or ``onset`` (:func:`onset_offsets`:
        offsets that switch on part-way down the slice).
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
    fn = {"histogram": destripe_histogram, "profile": destripe_profile, "onset": destripe_onset}.get(method)
    if fn is None:
        raise ValueError(f"destripe method {method!r} is not one of: {', '.join(METHODS)}")
    pool = int(params.pop("pool_slices", 0) or 0)
    if pool > 0:
        if method != "onset":
            raise ValueError(f"pool_slices is an option of the 'onset' method, not of {method!r}")
        return _subtract(stack, pooled_onset_offsets(stack, pool, **params), "onset")
    out = xp.empty(stack.shape, dtype=xp.float32)
    for k in range(stack.shape[0]):
        out[k] = fn(stack[k], **params)
    return out


def destripe_dask(arr: da.Array, method: Literal["histogram", "profile", "onset"] = "histogram", **params: Any) -> da.Array:
    """:func:`destripe` over a dask (z, y, x) stack; equal to the in-memory result.

    Every slice is estimated as a whole, so the stack is rechunked to whole
    (y, x) slices (z chunks are kept); the result has those chunks.
    """
    if arr.ndim != 3:
        raise ValueError(f"expected a 3D (z, y, x) array; got shape {arr.shape}")
    if method not in METHODS:
        raise ValueError(f"destripe method {method!r} is not one of: {', '.join(METHODS)}")
    arr = arr.rechunk({1: -1, 2: -1})
    if int(params.get("pool_slices", 0) or 0) > 0:  # slices depend on their neighbours: estimate (computed now), then apply
        return apply_offsets_dask(arr, stripe_offsets_dask(arr, method, **params), method)
    return arr.map_blocks(destripe, method, dtype=np.float32, **params)


def _offsets(stack: Any, method: str, **params: Any) -> Any:
    """Offsets of every slice of a (z, y, x) block, float64: (z, x), or (z, 4, x) for ``onset``."""
    xp = xp_of(stack)
    fn = {"profile": stripe_profile, "onset": onset_offsets}.get(method, column_offsets)
    if not stack.shape[0]:
        return xp.zeros((0, ONSET_ROWS, stack.shape[2]) if method == "onset" else (0, stack.shape[2]))
    return xp.stack([fn(stack[k], **params) for k in range(stack.shape[0])])


def _subtract(stack: Any, offsets: Any, method: str) -> Any:
    """``stack - offsets[:, None, :]`` (or the ``onset`` fields) rounded as :func:`destripe` rounds (float32 out)."""
    xp = xp_of(stack)
    offsets = xp.asarray(offsets)
    if method == "onset":
        field = xp.stack([onset_field(t, stack.shape[1]) for t in offsets]) if len(offsets) else xp.zeros(stack.shape)
        return stack.astype(xp.float32) - field.astype(xp.float32)
    offsets = offsets[:, None, :] if offsets.ndim == 2 else offsets
    if method == "profile":
        return (stack.astype(xp.float64) - offsets).astype(xp.float32)
    return stack.astype(xp.float32) - offsets.astype(xp.float32)


def stripe_offsets_dask(arr: da.Array, method: Literal["histogram", "profile", "onset"] = "histogram", *,
                        progress: str | None = None, **params: Any) -> np.ndarray:
    """Stripe offsets of every slice of a dask (z, y, x) stack, computed slab by slab.

    Returns a small NumPy array (z, x) (float64, the stack's units; for
    ``onset`` (z, 4, x), one :func:`onset_offsets` table per slice), the
    offsets :func:`destripe` subtracts: estimate once, apply with
    :func:`apply_offsets_dask` as often as needed (the estimate is the
    expensive part of destriping). ``progress`` labels a progress bar over
    the pass.
    """
    if arr.ndim != 3:
        raise ValueError(f"expected a 3D (z, y, x) array; got shape {arr.shape}")
    if method not in METHODS:
        raise ValueError(f"destripe method {method!r} is not one of: {', '.join(METHODS)}")
    arr = arr.rechunk({1: -1, 2: -1})
    pool = int(params.pop("pool_slices", 0) or 0)
    if pool > 0:
        if method != "onset":
            raise ValueError(f"pool_slices is an option of the 'onset' method, not of {method!r}")
        return _pooled_offsets_dask(arr, pool, progress=progress, **params)

    def fn(block: Any) -> np.ndarray:
        out = _offsets(block, method, **params)
        return out.get() if hasattr(out, "get") else np.asarray(out)  # CuPy -> host: the result is small

    if method == "onset":
        offsets = arr.map_blocks(fn, dtype=np.float64, chunks=(arr.chunks[0], (ONSET_ROWS,), arr.chunks[2]))
    else:
        offsets = arr.map_blocks(fn, dtype=np.float64, drop_axis=[1], chunks=(arr.chunks[0], arr.chunks[2]))
    return np.asarray(compute(offsets, desc=progress)[0])


def _subtract_block(block: Any, rows: np.ndarray, method: str, ny: int = 0, block_info: Any = None) -> Any:
    """:func:`_subtract` of one block; ``rows`` holds the block's slices' offsets, all columns (``ny``: the slices' rows)."""
    x0, x1 = block_info[0]["array-location"][2] if block_info else (0, block.shape[2])
    if method == "onset":
        y0, y1 = block_info[0]["array-location"][1] if block_info else (0, block.shape[1])
        xp = xp_of(block)
        tables = xp.asarray(rows[..., x0:x1])
        field = xp.stack([onset_field(t, ny or block.shape[1])[y0:y1] for t in tables]) if len(rows) else xp.zeros(block.shape)
        return block.astype(xp.float32) - field.astype(xp.float32)
    return _subtract(block, rows[:, x0:x1], method)


def apply_offsets_dask(arr: da.Array, offsets: np.ndarray, method: Literal["histogram", "profile", "onset"] = "histogram") -> da.Array:
    """Subtract per-slice column offsets (z, x) (``onset``: tables (z, 4, x)) from a dask stack; equal to :func:`destripe_dask`.

    Chunks are kept (the subtraction is per pixel); float32 out. Each slab's
    task carries only its own slices' offsets (:func:`pipeline.correct.slabs.map_slabs`):
    offsets given as a dask array of their own would be root tasks, which
    the distributed scheduler holds back while it computes every block of
    ``arr`` first (the whole stack in memory; measured on 1 worker).
    """
    from pipeline.correct.slabs import map_slabs

    offsets = np.asarray(offsets, dtype=np.float64)
    want = (arr.shape[0], ONSET_ROWS, arr.shape[2]) if method == "onset" else (arr.shape[0], arr.shape[2])
    if arr.ndim != 3 or offsets.shape != want:
        raise ValueError(f"offsets of shape {offsets.shape} do not fit a stack of shape {arr.shape}; expected {want}")
    return map_slabs(arr, _subtract_block, offsets, dtype=np.float32, method=method, ny=int(arr.shape[1]))


# --------------------------------------------------------------------------- onset pooled over slices
#: Row bands of the per-slice sums that the pooled ``onset`` fit is made of (at most; 8 rows a band at least).
ONSET_BANDS: int = 32


def _band_count(ny: int, bands: int) -> int:
    return int(max(2, min(int(bands), ny // 8 if ny >= 16 else 2)))


def onset_stats(
    slice2d: Any,
    *,
    bands: int = ONSET_BANDS,
    prior_iter: int = 1,
    threshold: float = 4.0,
    erode_px: int = 2,
    level_px: float = 24.0,
    smooth_x: float = 1.0,
    onset_widths: tuple[float, ...] = (0.02, 0.05),
    onset_range: tuple[float, float] = (0.2, 0.8),
    clip: float = 2.5,
    field: Any = None,
) -> Any:
    """Sums of bright-phase residues and of their weights per band of rows and column: (2, bands, x) float64.

    The per-slice part of the pooled ``onset`` fit (:func:`onset_pooled`):
    the residues of :func:`onset_offsets` (step 1-2; the mask and level taken
    on the slice minus a first per-slice ``onset`` estimate of ``prior_iter``
    passes, 0: none) summed over ``bands`` runs of rows, top to bottom.
    Sums add up: pooling slices is adding their tables. ``field`` (y, x):
    the stripe field to take the mask and level on instead (a pooled
    estimate of an earlier pass).
    """
    xp = xp_of(slice2d)
    if getattr(slice2d, "ndim", None) != 2:
        raise ValueError(f"expected a 2D (y, x) slice; got shape {getattr(slice2d, 'shape', None)}")
    ny, nx = (int(v) for v in slice2d.shape)
    nb = _band_count(ny, bands)
    out = xp.zeros((2, nb, nx), dtype=xp.float64)
    a = slice2d.astype(xp.float32)
    if ny < 8 or nx < 3 or not float(a.max()) > float(a.min()):
        return out
    common = dict(erode_px=erode_px, level_px=level_px, smooth_x=smooth_x, clip=clip)
    if field is not None:
        field = xp.asarray(field, dtype=xp.float32)
    elif prior_iter and prior_iter > 0:
        t = onset_offsets(a, threshold=threshold, onset_widths=onset_widths, onset_range=onset_range, n_iter=int(prior_iter), **common)
        field = onset_field(t, ny).astype(xp.float32)
    else:
        field = xp.zeros((ny, nx), dtype=xp.float32)
    _, _, num, wgt = _onset_residue(a, field, **common)
    b = (xp.arange(ny) * nb) // ny
    for j in range(nb):
        sel = b == j
        out[0, j] = num[sel].sum(0)
        out[1, j] = wgt[sel].sum(0)
    return out


def _pool_z(stats: np.ndarray, pool_slices: int) -> np.ndarray:
    """Sum of every slice's table with those of ``pool_slices`` neighbours on each side (fewer at the ends)."""
    w = max(0, int(pool_slices))
    if w == 0 or stats.shape[0] < 2:
        return stats
    c = np.concatenate([np.zeros((1,) + stats.shape[1:]), np.cumsum(stats, axis=0)])
    k = np.arange(stats.shape[0])
    lo, hi = np.clip(k - w, 0, None), np.clip(k + w + 1, None, stats.shape[0])
    return c[hi] - c[lo]


def _onset_solve(stats: np.ndarray, ny: int, *, threshold: float = 4.0, select: float = 0.0,
                 onset_widths: tuple[float, ...] = (0.02, 0.05), onset_range: tuple[float, float] = (0.2, 0.8)) -> np.ndarray:
    """``onset`` table (4, x) from (pooled) band sums (2, bands, x): the fit and garrote of :func:`onset_offsets` on bands."""
    num, wgt = np.asarray(stats[0], np.float64), np.asarray(stats[1], np.float64)
    nb, nx = num.shape
    table = np.zeros((ONSET_ROWS, nx))
    table[3] = 1.0
    y = np.arange(ny, dtype=np.float64)
    band = (np.arange(ny) * nb) // ny
    avg = np.zeros((nb, ny))
    avg[band, np.arange(ny)] = 1.0
    avg /= avg.sum(1, keepdims=True)
    phis, y0l, wl = [], [], []
    for wf in onset_widths:
        w = max(float(wf) * ny, 0.5)
        for y0 in np.arange(onset_range[0], onset_range[1] + 1e-9, 0.025) * ny:
            phis.append(1.0 / (1.0 + np.exp(-(y - float(y0)) / w)))
            y0l.append(float(y0))
            wl.append(w)
    phi = np.stack(phis)  # (K, y)
    n_sig = len(phis)
    # band averages of the shapes and their products (weights taken as even within a band)
    p1, p2 = phi @ avg.T, (phi * phi) @ avg.T  # (K, bands)
    pq, q2, q1 = p1 - p2, 1.0 - 2.0 * p1 + p2, 1.0 - p1

    def fit(sel: np.ndarray) -> tuple[np.ndarray, ...]:
        ws, ns = wgt * sel[:, None], num * sel[:, None]
        s11, s01, s00 = p2 @ ws, pq @ ws, q2 @ ws
        r1, r0 = p1 @ ns, q1 @ ns
        det = s00 * s11 - s01 * s01
        ok = det > 1e-6 * (s00 + s11) ** 2 + 1e-12
        d = np.where(ok, det, 1.0)
        bb, aa = (s11 * r0 - s01 * r1) / d, (s00 * r1 - s01 * r0) / d
        n_all, r_all = ws.sum(0), ns.sum(0)
        c = r_all / np.maximum(n_all, 1e-9)
        vb, va = s11 / d, s00 / d
        return bb, aa, vb, va, ok, c, n_all, r0, r1

    allb = np.ones(nb, bool)
    bb, aa, vb, va, ok, c, n_all, r0, r1 = fit(allb)
    # error per unit weight from the constant fitted on the even and the odd bands
    ev, od = fit(np.arange(nb) % 2 == 0), fit(np.arange(nb) % 2 == 1)
    okc = (ev[6] > 1.0) & (od[6] > 1.0)
    zc = (ev[5] - od[5])[okc] / np.sqrt(1.0 / ev[6][okc] + 1.0 / od[6][okc])
    s2 = (1.4826 * float(np.median(np.abs(zc)))) ** 2 if zc.size >= 10 else np.inf
    expl = np.where(ok, bb * r0 + aa * r1, -np.inf)
    expl_c = np.where(n_all > 1.0, c * n_all * c, -np.inf)
    # a step only where it explains ``select`` error variances more than the constant
    expl = np.concatenate([expl - select * s2, expl_c[None]], axis=0)
    k = np.argmax(expl, axis=0)
    const = k == n_sig
    ks = np.minimum(k, n_sig - 1)
    cols = np.arange(nx)
    b = np.where(const, c, bb[ks, cols])
    av = np.where(const, c, aa[ks, cols])
    usable = np.where(const, n_all > 1.0, ok[ks, cols])
    vb_k = np.where(const, 1.0 / np.maximum(n_all, 1e-9), vb[ks, cols])
    va_k = np.where(const, 1.0 / np.maximum(n_all, 1e-9), va[ks, cols])
    # error scale: the same shapes fitted on the even and on the odd bands
    halves = []
    for sel in (np.arange(nb) % 2 == 0, np.arange(nb) % 2 == 1):
        hb, ha, hvb, hva, hok, hc, hn, _, _ = fit(sel)
        hv = 1.0 / np.maximum(hn, 1e-9)
        halves.append((np.where(const, hc, hb[ks, cols]), np.where(const, hc, ha[ks, cols]),
                       np.where(const, hv, hvb[ks, cols]), np.where(const, hv, hva[ks, cols]),
                       np.where(const, hn > 1.0, hok[ks, cols])))
    both = halves[0][4] & halves[1][4] & usable
    zb = (halves[0][0] - halves[1][0]) / np.sqrt(np.maximum(halves[0][2] + halves[1][2], 1e-12))
    za = (halves[0][1] - halves[1][1]) / np.sqrt(np.maximum(halves[0][3] + halves[1][3], 1e-12))
    zz = np.concatenate([zb[both & ~const], za[both]])
    zz = zz[np.isfinite(zz)]
    scale = 1.4826 * float(np.median(np.abs(zz))) if zz.size >= 10 else np.inf
    se_b, se_a = scale * np.sqrt(vb_k), scale * np.sqrt(va_k)
    if threshold and threshold > 0:
        b, av = _garrote(b, threshold * se_b), _garrote(av, threshold * se_a)
    b, av = np.where(usable, b, 0.0), np.where(usable, av, 0.0)
    meta_y0 = np.asarray(y0l + [-1e9])
    meta_w = np.asarray(wl + [1.0])
    return np.stack([b, av, meta_y0[k], meta_w[k]])


def onset_pooled(stats: np.ndarray, ny: int, pool_slices: int, **params: Any) -> np.ndarray:
    """``onset`` tables (z, 4, x) from the :func:`onset_stats` of consecutive slices (z, 2, bands, x).

    Every slice's fit is made on the sums of ``pool_slices`` slices on each
    side and its own (the curtains stay, the texture of the structure does
    not), then garroted; ``params``: ``threshold``, ``onset_widths``, ``onset_range``.
    """
    stats = np.asarray(stats, dtype=np.float64)
    pooled = _pool_z(stats, pool_slices)
    if not len(stats):
        return np.zeros((0, ONSET_ROWS, stats.shape[-1]))
    return np.stack([_onset_solve(t, ny, **params) for t in pooled])


#: Defaults of the pooled ``onset`` estimate (``pool_slices`` > 0): see :func:`pooled_onset_offsets`.
POOLED_DEFAULTS: dict[str, Any] = {"passes": 2, "threshold": 4.0, "select": 10.0, "level_px": 16.0}
_SOLVE_KEYS = ("threshold", "select", "onset_widths", "onset_range")


def _pooled_split(params: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, Any]]:
    """(passes, per-slice :func:`onset_stats` arguments, :func:`_onset_solve` arguments) of pooled ``onset`` parameters."""
    p = {**POOLED_DEFAULTS, **params}
    passes = max(1, int(p.pop("passes")))
    solve = {k: p[k] for k in _SOLVE_KEYS if k in p}
    stat = {k: v for k, v in p.items() if k not in ("select",)}
    stat["prior_iter"] = 0
    return passes, stat, solve


def _stats_block(block: Any, rows: Any = None, **stat: Any) -> np.ndarray:
    """:func:`onset_stats` of every slice of a (z, y, x) block, given the stripe tables ``rows`` of its slices (None: none)."""
    ny = block.shape[1]
    out = []
    for k in range(block.shape[0]):
        field = None if rows is None else onset_field(np.asarray(rows[k]), ny)
        t = onset_stats(block[k], field=None if field is None else xp_of(block).asarray(field), **stat)
        out.append(t.get() if hasattr(t, "get") else np.asarray(t))
    nb = _band_count(ny, stat.get("bands", ONSET_BANDS))
    return np.stack(out) if out else np.zeros((0, 2, nb, block.shape[2]))


def pooled_onset_offsets(stack: Any, pool_slices: int = 8, **params: Any) -> np.ndarray:
    """``onset`` tables (z, 4, x) of a (z, y, x) stack, each fitted on ``pool_slices`` slices either side and its own.

    Curtains stay where they are from slice to slice (their amplitude drifts
    slowly); the texture and structure of the sample do not, so the sums of
    :func:`onset_stats` over a window of slices estimate the curtain with less
    error. ``passes``: the mask and level of the next pass are taken on every
    slice minus the pooled estimate of the previous one; ``select``: a step
    (offset switching on part-way) is taken over a constant only where it
    explains that many error variances more. Other ``params``: those of
    :func:`onset_stats` and ``threshold`` (garrote, standard errors, after pooling).
    Defaults: :data:`POOLED_DEFAULTS`.
    """
    passes, stat, solve = _pooled_split(params)
    ny = int(stack.shape[1])
    tables = None
    for _ in range(passes):
        stats = _stats_block(stack, tables, **stat)
        tables = onset_pooled(stats, ny, pool_slices, **solve)
    return tables


def _pooled_offsets_dask(arr: da.Array, pool_slices: int, *, progress: str | None = None, **params: Any) -> np.ndarray:
    """:func:`pooled_onset_offsets` of a dask stack: per-slice sums slab by slab, pooled along z in memory (small tables)."""
    passes, stat, solve = _pooled_split(params)
    ny, nx = int(arr.shape[1]), int(arr.shape[2])
    nb = _band_count(ny, stat.get("bands", ONSET_BANDS))
    tables = None
    for _ in range(passes):
        pieces, z0 = [], 0
        for dz in arr.chunks[0]:
            rows = None if tables is None else np.ascontiguousarray(tables[z0 : z0 + dz])
            piece = arr[z0 : z0 + dz]
            pieces.append(piece.map_blocks(_stats_block, rows=rows, dtype=np.float64, new_axis=[1],
                                           chunks=((dz,), (2,), (nb,), (nx,)), **stat))
            z0 += dz
        stats = np.asarray(compute(da.concatenate(pieces, axis=0), desc=progress)[0]) if pieces else np.zeros((0, 2, nb, nx))
        tables = onset_pooled(stats, ny, pool_slices, **solve)
    return tables
