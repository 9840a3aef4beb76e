"""Pore-size distribution from local thickness: histogram, log-normal fit, goodness of fit.

The distribution is volume weighted (every pore voxel counts once, with its
local thickness). A volume-weighted log-normal with median ``m`` and ``sigma``
corresponds to a number-weighted one of median ``m exp(-3 sigma^2)``
(Hatch-Choate).
"""

from __future__ import annotations

import math
from typing import Any

import dask
import dask.array as da
import numpy as np

from pipeline.engine.blocks import grouped_blocks
from pipeline.progress import compute

__all__ = ["thickness_histogram", "fit_lognormal_hist", "lognormal_pdf", "distribution_summary", "FIT_KS_MAX"]

#: A log-normal fit whose Kolmogorov-Smirnov distance to the data is above this is flagged ``poor``
#: (with millions of voxels every p-value is tiny; the distance itself says how far the shape is off).
FIT_KS_MAX = 0.1


def thickness_histogram(
    thickness: Any, *, bins: int | None = None, max_nm: float | None = None, values: np.ndarray | None = None,
    progress: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Counts of local-thickness values (nm) of the pore voxels (values > 0), out of core.

    Local thickness takes a few discrete values; by default there is one bin
    around each distinct value (``values`` when known, as from
    :func:`~pipeline.analyze.thickness.local_thickness_dask`'s ``values_nm``;
    else from the blocks' unique values, one more pass), or ``bins`` equal
    bins up to ``max_nm``. One pass over ``thickness`` when ``values`` or
    ``max_nm`` is given; that pass computes one small histogram per block
    (nothing bigger than a block is held), with a progress bar labelled
    ``progress``.

    Returns
    -------
    counts : int64 array
    edges : float64 array (nm)
    """
    t = da.asarray(thickness)
    if bins is None:
        vals = np.unique(np.asarray(values, dtype=np.float64)) if values is not None else np.unique(da.unique(t).compute())
        vals = vals[vals > 0]
        if len(vals) == 0:
            return np.zeros(0, np.int64), np.zeros(1)
        if len(vals) == 1:
            edges = np.array([vals[0] * 0.9, vals[0] * 1.1])
        else:
            mids = 0.5 * (vals[:-1] + vals[1:])
            edges = np.concatenate([[vals[0] - (mids[0] - vals[0])], mids, [vals[-1] + (vals[-1] - mids[-1])]])
    else:
        hi = float(max_nm if max_nm is not None else da.max(t).compute())
        edges = np.linspace(0.0, hi * 1.0001 if hi > 0 else 1.0, int(bins) + 1)
    # one small histogram per block: no boolean indexing of the dask array (unknown chunk sizes, then a
    # rechunk that shuffles the whole volume). One graph: the blocks of a lazy local thickness share the
    # reads of their halos (submitted block by block, every mask chunk was read again for each block
    # whose halo holds it: 852 s against 281 s on 2.5 Gvoxel)
    t = grouped_blocks(t)  # small chunks grouped (a lazy local thickness's blocks are already this size)
    tasks = [dask.delayed(_block_counts, pure=True)(b, edges) for b in t.to_delayed(optimize_graph=True).ravel()]
    counts = np.sum(compute(*tasks, desc=progress), axis=0, dtype=np.int64)
    return np.asarray(counts, dtype=np.int64), edges


def _block_counts(block: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Histogram (int64) of the positive values of one block."""
    b = np.asarray(block)
    return np.histogram(b[b > 0], bins=edges)[0].astype(np.int64)


def distribution_summary(counts: np.ndarray, edges: np.ndarray) -> dict[str, float]:
    """What the histogram itself says: volume-weighted median, mean and 10th / 90th percentiles (nm).

    Each bin's voxels are taken at its centre (exact for local thickness,
    whose values are the bin centres); a percentile is the first bin whose
    cumulative share reaches it.
    """
    c = np.asarray(counts, dtype=np.float64)
    e = np.asarray(edges, dtype=np.float64)
    if c.sum() <= 0:
        return {}
    centres = 0.5 * (e[:-1] + e[1:])
    cdf = np.cumsum(c) / c.sum()

    def pct(q: float) -> float:
        return float(centres[min(int(np.searchsorted(cdf, q - 1e-12)), len(centres) - 1)])

    return {"median_nm": pct(0.5), "mean_nm": float((c * centres).sum() / c.sum()), "p10_nm": pct(0.1), "p90_nm": pct(0.9)}


def lognormal_pdf(x: np.ndarray, median: float, sigma: float) -> np.ndarray:
    """Log-normal density with median ``median`` and log-sd ``sigma``."""
    x = np.asarray(x, dtype=np.float64)
    s = max(float(sigma), 1e-9)
    with np.errstate(divide="ignore", invalid="ignore"):
        y = np.exp(-((np.log(x) - math.log(median)) ** 2) / (2 * s * s)) / (x * s * math.sqrt(2 * math.pi))
    return np.where(x > 0, y, 0.0)


def fit_lognormal_hist(counts: np.ndarray, edges: np.ndarray) -> dict[str, Any]:
    """Maximum-likelihood log-normal fit of binned positive diameters, and its goodness of fit.

    Each bin's values are taken at its centre (exact for local thickness,
    whose values are the bin centres).

    Returns
    -------
    dict
        ``median_nm``, ``sigma``, ``mean_nm`` (of the fitted volume-weighted
        distribution), ``number_median_nm`` (Hatch-Choate), ``n`` (voxels),
        ``ks`` (Kolmogorov-Smirnov distance between the empirical and fitted
        CDF at the bin edges), ``r2_cdf`` (coefficient of determination of
        the fitted CDF against the empirical CDF at the bin edges; the
        histogram of local thickness is too spiky for a density R²),
        ``chi2_per_bin`` (Pearson chi-square per bin with at least 5 expected),
        ``poor`` (``ks`` above :data:`FIT_KS_MAX`: the distribution is not log-normal).
    """
    from scipy.stats import norm

    c = np.asarray(counts, dtype=np.float64)
    e = np.asarray(edges, dtype=np.float64)
    centres = 0.5 * (e[:-1] + e[1:])
    ok = (c > 0) & (centres > 0)
    n = float(c[ok].sum())
    if n < 2 or ok.sum() < 1:
        raise ValueError("at least two positive diameters are needed for a log-normal fit")
    ln = np.log(centres[ok])
    mu = float((c[ok] * ln).sum() / n)
    sigma = float(math.sqrt(max((c[ok] * (ln - mu) ** 2).sum() / n, 0.0)))
    median = math.exp(mu)
    cdf_emp = np.cumsum(c) / c.sum()
    with np.errstate(divide="ignore"):
        cdf_fit = norm.cdf((np.log(np.maximum(e[1:], 1e-300)) - mu) / max(sigma, 1e-9))
    ks = float(np.max(np.abs(cdf_emp - cdf_fit)))
    with np.errstate(divide="ignore"):
        fit_mass = np.diff(norm.cdf((np.log(np.maximum(e, 1e-300)) - mu) / max(sigma, 1e-9)))
    ss_res = float(((cdf_emp - cdf_fit) ** 2).sum())
    ss_tot = float(((cdf_emp - cdf_emp.mean()) ** 2).sum())
    expected = fit_mass * c.sum()
    good = expected > 5
    chi2 = float((((c - expected) ** 2)[good] / expected[good]).sum() / max(good.sum(), 1))
    return {
        "median_nm": median,
        "sigma": sigma,
        "mean_nm": median * math.exp(sigma**2 / 2),
        "number_median_nm": median * math.exp(-3 * sigma**2),
        "n": int(n),
        "ks": ks,
        "r2_cdf": 1 - ss_res / ss_tot if ss_tot > 0 else float("nan"),
        "chi2_per_bin": chi2,
        "poor": bool(ks > FIT_KS_MAX),
    }
