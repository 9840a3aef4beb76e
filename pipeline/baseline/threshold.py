"""The grayscale-threshold segmentation that the paper improves on (Ferner et al. 2024).

Slice by slice: curtaining (stripe) removal, a denoising filter, one global
threshold for the whole stack (a given value or Otsu's), then cleaning (small
islands of either phase removed). Pores are dark in FIB-SEM images, so
voxels under the threshold are pore (1). Every step works on whole (y, x)
slices, so a dask stack is processed chunk by chunk; Otsu's threshold comes
from a histogram of the filtered stack, also reduced block by block.

Curtaining removal reuses :func:`pipeline.correct.destripe.destripe_profile`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import dask.array as da
import numpy as np

__all__ = [
    "BaselineParams",
    "filter_slice",
    "destripe_slice",
    "denoise_slice",
    "clean_slice",
    "otsu_from_histogram",
    "filtered_stack",
    "baseline_threshold",
    "threshold_filtered",
    "baseline_segment",
]

#: Bins of the histogram Otsu's threshold is computed from.
HIST_BINS = 1024


@dataclass(frozen=True)
class BaselineParams:
    """Parameters of the threshold baseline.

    Attributes
    ----------
    destripe : bool
        Remove curtaining stripes first.
    stripe_width : int
        Median window across x (px) of the stripe removal.
    filter : {"median", "gaussian", "none"}
        Denoising filter per slice.
    filter_size : float
        Median window (px, odd) or gaussian sigma (px).
    threshold : float or None
        Grey value under which a voxel is pore (in the filtered image's
        units); None: Otsu's threshold of the filtered stack.
    threshold_offset : float
        Added to the threshold, as a fraction of the filtered stack's grey
        range (the knob of the sensitivity sweep).
    min_size : int
        Islands of either phase smaller than this (px, per slice, 8-connected) are flipped.
    """

    destripe: bool = True
    stripe_width: int = 15
    filter: Literal["median", "gaussian", "none"] = "median"
    filter_size: float = 3.0
    threshold: float | None = None
    threshold_offset: float = 0.0
    min_size: int = 16

    def __post_init__(self) -> None:
        if self.filter not in ("median", "gaussian", "none"):
            raise ValueError(f"filter {self.filter!r} is not one of median, gaussian, none")
        if self.filter_size < 0 or self.min_size < 0 or self.stripe_width < 3:
            raise ValueError("filter_size and min_size must be >= 0 and stripe_width >= 3")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_(self, **changes: Any) -> BaselineParams:
        return replace(self, **changes)


def filter_slice(img: np.ndarray, p: BaselineParams) -> np.ndarray:
    """Destripe and denoise one (y, x) slice; float32 out."""
    return denoise_slice(destripe_slice(img, p), p)


def destripe_slice(img: np.ndarray, p: BaselineParams) -> np.ndarray:
    """The first step of :func:`filter_slice`: stripe removal (when ``p.destripe``); float32 out."""
    from pipeline.backend import to_numpy
    from pipeline.correct.destripe import destripe_profile

    a = to_numpy(img).astype(np.float32, copy=False)  # CuPy slices are filtered on the host
    return destripe_profile(a, width=p.stripe_width) if p.destripe else a


def denoise_slice(img: np.ndarray, p: BaselineParams) -> np.ndarray:
    """The second step of :func:`filter_slice`: the denoising filter of ``p`` on a float32 slice; float32 out."""
    import scipy.ndimage as ndi

    a = np.asarray(img, dtype=np.float32)
    if p.filter == "median" and p.filter_size >= 2:
        a = ndi.median_filter(a, size=int(p.filter_size) | 1, mode="reflect")
    elif p.filter == "gaussian" and p.filter_size > 0:
        a = ndi.gaussian_filter(a, float(p.filter_size), mode="reflect")
    return a.astype(np.float32, copy=False)


def clean_slice(pore: np.ndarray, min_size: int) -> np.ndarray:
    """Flip 8-connected islands of either phase smaller than ``min_size`` px."""
    import scipy.ndimage as ndi

    out = np.asarray(pore, dtype=bool).copy()
    if min_size <= 1:
        return out
    st = np.ones((3, 3), bool)
    for value in (True, False):
        lab, n = ndi.label(out == value, structure=st)
        if n == 0:
            continue
        sizes = np.bincount(lab.ravel())
        small = sizes < min_size
        small[0] = False
        out[small[lab]] = not value
    return out


def _slices(block: np.ndarray, fn: Any, p: BaselineParams) -> np.ndarray:
    """``fn(slice, p)`` on every slice of a (z, y, x) block, float32."""
    return np.stack([fn(s, p) for s in block]) if len(block) else block.astype(np.float32)


def _filter_block(block: np.ndarray, p: BaselineParams) -> np.ndarray:
    return _slices(block, filter_slice, p)


def filtered_stack(image: Any, p: BaselineParams) -> da.Array:
    """The destriped, filtered stack (lazy, whole-slice chunks)."""
    arr = da.asarray(image)
    if arr.ndim != 3:
        raise ValueError(f"image must be 3D (z, y, x); got shape {arr.shape}")
    arr = arr.rechunk({0: "auto", 1: -1, 2: -1})
    return arr.map_blocks(_filter_block, p, dtype=np.float32)


def otsu_from_histogram(counts: np.ndarray, edges: np.ndarray) -> float:
    """Otsu's threshold (the bin edge that maximises the between-class variance)."""
    c = np.asarray(counts, dtype=np.float64)
    centres = 0.5 * (edges[:-1] + edges[1:])
    w0 = np.cumsum(c)
    w1 = w0[-1] - w0
    m0 = np.cumsum(c * centres)
    mu0 = np.divide(m0, w0, out=np.zeros_like(m0), where=w0 > 0)
    mu1 = np.divide(m0[-1] - m0, w1, out=np.zeros_like(m0), where=w1 > 0)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(edges[int(np.argmax(between[:-1])) + 1])


def baseline_threshold(filtered: da.Array, p: BaselineParams) -> dict[str, float]:
    """The global threshold: given or Otsu's, plus the offset; and the grey range it is relative to."""
    lo, hi = (float(v) for v in da.compute(filtered.min(), filtered.max()))
    base = p.threshold
    if base is None:
        if hi <= lo:
            base = lo
        else:
            counts, edges = da.histogram(filtered, bins=HIST_BINS, range=(lo, hi))
            base = otsu_from_histogram(np.asarray(counts.compute()), np.asarray(edges))
    return {"threshold": float(base) + p.threshold_offset * (hi - lo), "base_threshold": float(base),
            "grey_min": lo, "grey_max": hi}


def _segment_block(block: np.ndarray, t: float, min_size: int) -> np.ndarray:
    return np.stack([clean_slice(s < t, min_size) for s in block]).astype(np.uint8) if len(block) else block.astype(np.uint8)


def threshold_filtered(filtered: Any, params: BaselineParams | None = None) -> tuple[da.Array, dict[str, float]]:
    """The baseline's later steps on an already filtered stack: the global threshold, then cleaning.

    ``baseline_segment(image, p)`` is ``threshold_filtered(filtered_stack(image, p), p)``; out of core,
    the filtered stack may be written once and read here, instead of being filtered again for the
    threshold's statistics and for the labels.

    Parameters
    ----------
    filtered : array (z, y, x)
        :func:`filtered_stack` of the grey stack (float32), NumPy or dask (any chunks).
    params : BaselineParams, optional

    Returns
    -------
    labels, info
        As :func:`baseline_segment`.
    """
    p = params or BaselineParams()
    f = da.asarray(filtered)
    if f.ndim != 3:
        raise ValueError(f"filtered stack must be 3D (z, y, x); got shape {f.shape}")
    f = f.rechunk({1: -1, 2: -1})  # islands are cleaned per whole slice
    info = baseline_threshold(f, p)
    labels = f.map_blocks(_segment_block, info["threshold"], p.min_size, dtype=np.uint8)
    return labels, info


def baseline_segment(image: Any, params: BaselineParams | None = None) -> tuple[da.Array, dict[str, float]]:
    """Segment a grey stack with the threshold baseline.

    Parameters
    ----------
    image : array (z, y, x)
        Grey values (any dtype), pores dark; NumPy or dask.
    params : BaselineParams, optional

    Returns
    -------
    labels : dask array of uint8
        1 = pore, 0 = solid (lazy).
    info : dict
        ``threshold`` used, ``base_threshold`` (given or Otsu), ``grey_min``, ``grey_max``.
    """
    p = params or BaselineParams()
    return threshold_filtered(filtered_stack(image, p), p)
