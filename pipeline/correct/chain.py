"""Correct a porelab volume: tilt, curtaining, illumination, drift, ROI crop.

Every step can be switched off and tuned; the defaults work untuned. The
small statistics (stripe offsets, illumination surfaces, drift pairs) are
measured out of core on the active Dask scheduler, all in one read of the
stack (:mod:`pipeline.correct.estimate`); the returned volume is lazy (dask)
and its writer reads the stack a second time. Steps run on
whole-slice slabs (each step needs whole slices), so the chunked result is
the in-memory result.

Diagnostics stored in the output attrs (for the report):

* ``drift_px``: (z, 2) ``[dy, dx]`` of each slice relative to slice 0, px
  (after tilt resampling); the correction is ``-(drift_px - drift_reference_px)``;
* ``drift_shift_px``: (z, 2) the shift applied to each slice: that correction, rounded to
  whole pixels with ``interpolation`` ``nearest`` (the default);
* ``drift_measured_px``: (z, 2) the raw least-squares trajectory before cleaning and smoothing;
* ``drift_cleaning``: the parallax found (px per slice removed from y), the probe's excess
  rate, the step thresholds (px) and the share of steps kept (:func:`pipeline.correct.drift.clean_drift`);
* ``drift_confidence``: (z,) peak-to-sidelobe ratio of each slice's step (0 for slice 0);
* ``drift_reference_px``: [dy, dx] subtracted (median of the trajectory);
* ``illumination_relative_range``: (z, 2) min and max of each slice's
  background divided by its mean (1, 1 means flat);
* ``illumination_map``: a coarse (at most 16 x 16) map of the mean background / its mean;
* ``stripe_rms``: (z,) RMS of each slice's removed stripe offsets (image units);
* ``roi_box``: [[z0, z1], [y0, y1], [x0, x1]] cropped from the corrected (tilted) frame;
* ``tilt``: angle, y scale, whether y was resampled; ``corrections``: the parameters used.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import dask.array as da
import numpy as np
import xarray as xr

from pipeline.backend import to_numpy
from pipeline.correct.destripe import apply_offsets_dask, stripe_offsets_dask, stripe_rms
from pipeline.correct.drift import (
    PAIR_OPTIONS,
    applied_shifts,
    apply_shifts_dask,
    clean_drift,
    parallax_excess,
    probe_starts,
    smooth_drift,
    solve_drift,
    step_noise,
)
from pipeline.correct.estimate import EstimatePlan, Estimates, estimate_dask
from pipeline.correct.illumination import (
    _surface,
    correct_illumination_dask,
    fit_background,
    poly_terms,
    smooth_coefficients,
)
from pipeline.correct.roi import check_box, valid_box
from pipeline.correct.tilt import tilt_correct_dask, tilt_rows, tilt_scale, tilt_voxel_size
from pipeline.progress import compute

__all__ = ["TiltParams", "DestripeParams", "IlluminationParams", "DriftParams", "RoiParams", "correct_volume", "slab_depth"]


@dataclass
class TiltParams:
    """Foreshortening: y true size is pixel / sin(angle_deg); ``resample`` stretches y, else only the voxel size changes."""

    enabled: bool = True
    angle_deg: float = 52.0
    resample: bool = True


@dataclass
class DestripeParams:
    """Curtaining removal (:mod:`pipeline.correct.destripe`).

    ``histogram`` (default): every column's histogram of flat pixels registered
    on the slice's; ``keep`` fraction of flattest pixels, trends broader than
    ``background_px`` kept, offsets up to ``max_amplitude`` of the range.
    ``profile``: median residue across x over a window of ``width`` px.
    ``onset``: per column an offset that may switch on part-way down the
    slice, fitted on the bright phase and pooled over ``pool_slices`` slices
    on either side (0: each slice alone).
    ``threshold``: significance in standard errors (None: 2.5 for histogram,
    3.0 for profile, 4.0 for onset).
    """

    enabled: bool = True
    method: Literal["histogram", "profile", "onset"] = "histogram"
    threshold: float | None = None
    keep: float = 0.6
    background_px: int = 64
    max_amplitude: float = 0.25
    width: int = 15
    pool_slices: int = 8

    def params(self) -> dict[str, Any]:
        """Keyword arguments of the chosen method's function."""
        if self.method == "profile":
            out: dict[str, Any] = {"width": self.width}
        elif self.method == "onset":
            out = {"pool_slices": self.pool_slices} if self.pool_slices > 0 else {}
        else:
            out = {"keep": self.keep, "background_px": self.background_px, "max_amplitude": self.max_amplitude}
        if self.threshold is not None:
            out["threshold"] = self.threshold
        return out


@dataclass
class IlluminationParams:
    """Background removal (:mod:`pipeline.correct.illumination`).

    ``robust`` (default): a log-space polynomial of ``degree`` fitted to each
    slice's bright phase, smoothed along z over ``window`` slices and shrunk
    to the terms significant at ``significance`` standard errors (a stack
    without a gradient is left alone). ``poly``: a linear-space polynomial
    fitted to every pixel; ``gaussian``: a blur. Per ``slice`` or one per
    ``volume``.
    """

    enabled: bool = True
    method: Literal["robust", "poly", "gaussian"] = "robust"
    degree: int = 2
    sigma_fraction: float = 0.125
    scope: Literal["slice", "volume"] = "slice"
    mode: Literal["divide", "subtract"] = "divide"
    window: int = 51
    significance: float = 3.0


@dataclass
class DriftParams:
    """Drift: phase correlation against ``lags`` previous slices, least squares, then :func:`clean_drift`.

    ``parallax``: a steady y step that a lag-``parallax_lag`` probe shows to be
    shine-through parallax is removed; ``step_threshold``: steps under that
    many noise levels (from the lag-1 / lag-2 closure) are set to 0 (0: off);
    ``smooth_window``: Savitzky-Golay window after that (< 3 off; it spreads
    real jumps over the window). ``interpolation``: ``nearest`` moves each
    slice by its shift rounded to whole pixels (aligned within half a pixel,
    every value a measured one); ``linear`` by the sub-pixel shift, which
    averages neighbouring pixels (a half-pixel shift is a 2-pixel box blur)
    and cost the U-Nets of stop 20 1.1-1.5 points of pore IoU on test-like
    renders (``benchmarks/correction.py``, 4 stacks).
    """

    enabled: bool = True
    lags: int = 2
    upsample: int = 50
    highpass_px: float = 16.0
    min_confidence: float = 5.0
    max_step_px: float | None = None
    smooth_window: int = 0
    step_threshold: float = 5.0
    parallax: bool = True
    parallax_lag: int = 4
    interpolation: Literal["nearest", "linear"] = "nearest"


@dataclass
class RoiParams:
    """``auto``: largest box with data on every slice after alignment; ``box``: explicit; ``none``: keep all."""

    mode: Literal["auto", "box", "none"] = "auto"
    box: list[list[int]] | None = None


@dataclass
class _All:
    tilt: TiltParams = field(default_factory=TiltParams)
    destripe: DestripeParams = field(default_factory=DestripeParams)
    illumination: IlluminationParams = field(default_factory=IlluminationParams)
    drift: DriftParams = field(default_factory=DriftParams)
    roi: RoiParams = field(default_factory=RoiParams)


def slab_depth(shape: tuple[int, ...], slab_mb: float = 32.0, *, align: int = 1) -> int:
    """Slices per whole-slice slab so a float32 slab is about ``slab_mb`` MB.

    ``align``: the input's z chunk; a slab of at least that many slices is
    cut down to whole chunks, so that no chunk is read by two slabs.
    """
    per = 4 * int(shape[1]) * int(shape[2])
    depth = int(max(1, min(int(shape[0]), slab_mb * 1e6 // max(per, 1))))
    return depth - depth % align if 1 < align <= depth < int(shape[0]) else depth


def _illumination_diagnostics(
    coefs: np.ndarray, shape: tuple[int, int], degree: int, log: bool = False
) -> tuple[list[list[float]], list[list[float]]]:
    small = (min(16, shape[0]), min(16, shape[1]))
    rng_rows = []
    mean_map = np.zeros(small)
    for c in coefs:
        s = _surface(c, small, np, degree, log=log)
        m = float(s.mean()) or 1.0
        rng_rows.append([float(s.min() / m), float(s.max() / m)])
        mean_map += s / m
    mean_map /= max(len(coefs), 1)
    return rng_rows, np.round(mean_map, 5).tolist()


def _illumination_coefficients(data: da.Array, p: IlluminationParams, progress: str | None = None) -> np.ndarray | None:
    """Coefficients that cannot come from the one estimation pass: one ``poly`` fit of the mean slice (scope ``volume``)."""
    if p.scope == "volume" and p.method == "gaussian":
        raise ValueError("illumination scope 'volume' needs method 'robust' or 'poly'")
    if p.scope == "volume" and p.method == "poly":
        mean_img = to_numpy(compute(data.mean(axis=0), desc=progress)[0])
        return np.repeat(fit_background(mean_img, p.degree)[None], data.shape[0], axis=0)
    return None


def _illumination_attrs(coefs: np.ndarray, shape: tuple[int, int], p: IlluminationParams) -> tuple[np.ndarray, dict[str, Any]]:
    """The coefficients the chain applies (``robust``: smoothed along z, shrunk) and their diagnostics."""
    attrs: dict[str, Any] = {}
    log = p.method == "robust"
    if log:
        coefs, info = smooth_coefficients(coefs, 0 if p.scope == "volume" else p.window, p.significance)
        attrs["illumination_fit"] = {**info, "terms": [list(t) for t in poly_terms(p.degree)]}
    rr, mp = _illumination_diagnostics(coefs, shape, p.degree, log=log)
    attrs["illumination_relative_range"] = rr
    attrs["illumination_map"] = mp
    attrs["illumination_terms"] = [list(t) for t in poly_terms(p.degree)]
    return coefs, attrs


def _plan(data: da.Array, destripe: DestripeParams, illumination: IlluminationParams, drift: DriftParams,
          stripes_in_pass: bool, rows_given: bool) -> EstimatePlan:
    """What the one estimation pass measures for these step parameters."""
    stripes = {"stripe_method": destripe.method, "stripe_params": destripe.params()} if stripes_in_pass else {}
    illum: dict[str, Any] = {}
    if illumination.enabled:
        kind = "rows" if rows_given else illumination.method
        illum = {"illumination": kind, "illumination_method": illumination.method, "degree": illumination.degree,
                 "sigma_fraction": illumination.sigma_fraction, "mode": illumination.mode}
    pairs: dict[str, Any] = {}
    if drift.enabled and data.shape[0] > 1:
        starts = probe_starts(int(data.shape[0]), drift.parallax_lag) if drift.parallax else np.zeros(0, int)
        pairs = {"lags": drift.lags, "drift_options": {**PAIR_OPTIONS, "upsample": drift.upsample, "highpass_px": drift.highpass_px},
                 "probe_lag": drift.parallax_lag if len(starts) else 0, "probe_starts": tuple(int(v) for v in starts)}
    return EstimatePlan(**stripes, **illum, **pairs)


def correct_volume(
    vol: xr.DataArray,
    *,
    tilt: TiltParams | None = None,
    destripe: DestripeParams | None = None,
    illumination: IlluminationParams | None = None,
    drift: DriftParams | None = None,
    roi: RoiParams | None = None,
    output_dtype: Literal["float32", "input"] = "float32",
    slab_mb: float = 32.0,
    progress: str | None = None,
) -> xr.DataArray:
    """Apply the enabled corrections to a (z, y, x) volume; return a lazy volume with diagnostics.

    Parameters
    ----------
    vol : xarray.DataArray
        Volume with ``voxel_size_nm`` (nm, z, y, x).
    tilt, destripe, illumination, drift, roi
        Step parameters (defaults when None).
    output_dtype : {"float32", "input"}
        ``input`` rounds and clips back to an integer input dtype.
    slab_mb : float
        Size of the whole-slice slabs the steps run on (MB of float32).
    progress : str, optional
        Prefix of the progress bars of the estimation pass (``estimates``:
        stripes, illumination and drift in one read of the stack,
        :mod:`pipeline.correct.estimate`) and of the passes only some
        settings need (``stripes`` for pooled ``onset``, ``illumination``
        for a ``poly`` fit of the mean slice); the lazy result's own bar is
        its writer's.

    Raises
    ------
    ValueError
        For parameters that do not fit the volume (ROI box, drift too large).
    """
    from pipeline.io.volume import as_volume, voxel_size_of

    def bar(part: str) -> str | None:
        return None if progress is None else f"{progress}: {part}"

    tilt = tilt or TiltParams()
    destripe = destripe or DestripeParams()
    illumination = illumination or IlluminationParams()
    drift = drift or DriftParams()
    roi = roi or RoiParams()
    voxel = list(voxel_size_of(vol))
    data = vol.data if isinstance(vol.data, da.Array) else da.from_array(np.asarray(vol.data), chunks="auto")
    in_dtype = data.dtype
    attrs: dict[str, Any] = {k: v for k, v in vol.attrs.items() if k not in ("provenance", "voxel_size_nm")}
    attrs["corrections"] = asdict(_All(tilt, destripe, illumination, drift, roi))

    data = data.astype(np.float32) if data.dtype != np.float32 else data
    # one slab layout for every step, sized for the (larger) tilted slices, of whole input chunks
    ny_out = tilt_rows(int(data.shape[1]), tilt.angle_deg) if tilt.enabled and tilt.resample else int(data.shape[1])
    data = data.rechunk((slab_depth((data.shape[0], max(ny_out, int(data.shape[1])), data.shape[2]), slab_mb,
                                    align=int(data.chunksize[0])), -1, -1))
    if tilt.enabled:
        ny = data.shape[1]
        if tilt.resample:
            data = tilt_correct_dask(data, tilt.angle_deg)
        voxel = tilt_voxel_size(voxel, ny, tilt.angle_deg, resample=tilt.resample)
        attrs["tilt"] = {"angle_deg": tilt.angle_deg, "y_scale": tilt_scale(tilt.angle_deg), "resampled": tilt.resample,
                         "rows_before": ny, "rows_after": int(data.shape[1])}
    # one pass measures every statistic (stripes, illumination, drift); pooled stripes need a pass of their own
    stripes_in_pass = destripe.enabled and not (destripe.method == "onset" and destripe.pool_slices > 0)
    offsets = None
    measured_on = data
    if destripe.enabled and not stripes_in_pass:
        offsets = stripe_offsets_dask(data, destripe.method, progress=bar("stripes"), **destripe.params())
        measured_on = apply_offsets_dask(data, offsets, destripe.method)
    rows = _illumination_coefficients(measured_on, illumination, bar("illumination")) if illumination.enabled else None
    plan = _plan(data, destripe, illumination, drift, stripes_in_pass, rows is not None)
    est = Estimates(None, None, None, None) if plan.empty else estimate_dask(measured_on, plan, rows=rows, progress=bar("estimates"))
    if destripe.enabled:
        offsets = est.offsets if stripes_in_pass else offsets
        attrs["stripe_rms"] = [float(round(v, 5)) for v in stripe_rms(offsets, int(data.shape[1]))]
        data = apply_offsets_dask(data, offsets, destripe.method)
    if illumination.enabled:
        coefs = rows if rows is not None else est.coefficients
        if coefs is not None:
            coefs, illum_attrs = _illumination_attrs(coefs, data.shape[1:], illumination)
            attrs.update(illum_attrs)
        data = correct_illumination_dask(data, illumination.method, degree=illumination.degree,
                                         sigma_fraction=illumination.sigma_fraction, mode=illumination.mode,
                                         coefficients=coefs)
    shifts = np.zeros((data.shape[0], 2))
    if est.pairs is not None:
        pairs = est.pairs
        measured, used = solve_drift(pairs, min_confidence=drift.min_confidence, max_step_px=drift.max_step_px)
        probe = None
        if drift.parallax:
            probe = parallax_excess(est.probe_dy, np.asarray(plan.probe_starts, int), measured, drift.parallax_lag) \
                if est.probe_dy is not None else (float("nan"), float("nan"))
        cleaned, info = clean_drift(measured, step_noise(pairs), threshold=drift.step_threshold, parallax=probe)
        attrs["drift_cleaning"] = info
        smooth = smooth_drift(cleaned, drift.smooth_window)
        reference = np.median(smooth, axis=0)
        shifts = applied_shifts(-(smooth - reference), drift.interpolation)
        attrs["drift_px"] = np.round(smooth, 4).tolist()
        attrs["drift_measured_px"] = np.round(measured, 4).tolist()
        attrs["drift_confidence"] = [0.0] + [float(round(c, 3)) for c in np.nan_to_num(pairs[1:, 0, 2])]
        attrs["drift_reference_px"] = [float(v) for v in np.round(reference, 4)]
        attrs["drift_pairs_used"] = float(np.mean(used[1:, 0])) if len(used) > 1 else 1.0
        attrs["drift_shift_px"] = np.round(shifts, 4).tolist()
        data = apply_shifts_dask(data, shifts, interpolation=drift.interpolation)
    z, ny, nx = data.shape
    if roi.mode == "auto":
        (y0, y1), (x0, x1) = valid_box((ny, nx), shifts)
        box = ((0, z), (y0, y1), (x0, x1))
    elif roi.mode == "box":
        if roi.box is None:
            raise ValueError("ROI mode 'box' needs box [[z0, z1], [y0, y1], [x0, x1]]")
        box = check_box(roi.box, (z, ny, nx))
    else:
        box = ((0, z), (0, ny), (0, nx))
    data = data[box[0][0] : box[0][1], box[1][0] : box[1][1], box[2][0] : box[2][1]]
    attrs["roi_box"] = [list(b) for b in box]
    if output_dtype == "input" and np.dtype(in_dtype).kind in "ui":
        info = np.iinfo(in_dtype)
        data = da.clip(da.round(data), info.min, info.max).astype(in_dtype)
    origin = [float(vol[d].values[0]) if d in vol.coords and vol.sizes[d] else 0.0 for d in ("z", "y", "x")]
    origin = [origin[0] + box[0][0] * voxel[0], box[1][0] * voxel[1], origin[2] + box[2][0] * voxel[2]]
    return as_volume(data, voxel, name=str(vol.name or "image"), attrs=attrs, origin_nm=origin)
