"""Preprocess a porelab volume lazily: denoise, then normalise to float32 in [0, 1].

The denoised volume is needed twice: its histogram gives the normalisation
range, then every voxel is mapped with that range. :func:`preprocess_volume`
keeps the denoised blocks on the workers between the two when they fit in
the cluster's memory (the filter runs once); otherwise the filter runs once
for the histogram and again for the result, block by block (out-of-core).
The ``preprocess`` job stage has a third way for volumes that do not fit:
it writes the denoised blocks to the output store while counting them and
normalises them there (:mod:`pipeline.jobs.stages.preprocess`).
Histogram bins are fixed before the filter runs, from the input's range
(:func:`pipeline.preprocess.denoise.output_range`), so no pass over the
filtered data is spent on its minimum and maximum.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import dask
import dask.array as da
import numpy as np
import xarray as xr

from pipeline.backend import to_numpy
from pipeline.preprocess.denoise import denoise_dask, estimate_noise_sigma, halo_depth, merged_chunks, output_range
from pipeline.preprocess.normalize import (
    Collect,
    HistogramSpec,
    collect_of,
    has_integer_bins,
    histogram_dask,
    histogram_spec,
    lazy_spec,
    lazy_value_range,
    match_slices_dask,
    normalize_in_memory,
    two_stage_percentiles,
    value_range_of,
)
from pipeline.preprocess.normalize import normalize as scale_to_unit

__all__ = [
    "DenoiseParams",
    "NormalizeParams",
    "PreprocessPlan",
    "plan_preprocess",
    "run_plan",
    "normalize_with_state",
    "preprocess_volume",
]


@dataclass
class DenoiseParams:
    """Denoising step. ``method`` none | gaussian | median | bilateral; ``dims`` 2 (per slice) or 3.

    ``sigma`` (voxels) is the gaussian's and the bilateral's spatial sigma;
    ``size`` the median window edge (odd, voxels); ``sigma_range`` the
    bilateral's intensity sigma in input units (None: 2.5 x the noise level
    estimated from a few slices).
    """

    method: Literal["none", "gaussian", "median", "bilateral"] = "gaussian"
    dims: Literal[2, 3] = 2
    sigma: float = 1.0
    size: int = 3
    sigma_range: float | None = None
    mode: str = "reflect"

    def filter_params(self) -> dict[str, Any]:
        if self.method == "gaussian":
            return {"sigma": self.sigma}
        if self.method == "median":
            return {"size": self.size}
        if self.method == "bilateral":
            return {"sigma_spatial": self.sigma, "sigma_range": self.sigma_range}
        return {}


@dataclass
class NormalizeParams:
    """Normalisation: percentiles ``low``/``high`` of the whole volume map to 0 and 1."""

    enabled: bool = True
    low: float = 0.5
    high: float = 99.5
    clip: bool = True
    match_histograms: bool = False


@dataclass
class _Params:
    denoise: DenoiseParams = field(default_factory=DenoiseParams)
    normalize: NormalizeParams = field(default_factory=NormalizeParams)


def _sample_slices(data: da.Array, n: int = 3) -> np.ndarray:
    z = data.shape[0]
    idx = sorted({int(round(v)) for v in np.linspace(0, z - 1, min(n, z) + 2)[1:-1]} or {0})
    return to_numpy(data[idx].compute())


@dataclass(frozen=True)
class PreprocessPlan:
    """A lazily denoised volume and what its normalisation needs.

    Attributes
    ----------
    data : dask.array.Array (z, y, x)
        The input volume.
    filtered : dask.array.Array (z, y, x)
        The denoised volume, lazy: float32 (float64 input stays float64;
        the median keeps the input dtype; ``none`` is the input).
    denoise, normalize : DenoiseParams, NormalizeParams
    attrs : dict
        Attributes of the result so far (``denoise``, ``noise_sigma``);
        :meth:`normalization_attrs` adds the normalisation's.
    filter_params : dict
        Keywords of the filter (:func:`pipeline.preprocess.denoise.denoise`),
        with the bilateral ``sigma_range`` chosen.
    """

    data: da.Array
    filtered: da.Array
    denoise: DenoiseParams
    normalize: NormalizeParams
    attrs: dict[str, Any]
    filter_params: dict[str, Any] = field(default_factory=dict)

    def denoised(self, data: da.Array) -> da.Array:
        """The denoising of ``data`` (the input, rechunked say) with this plan's filter and parameters."""
        return denoise_dask(data, self.denoise.method, dims=self.denoise.dims, mode=self.denoise.mode, **self.filter_params)

    @property
    def result_nbytes(self) -> int:
        """Bytes of the denoised volume as float32 (what is kept in memory or written)."""
        return int(np.prod(self.filtered.shape)) * 4

    @property
    def percentiles(self) -> list[float]:
        """The ``low`` and ``high`` percentiles mapped to 0 and 1."""
        return [self.normalize.low, self.normalize.high]

    def histogram_spec(self, counted: Any = None) -> HistogramSpec:
        """Bins of the denoised values, from the input's range (reads the input once for float bins).

        ``counted``: the float type the values are counted in when not the
        denoised dtype (float64 results stored as float32): the range is
        rounded outwards to it.
        """
        if has_integer_bins(self.filtered.dtype):
            return histogram_spec(self.filtered.dtype)
        lo, hi = output_range(self.denoise.method, value_range_of(self.data), mode=self.denoise.mode)
        if counted is not None and np.dtype(counted).kind == "f":
            ftype = np.dtype(counted).type
            lo = float(np.nextafter(ftype(lo), ftype(-np.inf))) if float(ftype(lo)) > lo else float(ftype(lo))
            hi = float(np.nextafter(ftype(hi), ftype(np.inf))) if float(ftype(hi)) < hi else float(ftype(hi))
        return histogram_spec(self.filtered.dtype, (lo, hi))

    def lazy_bounds(self, data: da.Array | None = None) -> Any:
        """A range holding every denoised value, as a dask ``Delayed`` from the range of ``data`` (default the input).

        None for integer bins.
        """
        if has_integer_bins(self.filtered.dtype):
            return None
        data = self.data if data is None else data
        return dask.delayed(output_range, pure=True)(self.denoise.method, lazy_value_range(data), mode=self.denoise.mode)

    def normalization_range(
        self, spec: HistogramSpec, counts: np.ndarray, collect: Collect, *, dtype: Any = None
    ) -> tuple[float, float]:
        """``(lo, hi)`` in input units: the ``low``/``high`` percentiles of the denoised volume.

        Parameters
        ----------
        spec : HistogramSpec
            Bins of ``counts`` (:meth:`histogram_spec`).
        counts : ndarray
            The denoised volume's histogram.
        collect : callable
            ``collect(fn)``: ``fn`` of every denoised block, as a list (float
            bins are refined with it; see
            :func:`pipeline.preprocess.normalize.two_stage_percentiles`).
        dtype : dtype, optional
            Float type of the blocks ``collect`` sees; default the denoised dtype.
        """
        lo, hi = two_stage_percentiles(spec, np.asarray(counts), self.percentiles, collect, dtype=dtype or self.filtered.dtype)
        return float(lo), float(hi)

    def normalization_attrs(self, lo: float, hi: float) -> dict[str, Any]:
        """Attributes recording a normalisation from ``[lo, hi]`` (input units)."""
        return {
            "normalization_range": [float(lo), float(hi)],
            "normalization_percentiles": self.percentiles,
            "histogram_matching": bool(self.normalize.match_histograms),
        }

    def normalization_state(
        self, counts: np.ndarray, collect: Collect, *, spec: HistogramSpec, dtype: Any = None
    ) -> dict[str, Any]:
        """The attrs of the normalisation found by :meth:`normalization_range` (a two-pass write's ``finish``)."""
        return self.normalization_attrs(*self.normalization_range(spec, counts, collect, dtype=dtype))


def normalize_with_state(block: Any, state: dict[str, Any], *, clip: bool = True) -> Any:
    """Normalise one denoised block with the range recorded in ``state["normalization_range"]`` (input units).

    The ``apply`` step of a two-pass write (:meth:`PreprocessPlan.normalization_state` is its ``finish``).
    """
    lo, hi = state["normalization_range"]
    return scale_to_unit(block, lo, hi, clip=clip)


def plan_preprocess(
    vol: xr.DataArray,
    denoise: DenoiseParams | None = None,
    normalize: NormalizeParams | None = None,
) -> PreprocessPlan:
    """Set up the denoising of ``vol`` lazily.

    Computes only the bilateral noise level from a few slices, when it is
    needed. NumPy input is chunked like a volume store (:data:`DEFAULT_CHUNKS`).
    """
    from pipeline.io.volume import DEFAULT_CHUNKS

    denoise = denoise or DenoiseParams()
    normalize = normalize or NormalizeParams()
    if not 0 <= normalize.low < normalize.high <= 100:
        raise ValueError(f"expected 0 <= low < high <= 100; got low={normalize.low}, high={normalize.high}")
    data = vol.data if isinstance(vol.data, da.Array) else da.from_array(np.asarray(vol.data), chunks=DEFAULT_CHUNKS)
    attrs = {k: v for k, v in vol.attrs.items() if k != "provenance"}
    params = denoise.filter_params()
    if denoise.method == "bilateral" and denoise.sigma_range is None:
        sigma_n = estimate_noise_sigma(_sample_slices(data))
        if sigma_n <= 0:
            sigma_n = float(np.std(_sample_slices(data))) * 0.05 or 1.0
        params["sigma_range"] = 2.5 * sigma_n
        attrs["noise_sigma"] = sigma_n
    filtered = denoise_dask(data, denoise.method, dims=denoise.dims, mode=denoise.mode, **params)
    record = asdict(denoise)
    if "sigma_range" in params:
        record["sigma_range"] = params["sigma_range"]
    attrs["denoise"] = record
    return PreprocessPlan(data, filtered, denoise, normalize, attrs, params)


def _normalized_in_memory(plan: PreprocessPlan) -> tuple[da.Array, float, float]:
    """Denoised blocks kept in memory (:func:`normalize_in_memory`): each block is filtered once.

    The input is read once and kept too (its range and its filter both come
    from memory), its chunks first merged into whole slices where blocks
    stay small (:func:`pipeline.preprocess.denoise.merged_chunks`): fewer,
    larger tasks and no halo exchange for 2D filters. The result keeps
    those chunks (kept in memory, splitting them later moves nothing).
    """
    depth = halo_depth(plan.denoise.method, dims=plan.denoise.dims, **plan.filter_params)
    chunks = merged_chunks(plan.data.chunks, depth)
    (data,) = dask.persist(plan.data if chunks == plan.data.chunks else plan.data.rechunk(chunks))
    filtered = plan.denoised(data)
    spec = lazy_spec(filtered.dtype, plan.lazy_bounds(data))
    return normalize_in_memory(filtered, plan.percentiles, spec, clip=plan.normalize.clip)


def _normalized_out_of_core(plan: PreprocessPlan) -> tuple[da.Array, float, float]:
    """Statistics first (the filter runs for the histogram and for the values near the percentiles), result lazy."""
    spec = plan.histogram_spec()
    counts = np.asarray(histogram_dask(plan.filtered, spec).compute())
    lo, hi = plan.normalization_range(spec, counts, collect_of(plan.filtered))
    return plan.filtered.map_blocks(scale_to_unit, lo, hi, clip=plan.normalize.clip, dtype=np.float32), lo, hi


def run_plan(plan: PreprocessPlan, vol: xr.DataArray, *, persist: bool | None = None) -> xr.DataArray:
    """The preprocessed volume of ``plan`` (dask, float32), with the normalisation range known.

    Parameters
    ----------
    plan : PreprocessPlan
        From :func:`plan_preprocess` on ``vol``.
    vol : xarray.DataArray
        The input volume (its dims, coords and name are kept).
    persist : bool, optional
        See :func:`preprocess_volume`.
    """
    from pipeline.engine.dask_cluster import fits_in_memory

    attrs = dict(plan.attrs)
    if not plan.normalize.enabled:
        out = plan.filtered.astype(np.float32)
    else:
        keep = fits_in_memory(plan.result_nbytes) if persist is None else persist
        out, lo, hi = _normalized_in_memory(plan) if keep else _normalized_out_of_core(plan)
        attrs.update(plan.normalization_attrs(lo, hi))
        if plan.normalize.match_histograms:
            out, _ = match_slices_dask(out)
    return xr.DataArray(out, dims=vol.dims, coords=vol.coords, name=vol.name, attrs=attrs)


def preprocess_volume(
    vol: xr.DataArray,
    denoise: DenoiseParams | None = None,
    normalize: NormalizeParams | None = None,
    *,
    persist: bool | None = None,
) -> xr.DataArray:
    """Denoise and normalise a (z, y, x) volume; the normalisation range is computed now.

    The robust percentiles (exactly :func:`numpy.percentile`'s, see
    :func:`pipeline.preprocess.normalize.two_stage_percentiles`; per-slice
    histograms too when matching) are computed on the active Dask
    scheduler, from a histogram whose bins come from the input's range.
    The result is a dask float32 volume with attrs ``normalization_range``
    ([lo, hi] in input units), ``normalization_percentiles``, ``denoise``
    (the parameters used, with the ``sigma_range`` chosen) and
    ``noise_sigma`` (estimate, input units) when it was needed.

    Parameters
    ----------
    vol : xarray.DataArray (z, y, x)
    denoise, normalize : parameters, optional
    persist : bool, optional
        True: statistics and result in one graph, persisted: every denoised
        block is computed once, held on the workers until the percentiles
        are known, and the result comes back persisted. False: out-of-core,
        the result lazy; the filter runs for the histogram, for the values
        near the percentiles, and once more when the result is computed.
        None (default): True when the denoised volume as float32 takes at
        most 30 % of the cluster's memory
        (:func:`pipeline.engine.dask_cluster.fits_in_memory`).
    """
    return run_plan(plan_preprocess(vol, denoise, normalize), vol, persist=persist)
