"""Preprocess a porelab volume lazily: denoise, then normalise to float32 in [0, 1]."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import dask.array as da
import numpy as np
import xarray as xr

from pipeline.preprocess.denoise import denoise_dask, estimate_noise_sigma
from pipeline.preprocess.normalize import match_slices_dask, normalize_dask

__all__ = ["DenoiseParams", "NormalizeParams", "preprocess_volume"]


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
    return np.asarray(data[idx].compute())


def preprocess_volume(
    vol: xr.DataArray,
    denoise: DenoiseParams | None = None,
    normalize: NormalizeParams | None = None,
) -> xr.DataArray:
    """Denoise and normalise a (z, y, x) volume, lazily except for the small statistics.

    The robust percentiles (and per-slice histograms when matching) are
    computed out-of-core on the active Dask scheduler; the returned volume is
    lazy (dask) float32 with attrs ``normalization_range`` ([lo, hi] in input
    units), ``normalization_percentiles``, ``denoise`` (the parameters used,
    with the ``sigma_range`` chosen) and ``noise_sigma`` (estimate, input
    units) when it was needed.
    """
    denoise = denoise or DenoiseParams()
    normalize = normalize or NormalizeParams()
    data = vol.data if isinstance(vol.data, da.Array) else da.from_array(np.asarray(vol.data), chunks="auto")
    attrs = {k: v for k, v in vol.attrs.items() if k != "provenance"}
    params = denoise.filter_params()
    if denoise.method == "bilateral" and denoise.sigma_range is None:
        sigma_n = estimate_noise_sigma(_sample_slices(data))
        if sigma_n <= 0:
            sigma_n = float(np.std(_sample_slices(data))) * 0.05 or 1.0
        params["sigma_range"] = 2.5 * sigma_n
        attrs["noise_sigma"] = sigma_n
    out = denoise_dask(data, denoise.method, dims=denoise.dims, mode=denoise.mode, **params)
    record = asdict(denoise)
    if "sigma_range" in params:
        record["sigma_range"] = params["sigma_range"]
    attrs["denoise"] = record
    if normalize.enabled:
        out, (lo, hi) = normalize_dask(out, normalize.low, normalize.high, clip=normalize.clip)
        attrs["normalization_range"] = [lo, hi]
        attrs["normalization_percentiles"] = [normalize.low, normalize.high]
        if normalize.match_histograms:
            out, _ = match_slices_dask(out)
        attrs["histogram_matching"] = bool(normalize.match_histograms)
    else:
        out = out.astype(np.float32)
    return xr.DataArray(out, dims=vol.dims, coords=vol.coords, name=vol.name, attrs=attrs)
