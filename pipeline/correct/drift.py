"""Slice-to-slice drift: sub-pixel phase correlation, robust cumulative estimate, shifting.

Convention: ``drift_px[z] = [dy, dx]`` is where the content of slice ``z``
sits relative to slice 0, in pixels (+y down, +x right). Correcting moves
slice ``z`` by ``-(drift_px[z] - reference)``.

Each step (slice ``z`` against ``z - 1``) is measured by phase correlation of
band-passed, windowed slices with a low-pass weight on the cross-power
spectrum (noise robust), refined to ``1 / upsample`` pixel by a
matrix-multiply DFT around the peak (Guizar-Sicairos et al. 2008). Steps
whose correlation peak is weak (peak-to-sidelobe ratio under
``min_confidence``) are dropped; real jumps with a clear peak are kept.
Every slice is compared with several slices before it (``lags``) and the
cumulative trajectory is the least-squares fit of all those pairs, so the
errors of single steps (noise, content that changes from slice to slice) do
not add up as a random walk. The trajectory is then smoothed with a
Savitzky-Golay filter (keeps slow drift and its curvature, cuts the
measurement noise).

Shine-through parallax. Material seen through the pores of the face sits
deeper in the block; as the face is milled it moves along y by a fixed
amount per slice (``vz / vy`` times the cotangent of the beam-to-face angle,
or the tangent of the renderer's angle from the face normal), while the face
itself does not move. The correlation peak of two slices blends both, so a
stack with strong shine-through and no drift at all measures a steady y step
between 0 and that parallax (0.6 px per slice on renders with ``deep_level``
1.2, ``depth_nm`` 200: 58-65 px over 100 slices). What tells parallax from a
stage creep is the lag: a creep moves every pair by ``lag x`` its rate,
while the blend drifts towards the full parallax as the lag grows (the face
decorrelates, the material behind it does not): on those renders the y rate
is 0.58 px per slice at lag 1 and 1.2 at lag 8 (on 128 x 128 slices). :func:`parallax_probe`
measures the excess of the lag-4 rate on a strided subset of slices; :func:`clean_drift`
removes the stack's median y step when the probe finds parallax, then keeps
only the steps larger than ``threshold`` times their noise (from the closure
of lag-1 and lag-2 pairs, :func:`step_noise`), so a drift-free stack stays
put. Measured on 100 x 96 x 96 renders (random spheres, ``deep_level`` 1.2,
``depth_nm`` 200, 52 deg, tests/correct/test_drift_parallax.py): drift-free, the
largest cumulative error is 0-0.6 px (was 58-65 px); with the renderer's
integer random drift (steps of 0-4 px) the per-step error is 0.12-0.15 px RMS
(was 0.61-0.65). Limits: with shine-through, a steady y creep cannot be told
from parallax and is left in; steps under ``threshold`` noise levels
(about 0.2-0.35 px on those renders, 0.05 px on clean stacks) are not
corrected, so a creep slower than that per slice is left in as well.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import dask.array as da
import numpy as np

from pipeline.backend import ndimage_of, to_numpy, xp_of
from pipeline.progress import compute

__all__ = [
    "phase_correlation",
    "estimate_steps",
    "estimate_pairs",
    "estimate_pairs_dask",
    "solve_drift",
    "smooth_drift",
    "apply_shifts",
    "apply_shifts_dask",
    "shift_halo",
    "applied_shifts",
    "INTERPOLATIONS",
    "step_noise",
    "parallax_probe",
    "probe_starts",
    "parallax_excess",
    "clean_drift",
]


#: Phase-correlation options of the drift pairs unless given (:func:`phase_correlation`'s defaults).
PAIR_OPTIONS: dict[str, Any] = {"upsample": 50, "lowpass": 0.15, "whiten": 0.5}


def _prepare(img: Any, highpass_px: float) -> Any:
    xp = xp_of(img)
    ndi = ndimage_of(img)
    a = img.astype(xp.float64)
    if highpass_px > 0:
        fft = xp is np and min(a.shape) > 4 * highpass_px  # small slices: the direct filter is faster
        a = a - (_gaussian_fft(a, highpass_px) if fft else ndi.gaussian_filter(a, highpass_px, mode="reflect"))
    a = a - a.mean()
    wy = xp.asarray(_window(a.shape[0]))
    wx = xp.asarray(_window(a.shape[1]))
    return a * wy[:, None] * wx[None, :]


def _gaussian_fft(a: np.ndarray, sigma: float) -> np.ndarray:
    """``scipy.ndimage.gaussian_filter(a, sigma, mode="reflect")`` of a 2D float64 array, by FFT.

    The same kernel (truncated at 4 sigma, normalised) applied to the
    reflect-padded array as one circular convolution: equal to SciPy's to
    rounding (1e-12 of the range), and 3-4x faster for the wide kernels of
    the high-pass (sigma 16 px: 129 taps per axis).
    """
    import scipy.fft

    r = int(4.0 * float(sigma) + 0.5)
    # SciPy's "reflect" is NumPy's "symmetric" (d c b a | a b c d | d c b a); the padding beyond
    # 2 r only makes the lengths fast: no output inside the crop reads it through the wrap-around
    ny, nx = (int(scipy.fft.next_fast_len(n + 2 * r, real=True)) for n in a.shape)
    padded = np.pad(a, ((r, ny - a.shape[0] - r), (r, nx - a.shape[1] - r)), mode="symmetric")
    f = scipy.fft.rfft2(padded)
    f *= _kernel_spectrum(ny, r, float(sigma), False)[:, None]
    f *= _kernel_spectrum(nx, r, float(sigma), True)[None, :]
    return scipy.fft.irfft2(f, s=(ny, nx))[r : r + a.shape[0], r : r + a.shape[1]]


@functools.lru_cache(maxsize=16)
def _kernel_spectrum(n: int, r: int, sigma: float, half: bool) -> np.ndarray:
    """FFT of SciPy's 1D gaussian kernel (radius ``r``) centred at 0 on ``n`` points (``half``: rfft)."""
    x = np.arange(-r, r + 1, dtype=np.float64)
    g = np.exp(-0.5 * (x / sigma) ** 2)
    g /= g.sum()
    k = np.zeros(n)
    k[np.arange(-r, r + 1) % n] += g
    return np.fft.rfft(k) if half else np.fft.fft(k)


def _window(n: int, alpha: float = 0.3) -> np.ndarray:
    """Tukey window: flat middle, cosine tapers (a Hann window biases shifts of changing content to 0)."""
    # written out (as scipy.signal.windows.tukey): importing scipy.signal costs every worker ~40 MB
    if n <= 2 or alpha <= 0:
        return np.ones(n)
    k = np.arange(n, dtype=np.float64)
    edge = alpha * (n - 1) / 2.0
    w = np.ones(n)
    lo = k < edge
    hi = k > (n - 1) - edge
    w[lo] = 0.5 * (1 + np.cos(np.pi * (-1 + 2.0 * k[lo] / (alpha * (n - 1)))))
    w[hi] = 0.5 * (1 + np.cos(np.pi * (-2.0 / alpha + 1 + 2.0 * k[hi] / (alpha * (n - 1)))))
    return w


def _spectrum(img: Any, highpass_px: float) -> Any:
    xp = xp_of(img)
    return xp.fft.fft2(_prepare(img, highpass_px)).astype(xp.complex64)


@functools.lru_cache(maxsize=8)
def _lowpass(ny: int, nx: int, sigma: float) -> np.ndarray:
    """Gaussian weight (sigma in cycles per pixel) over an unshifted (ny, nx) spectrum, float32."""
    ky = np.fft.fftfreq(ny)[:, None]
    kx = np.fft.fftfreq(nx)[None, :]
    return np.exp(-(ky * ky + kx * kx) / (2 * sigma * sigma)).astype(np.float32)


def _correlate(fa: Any, fb: Any, *, upsample: int, lowpass: float, whiten: float) -> tuple[float, float, float]:
    """Peak of the (whitened, low-passed) cross-correlation of two slice spectra."""
    xp = xp_of(fa)
    ny, nx = fa.shape
    cross = fa * xp.conj(fb)
    if whiten > 0:
        mag = xp.abs(cross)
        mag += 1e-12 * float(mag.max() + 1e-30)
        cross /= xp.sqrt(mag) if whiten == 0.5 else mag**whiten
    ky = xp.fft.fftfreq(ny)[:, None]
    kx = xp.fft.fftfreq(nx)[None, :]
    if lowpass > 0:
        cross *= xp.asarray(_lowpass(ny, nx, float(lowpass)))
    corr = xp.fft.ifft2(cross).real
    flat = int(to_numpy(xp.argmax(corr)))
    py, px = divmod(flat, nx)
    peak = float(to_numpy(corr[py, px]))
    conf = (peak - float(to_numpy(corr.mean()))) / (float(to_numpy(corr.std())) + 1e-30)
    py = py - ny if py > ny // 2 else py
    px = px - nx if px > nx // 2 else px
    if upsample <= 1:
        return float(py), float(px), conf
    half = int(math.ceil(1.5 * upsample)) // 2  # the peak is searched within +-half / upsample px
    cross = cross.astype(xp.complex128)
    step = max(1, upsample // 10)
    iy, ix = _upsampled_argmax(cross, py, px, np.arange(-half, half + 1, step), np.arange(-half, half + 1, step), upsample)
    if step > 1:  # then at 1 / upsample px around the coarse peak (the surface is smooth on 1 / 10 px)
        near = np.arange(-step + 1, step)
        iy, ix = _upsampled_argmax(cross, py, px, np.clip(iy + near, -half, half), np.clip(ix + near, -half, half), upsample)
    return float(py + iy / upsample), float(px + ix / upsample), conf


def _upsampled_argmax(cross: Any, py: int, px: int, oy: np.ndarray, ox: np.ndarray, upsample: int) -> tuple[int, int]:
    """Offsets (of ``oy``, ``ox``, in 1 / upsample px) of the largest correlation near ``(py, px)``, by matrix DFT."""
    xp = xp_of(cross)
    ny, nx = cross.shape
    ey = xp.asarray(_dft_rows(ny, py, tuple(int(v) for v in oy), upsample))
    ex = xp.asarray(_dft_rows(nx, px, tuple(int(v) for v in ox), upsample)).T
    fine = (ey @ cross @ ex).real
    fy, fx = divmod(int(to_numpy(xp.argmax(fine))), len(ox))
    return int(oy[fy]), int(ox[fx])


@functools.lru_cache(maxsize=256)
def _dft_rows(n: int, p: int, offsets: tuple[int, ...], upsample: int) -> np.ndarray:
    """``exp(2 pi i (p + o / upsample) k)`` for the frequencies ``k`` of an ``n``-point FFT, one row per offset ``o``."""
    k = np.fft.fftfreq(n)
    pos = p + np.asarray(offsets, dtype=np.float64) / upsample
    return np.exp(2j * math.pi * pos[:, None] * k[None, :])


def phase_correlation(
    moving: Any,
    reference: Any,
    *,
    upsample: int = 50,
    highpass_px: float = 16.0,
    lowpass: float = 0.15,
    whiten: float = 0.5,
) -> tuple[float, float, float]:
    """Translation of ``moving`` relative to ``reference`` (2D slices) by phase correlation.

    Parameters
    ----------
    moving, reference : ndarray (y, x)
        Same shape; NumPy or CuPy.
    upsample : int
        Sub-pixel resolution is ``1 / upsample`` px.
    highpass_px : float
        Sigma in px of the gaussian background removed first (0: none).
    lowpass : float
        Sigma, in cycles per pixel, of the gaussian weight on the
        cross-power spectrum (0: none); cuts the noisy high frequencies.
    whiten : float
        Exponent of the spectral whitening: the cross-power spectrum is
        divided by its magnitude to this power (1: classic phase
        correlation, 0: plain cross-correlation).

    Returns
    -------
    dy, dx : float
        ``moving(y, x) ~ reference(y - dy, x - dx)``, in pixels.
    confidence : float
        Peak-to-sidelobe ratio of the correlation surface (higher is surer).
    """
    if moving.shape != reference.shape or moving.ndim != 2:
        raise ValueError(f"phase correlation needs two 2D slices of one shape; got {moving.shape} and {reference.shape}")
    return _correlate(
        _spectrum(moving, highpass_px), _spectrum(reference, highpass_px), upsample=upsample, lowpass=lowpass, whiten=whiten
    )


def estimate_pairs(stack: Any, lags: int = 4, *, highpass_px: float = 16.0, **kwargs: Any) -> np.ndarray:
    """Shifts of every slice against each of the ``lags`` slices before it.

    Parameters
    ----------
    stack : ndarray (z, y, x)
    lags : int
        Compare slice ``z`` with ``z - 1 ... z - lags``; more lags tie the
        trajectory together so measurement errors do not add up as a
        random walk.

    Returns
    -------
    ndarray (z, lags, 3) float64
        ``[z, k - 1] = [dy, dx, confidence]`` of slice ``z`` against
        ``z - k``; NaN where ``z - k < 0``. Other keywords go to
        :func:`phase_correlation`.
    """
    if getattr(stack, "ndim", None) != 3:
        raise ValueError(f"expected a 3D (z, y, x) array; got shape {getattr(stack, 'shape', None)}")
    if lags < 1:
        raise ValueError(f"lags must be >= 1; got {lags}")
    z = stack.shape[0]
    out = np.full((z, lags, 3), np.nan)
    opts = {**PAIR_OPTIONS, **kwargs}
    window: dict[int, Any] = {}  # only the last lags + 1 spectra are held
    for i in range(z):
        window[i] = _spectrum(stack[i], highpass_px)
        window.pop(i - lags - 1, None)
        for k in range(1, min(lags, i) + 1):
            out[i, k - 1] = _correlate(window[i], window[i - k], **opts)
    return out


def estimate_steps(stack: Any, **kwargs: Any) -> np.ndarray:
    """Shifts between consecutive slices: ``(z, 3)`` rows ``[dy, dx, confidence]`` (row 0: zeros, inf)."""
    pairs = estimate_pairs(stack, 1, **kwargs)[:, 0]
    pairs[0] = [0.0, 0.0, np.inf]
    return pairs


def estimate_pairs_dask(arr: da.Array, lags: int = 4, *, progress: str | None = None, **kwargs: Any) -> np.ndarray:
    """:func:`estimate_pairs` on a dask stack, slab by slab; equal to the in-memory result.

    One streaming pass, no overlap between slabs: every slab's task returns
    the pairs inside it and keeps its first and last ``lags`` slices; a small
    task per boundary correlates the two edges that meet there. A slab is
    released as soon as its own task is done, so a worker holds one slab and
    a few edge slices at a time (an overlapped graph, or a rechunk to slabs
    centred on the boundaries, made the scheduler hold a growing share of
    the stack). ``progress`` labels a progress bar over the pass.
    """
    import dask

    if getattr(arr, "ndim", None) != 3:
        raise ValueError(f"expected a 3D (z, y, x) dask array; got shape {getattr(arr, 'shape', None)}")
    if lags < 1:
        raise ValueError(f"lags must be >= 1; got {lags}")
    arr = arr.rechunk({1: -1, 2: -1})
    from pipeline.correct.slabs import merge_shallow_slabs

    zchunks = merge_shallow_slabs(list(arr.chunks[0]), lags)  # every slab at least lags deep
    if tuple(zchunks) != arr.chunks[0]:
        arr = arr.rechunk({0: tuple(zchunks)})
    slabs = [dask.delayed(_slab_pairs, pure=True)(b, lags, kwargs) for b in arr.to_delayed().ravel()]
    inside = [dask.delayed(_first, pure=True)(s) for s in slabs]
    across = [dask.delayed(_boundary_pairs, pure=True)(a, b, lags, kwargs) for a, b in zip(slabs[:-1], slabs[1:])]
    results = compute(*inside, *across, desc=progress)
    out = np.concatenate(results[: len(slabs)], axis=0)
    starts = np.cumsum([0] + zchunks[:-1])
    for s0, cross in zip(starts[1:], results[len(slabs):]):
        rows = slice(int(s0), int(s0) + lags)
        out[rows] = np.where(np.isnan(out[rows]), cross[: rows.stop - rows.start], out[rows])
    return out


def _slab_pairs(block: Any, lags: int, kwargs: dict[str, Any]) -> tuple[np.ndarray, Any, Any]:
    """Pairs inside one slab, and copies of its first and last ``lags`` slices."""
    return estimate_pairs(block, lags, **kwargs), block[:lags].copy(), block[-lags:].copy()


def _first(result: tuple[Any, ...]) -> Any:
    return result[0]


def _boundary_pairs(before: tuple[Any, ...], after: tuple[Any, ...], lags: int, kwargs: dict[str, Any]) -> np.ndarray:
    """Pairs of the first ``lags`` slices after a boundary against the slices before it."""
    tail, head = before[2], after[1]
    xp = xp_of(tail)
    return estimate_pairs(xp.concatenate([tail, head], axis=0), lags, **kwargs)[len(tail):]


def solve_drift(pairs: np.ndarray, *, min_confidence: float = 5.0, max_step_px: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares drift trajectory from multi-lag pair shifts.

    Each reliable pair (confidence >= ``min_confidence``, and length within
    ``max_step_px`` times the lag when given) says ``d[z] - d[z-k] = s``;
    the trajectory with ``d[0] = 0`` that fits them best, weighted by
    confidence, is returned with the mask of pairs used. Slices that no
    reliable pair reaches keep the drift of the slice before.
    """
    from scipy.sparse import coo_matrix, diags
    from scipy.sparse.linalg import spsolve

    pairs = np.asarray(pairs, dtype=np.float64)
    if pairs.ndim != 3 or pairs.shape[2] != 3:
        raise ValueError(f"pairs must have shape (z, lags, 3); got {pairs.shape}")
    z, lags, _ = pairs.shape
    conf = np.nan_to_num(pairs[..., 2], nan=-np.inf)
    ok = conf >= min_confidence
    if max_step_px is not None:
        ok &= np.hypot(pairs[..., 0], pairs[..., 1]) <= max_step_px * (np.arange(1, lags + 1)[None, :])
    if z == 1:
        return np.zeros((1, 2)), ok
    rows, cols, vals, rhs, w = [], [], [], [], []
    r = 0
    for i in range(1, z):
        for k in range(1, lags + 1):
            if i - k < 0 or not ok[i, k - 1]:
                continue
            rows += [r, r]
            cols += [i, i - k]
            vals += [1.0, -1.0]
            rhs.append(pairs[i, k - 1, :2])
            w.append(min(conf[i, k - 1], 100.0) / k)
            r += 1
    # d[0] = 0 and a tiny pull of each step towards 0, so unreached slices stay put
    eps = 1e-6
    rows += [r]
    cols += [0]
    vals += [1.0]
    rhs.append(np.zeros(2))
    w.append(1e3)
    r += 1
    for i in range(1, z):
        rows += [r, r]
        cols += [i, i - 1]
        vals += [1.0, -1.0]
        rhs.append(np.zeros(2))
        w.append(eps)
        r += 1
    a = coo_matrix((vals, (rows, cols)), shape=(r, z)).tocsr()
    wd = diags(np.asarray(w))
    normal = (a.T @ wd @ a).tocsc()
    b = a.T @ (np.asarray(w)[:, None] * np.asarray(rhs))
    d = np.column_stack([spsolve(normal, b[:, j]) for j in range(2)])
    return d - d[0], ok


def step_noise(pairs: np.ndarray) -> np.ndarray:
    """Noise (px, [y, x]) of one lag-1 step, from the closure of lag-1 and lag-2 pairs.

    ``e = s(z, z-2) - s(z, z-1) - s(z-1, z-2)`` has three independent
    measurement errors, so ``sigma = 1.4826 MAD(e) / sqrt(3)``. With one lag
    (or fewer than 5 closures) the robust spread of the lag-1 steps about
    their median is used instead (exact without drift, larger with it).
    """
    pairs = np.asarray(pairs, dtype=np.float64)
    if pairs.ndim != 3 or pairs.shape[2] != 3:
        raise ValueError(f"pairs must have shape (z, lags, 3); got {pairs.shape}")
    if pairs.shape[1] >= 2 and pairs.shape[0] >= 3:
        e = pairs[2:, 1, :2] - pairs[2:, 0, :2] - pairs[1:-1, 0, :2]
        e = e[np.isfinite(e).all(axis=1)]
        if len(e) >= 5:
            return 1.4826 * np.median(np.abs(e - np.median(e, axis=0)), axis=0) / math.sqrt(3.0)
    s = pairs[1:, 0, :2]
    s = s[np.isfinite(s).all(axis=1)]
    if len(s) < 2:
        return np.zeros(2)
    return 1.4826 * np.median(np.abs(s - np.median(s, axis=0)), axis=0)


def probe_starts(z: int, lag: int = 4, count: int = 48) -> np.ndarray:
    """First slices of the parallax probe's ``count`` evenly spaced pairs ``(s, s + lag)`` of a ``z``-slice stack.

    Empty when the stack has ``lag`` slices or fewer (or ``lag < 2``).
    """
    if lag < 2 or z <= lag:
        return np.zeros(0, dtype=int)
    return np.unique(np.linspace(0, z - 1 - lag, min(count, z - lag)).round().astype(int))


def parallax_excess(dy: np.ndarray, starts: np.ndarray, drift: np.ndarray, lag: int) -> tuple[float, float]:
    """Median excess y rate (px per slice) of the probe pairs over the trajectory, and its standard error.

    ``dy[i]``: the measured y shift of slice ``starts[i] + lag`` against
    ``starts[i]``; the excess is ``(dy - (drift[s + lag, 0] - drift[s, 0])) / lag``.
    ``(nan, nan)`` without pairs.
    """
    starts = np.asarray(starts, dtype=int)
    drift = np.asarray(drift, dtype=np.float64)
    if not len(starts):
        return float("nan"), float("nan")
    r = (np.asarray(dy, dtype=np.float64) - (drift[starts + lag, 0] - drift[starts, 0])) / lag
    med = float(np.median(r))
    se = 1.4826 * float(np.median(np.abs(r - med))) * 1.2533 / math.sqrt(len(r))
    return med, se


def parallax_probe(
    stack: Any, drift: np.ndarray, lag: int = 4, count: int = 48, *, highpass_px: float = 16.0, **kwargs: Any
) -> tuple[float, float]:
    """Excess y rate of pairs ``lag`` slices apart over the trajectory, and its standard error (px per slice).

    For ``count`` evenly spaced pairs ``(z + lag, z)`` (:func:`probe_starts`)
    the measured y shift minus ``drift[z + lag, 0] - drift[z, 0]`` (the lag-1
    trajectory), divided by ``lag`` (:func:`parallax_excess`): about 0 for a
    stage creep or noise, and towards the parallax (0.19-0.26 px per slice at
    lag 4 on the renders of the module docstring, against 0.001 for a creep of
    0.3 px per slice) when shine-through blends the face with the material
    behind it. Only the ``2 x count`` slices of the pairs are read (NumPy,
    CuPy or dask stack). ``(nan, nan)`` when the stack has ``lag`` slices or
    fewer. The correction chain measures the same pairs in its one
    estimation pass (:mod:`pipeline.correct.estimate`).
    """
    z = int(stack.shape[0])
    drift = np.asarray(drift, dtype=np.float64)
    if len(drift) != z:
        raise ValueError(f"need one drift row per slice; got {len(drift)} rows for {z} slices")
    starts = probe_starts(z, lag, count)
    if not len(starts):
        return float("nan"), float("nan")
    idx = np.concatenate([starts, starts + lag])
    sub = stack[idx]
    if isinstance(sub, da.Array):
        sub = sub.compute()
    opts = {**PAIR_OPTIONS, **kwargs}
    n = len(starts)
    dy = np.array([_correlate(_spectrum(sub[n + i], highpass_px), _spectrum(sub[i], highpass_px), **opts)[0] for i in range(n)])
    return parallax_excess(dy, starts, drift, lag)


def clean_drift(
    drift: np.ndarray,
    noise: np.ndarray,
    *,
    threshold: float = 5.0,
    parallax: tuple[float, float] | None = None,
    parallax_min: float = 0.05,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Trajectory without shine-through parallax and with only significant steps.

    Parameters
    ----------
    drift : ndarray (z, 2)
        Least-squares trajectory (px, ``[dy, dx]``), :func:`solve_drift`.
    noise : ndarray (2,)
        Noise of one step (px), :func:`step_noise`.
    threshold : float
        Steps (after the parallax is taken out) whose size along an axis is
        at most ``threshold x noise`` are set to 0 on that axis; 0 keeps all.
    parallax : (float, float), optional
        The excess y rate at a long lag and its standard error
        (:func:`parallax_probe`); None or NaN: no parallax test.
    parallax_min : float
        Parallax is found when the excess rate is larger than this (px per
        slice) and than 4 standard errors, in the direction of the median
        lag-1 y step; that median y step is then removed from every step.

    Returns
    -------
    ndarray (z, 2), dict
        The trajectory (slice 0 at 0) and ``{"parallax_px_per_slice",
        "parallax_found", "parallax_excess", "threshold_px", "steps_kept"}``.
    """
    drift = np.asarray(drift, dtype=np.float64)
    if drift.ndim != 2 or drift.shape[1] != 2:
        raise ValueError(f"drift must have shape (z, 2); got {drift.shape}")
    noise = np.asarray(noise, dtype=np.float64).reshape(2)
    info: dict[str, Any] = {"parallax_px_per_slice": 0.0, "parallax_found": False, "parallax_excess": None,
                            "threshold_px": [0.0, 0.0], "steps_kept": 1.0}
    if len(drift) < 2:
        return drift - drift[:1], info
    steps = np.diff(drift, axis=0)
    r1 = float(np.median(steps[:, 0]))
    if parallax is not None and all(math.isfinite(v) for v in parallax):
        excess, se = (float(v) for v in parallax)
        info["parallax_excess"] = [excess, se]
        signed = excess if r1 >= 0 else -excess
        if r1 != 0.0 and signed > max(parallax_min, 4.0 * se):
            steps = steps - np.array([r1, 0.0])
            info.update(parallax_px_per_slice=r1, parallax_found=True)
    if threshold > 0:
        cut = threshold * noise
        keep = np.abs(steps) > cut[None, :]
        steps = np.where(keep, steps, 0.0)
        info.update(threshold_px=[float(c) for c in cut], steps_kept=float(keep.any(axis=1).mean()))
    return np.vstack([np.zeros((1, 2)), np.cumsum(steps, axis=0)]), info


def smooth_drift(drift: np.ndarray, window: int = 5) -> np.ndarray:
    """Savitzky-Golay smoothing (order 2, ``window`` slices, odd) of a (z, 2) trajectory; < 3 is off."""
    drift = np.asarray(drift, dtype=np.float64)
    z = len(drift)
    if window < 3 or z < 3:
        return drift.copy()
    from scipy.signal import savgol_filter

    w = min(int(window) | 1, z if z % 2 else z - 1)
    if w < 3:
        return drift.copy()
    out = savgol_filter(drift, w, 2, axis=0, mode="interp")
    return out - out[0]


#: How :func:`apply_shifts` moves a slice: by whole pixels (the shift rounded) or by linear interpolation.
INTERPOLATIONS = ("nearest", "linear")


def shift_halo(shifts: np.ndarray) -> int:
    """Halo in px that shifting by ``shifts`` (z, 2) reads around a block (either interpolation)."""
    return int(math.ceil(float(np.abs(shifts).max(initial=0.0)) + 1e-9)) + 1


def _check_interpolation(interpolation: str) -> None:
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation {interpolation!r} is unknown; expected one of {', '.join(INTERPOLATIONS)}")


def applied_shifts(shifts: np.ndarray, interpolation: str = "linear") -> np.ndarray:
    """The shifts (z, 2) px that :func:`apply_shifts` applies: ``shifts`` rounded to whole pixels for ``nearest``."""
    _check_interpolation(interpolation)
    s = np.asarray(shifts, dtype=np.float64)
    return np.rint(s) + 0.0 if interpolation == "nearest" else s


def _shift_whole(img: Any, sy: int, sx: int, cval: float, xp: Any) -> Any:
    """``img`` (y, x) moved by whole pixels: ``out[y, x] = img[y - sy, x - sx]``, ``cval`` outside."""
    ny, nx = img.shape
    out = xp.full_like(img, cval)
    if abs(sy) < ny and abs(sx) < nx:
        out[max(0, sy) : ny + min(0, sy), max(0, sx) : nx + min(0, sx)] = \
            img[max(0, -sy) : ny + min(0, -sy), max(0, -sx) : nx + min(0, -sx)]
    return out


def apply_shifts(stack: Any, shifts: np.ndarray, *, cval: float = 0.0, interpolation: str = "linear") -> Any:
    """Move slice ``z`` by ``shifts[z] = [sy, sx]`` px.

    ``out[z, y, x] = stack[z, y - sy, x - sx]``; samples from outside the
    slice read ``cval``. ``interpolation``: ``linear`` (sub-pixel, which
    smooths a slice moved by a fraction of a pixel: a half-pixel shift
    averages neighbouring pixels) or ``nearest`` (the shift rounded to whole
    pixels: every value is a measured one, the alignment within half a pixel).
    Returns float32 (float64 stays float64).
    """
    if getattr(stack, "ndim", None) != 3 or len(shifts) != stack.shape[0]:
        raise ValueError(f"need a (z, y, x) stack and one shift per slice; got {getattr(stack, 'shape', None)} and {len(shifts)}")
    moves = applied_shifts(shifts, interpolation)
    xp = xp_of(stack)
    ndi = ndimage_of(stack)
    img = stack if stack.dtype in (np.float32, np.float64) else stack.astype(xp.float32)
    out = xp.empty_like(img)
    for z in range(img.shape[0]):
        sy, sx = (float(v) for v in moves[z])
        if sy == 0.0 and sx == 0.0:
            out[z] = img[z]
        elif interpolation == "nearest" or (sy.is_integer() and sx.is_integer()):
            out[z] = _shift_whole(img[z], int(sy), int(sx), cval, xp)
        else:
            out[z] = ndi.shift(img[z], (sy, sx), order=1, mode="constant", cval=cval, prefilter=False)
    return out


def apply_shifts_dask(arr: da.Array, shifts: np.ndarray, *, cval: float = 0.0, interpolation: str = "linear") -> da.Array:
    """:func:`apply_shifts` on a dask stack with the exact (y, x) halo the largest shift needs."""
    _check_interpolation(interpolation)
    shifts = np.asarray(shifts, dtype=np.float64)
    h = shift_halo(shifts)
    dtype = arr.dtype if arr.dtype in (np.float32, np.float64) else np.dtype(np.float32)

    hy = min(h, arr.shape[1])
    hx = min(h, arr.shape[2])
    from pipeline.correct.slabs import map_slabs
    from pipeline.preprocess.denoise import _ensure_min_chunks

    arr = _ensure_min_chunks(arr, (0, hy, hx))
    return map_slabs(arr, _shift_block, shifts, depth={0: 0, 1: hy, 2: hx}, dtype=dtype, cval=cval,
                     interpolation=interpolation)


def _shift_block(block: Any, rows: np.ndarray, cval: float, interpolation: str) -> Any:
    return apply_shifts(block, rows, cval=cval, interpolation=interpolation)
