"""Size distributions of generated structures against log-normal fits (paper Fig. 4).

The size of a phase is measured as its *local thickness*: every voxel gets the
diameter of the largest ball that contains it and fits inside the phase
(Hildebrand & Rüegsegger). The resulting distribution is volume weighted. For
a union of spheres whose diameters are log-normal with median ``m`` and
``sigma``, the volume-weighted diameters are log-normal with the same sigma and
median ``m * exp(3 sigma^2)`` (Hatch-Choate), so the number median is
recovered as ``median_v * exp(-3 sigma^2)``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: Mean amount (voxels) by which twice the largest distance-transform value of a
#: digitised ball falls short of its diameter, for balls of radius 5-10 voxels
#: with random sub-voxel centres (measured: 0.86-0.89; 0.57 at radius 3).
DISCRETISATION_BIAS_VOXELS = 0.9

__all__ = ["DISCRETISATION_BIAS_VOXELS", "LogNormalFit", "local_thickness", "fit_lognormal", "sphere_phase_fit", "plot_psd"]


@dataclass(frozen=True)
class LogNormalFit:
    """A log-normal fit of diameters.

    Attributes
    ----------
    median_nm : float
        Median of the fitted distribution as weighted (volume-weighted for local thickness).
    sigma : float
        Standard deviation of ln(d).
    number_median_nm : float
        Number-weighted median, ``median_nm * exp(-3 sigma^2)`` for a volume-weighted fit.
    n : int
        Number of values (voxels) fitted.
    """

    median_nm: float
    sigma: float
    number_median_nm: float
    n: int

    def as_dict(self) -> dict[str, float]:
        return {k: (int(v) if k == "n" else float(v)) for k, v in asdict(self).items()}


def local_thickness(
    mask: np.ndarray,
    voxel_size_nm: Sequence[float] = (1.0, 1.0, 1.0),
    *,
    n_radii: int = 40,
    correct_discretisation: bool = False,
) -> np.ndarray:
    """Local thickness (diameter in nm) of every True voxel of ``mask``.

    Parameters
    ----------
    mask : bool array (z, y, x)
        The phase to measure.
    voxel_size_nm : (float, float, float)
        Voxel size in nm (anisotropic allowed).
    n_radii : int
        Number of radii swept between the smallest voxel size and the largest
        inscribed radius (geometric spacing).

    Returns
    -------
    numpy.ndarray of float32
        Diameter in nm where ``mask`` is True, 0 elsewhere.

    Raises
    ------
    ValueError
        If ``mask`` is not 3D or is True everywhere (no boundary: unbounded).

    Notes
    -----
    The values are those of the plain radius sweep (one distance transform per
    radius) on the same radii; they are computed by
    :func:`pipeline.analyze.thickness.local_thickness` (one distance transform,
    every core), without its edge correction.
    """
    import edt

    from pipeline.analyze.thickness import EDGE_CORRECTION_VOXELS
    from pipeline.analyze.thickness import local_thickness as exact_local_thickness

    m = np.asarray(mask, dtype=bool)
    if m.ndim != 3:
        raise ValueError(f"mask must be 3D; got shape {m.shape}")
    vs = tuple(float(v) for v in voxel_size_nm)
    rmin = min(vs)
    if not m.any():
        return np.zeros(m.shape, np.float32)
    rmax = float(edt.edt(m, anisotropy=vs, black_border=False, parallel=1).max())
    radii = np.unique(np.geomspace(rmin, max(rmax, rmin), n_radii))
    # the exact fast method of the analysis (one distance transform, balls painted by radius) on these radii
    out = exact_local_thickness(m, vs, radii=radii)
    out[m] -= np.float32(EDGE_CORRECTION_VOXELS * rmin)  # the analysis module's edge correction; this one has its own
    if correct_discretisation:
        out[m] += DISCRETISATION_BIAS_VOXELS * rmin
    return out


def fit_lognormal(diameters: np.ndarray, *, volume_weighted: bool = True) -> LogNormalFit:
    """Maximum-likelihood log-normal fit of positive diameters (mean and std of ln d)."""
    d = np.asarray(diameters, dtype=np.float64).ravel()
    d = d[d > 0]
    if d.size < 2:
        raise ValueError("at least two positive diameters are needed for a log-normal fit")
    ln = np.log(d)
    mu = float(ln.mean())
    sigma = float(ln.std())
    median = math.exp(mu)
    number_median = median * math.exp(-3 * sigma**2) if volume_weighted else median
    return LogNormalFit(median_nm=median, sigma=sigma, number_median_nm=number_median, n=int(d.size))


def sphere_phase_fit(
    labels: np.ndarray,
    sphere_phase: int,
    voxel_size_nm: Sequence[float],
    *,
    margin_nm: float = 0.0,
) -> tuple[np.ndarray, LogNormalFit]:
    """Local thickness of the phase made of spheres and its log-normal fit.

    Parameters
    ----------
    labels : uint8 array (z, y, x), 1 = pore
    sphere_phase : {0, 1}
        Label value of the spheres.
    voxel_size_nm : (float, float, float)
    margin_nm : float
        Voxels closer than this to a face of the volume are left out of the
        fit: spheres whose centres lie outside the volume are cut by the face
        and measured too thin there. About one large radius is right.

    Returns
    -------
    values : numpy.ndarray
        Local thickness (nm) of the phase's voxels inside the margin.
    fit : LogNormalFit
        Its ``number_median_nm`` and ``sigma`` estimate the generator's inputs.
    """
    mask = np.asarray(labels) == sphere_phase
    lt = local_thickness(mask, voxel_size_nm, correct_discretisation=True)
    inner = tuple(
        slice(min(int(math.ceil(margin_nm / v)), (n - 1) // 2), n - min(int(math.ceil(margin_nm / v)), (n - 1) // 2))
        for v, n in zip(voxel_size_nm, mask.shape)
    )
    values = lt[inner][mask[inner]]
    return values, fit_lognormal(values, volume_weighted=True)


def _lognormal_pdf(x: np.ndarray, median: float, sigma: float) -> np.ndarray:
    sigma = max(sigma, 1e-6)
    return np.exp(-((np.log(x) - math.log(median)) ** 2) / (2 * sigma**2)) / (x * sigma * math.sqrt(2 * math.pi))


def plot_psd(
    path: str | os.PathLike[str],
    panels: Sequence[dict[str, Any]],
    *,
    title: str = "Size distributions against log-normal fits",
) -> Path:
    """Save histograms with their log-normal fits as a PNG (paper Fig. 4 style).

    Parameters
    ----------
    path : path
        PNG to write.
    panels : list of dict
        Each with ``values`` (diameters in nm), ``fit`` (:class:`LogNormalFit`),
        ``label`` (str) and optionally ``input`` = (median_nm, sigma) of the
        generator, drawn as a dashed volume-weighted reference.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.0), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        values = np.asarray(panel["values"], dtype=np.float64)
        fit: LogNormalFit = panel["fit"]
        hi = float(np.quantile(values, 0.995)) * 1.3
        u = np.unique(values)
        if 3 <= len(u) <= 150:
            # local thickness takes a few discrete values: one bin around each
            mids = 0.5 * (u[:-1] + u[1:])
            bins = np.concatenate([[u[0] - (mids[0] - u[0])], mids, [u[-1] + (u[-1] - mids[-1])]])
        else:
            bins = np.linspace(0, hi, 40)
        ax.hist(values, bins=bins, density=True, color="0.7", edgecolor="0.4", label="measured (local thickness)")
        x = np.linspace(max(float(bins[0]) * 0.5, 1e-3), hi, 300)
        ax.plot(x, _lognormal_pdf(x, fit.median_nm, fit.sigma), "C3", lw=2,
                label=f"log-normal fit: median {fit.median_nm:.0f} nm, σ {fit.sigma:.2f}")
        if panel.get("input") is not None:
            med, sig = panel["input"]
            ax.plot(x, _lognormal_pdf(x, med * math.exp(3 * sig**2), sig), "k--", lw=1.2,
                    label=f"input {med:.0f} nm, σ {sig:.2f} (vol.-weighted)")
        ax.set_xlabel("diameter (nm)")
        ax.set_ylabel("normalized frequency")
        ax.set_title(panel["label"], fontsize=10)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
