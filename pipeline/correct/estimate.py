"""Every statistic of the correction chain from one read of the stack.

The chain needs, per slice, the stripe offsets, the illumination fit and the
drift pairs, each measured on the stack with the earlier steps applied. Read
step by step, that is a pass over the stack per statistic (plus the slices of
the parallax probe), each pass reading and tilt-resampling the whole stack
again. :func:`estimate_dask` measures them in one pass: each whole-slice slab
is destriped with its own offsets, flattened with its own illumination fits
and correlated slice against slice in the same task; a small task per slab
boundary correlates the slices that meet there (their spectra, not the slabs,
are kept for it).

What one pass cannot give exactly is the input of the drift pairs: the chain
applies the illumination fits *smoothed along z* (and shrunk to the
significant terms, :func:`pipeline.correct.illumination.smooth_coefficients`),
which needs every slice's fit first. The pairs are measured on each slice
flattened by its own fit instead. Phase correlation high-passes (16 px) and
whitens the spectra, so a slowly varying gain of a few per cent hardly moves a
peak: on a stack with a 0.8-1.2 gain across x the trajectories agree within
one sub-pixel step of the correlation, 0.02 px (tests/correct/test_estimate.py).

Pooled stripe estimates (``onset`` with ``pool_slices``) need every slice's
sums before any slice's offsets; the chain measures them in a pass of their
own and gives :func:`estimate_dask` the destriped stack.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import dask
import dask.array as da
import numpy as np

from pipeline.backend import to_numpy
from pipeline.correct.destripe import _offsets, _subtract
from pipeline.correct.drift import _correlate, _spectrum
from pipeline.correct.illumination import _correct_block, fit_background, fit_log_background
from pipeline.correct.slabs import merge_shallow_slabs
from pipeline.progress import compute

__all__ = ["EstimatePlan", "Estimates", "estimate_slab", "estimate_dask"]


@dataclass(frozen=True)
class EstimatePlan:
    """What the estimation pass measures (None or 0: that statistic is not wanted).

    Parameters
    ----------
    stripe_method : str, optional
        Per-slice destripe method (``histogram``, ``profile``, unpooled
        ``onset``) and its keyword arguments ``stripe_params``.
    illumination : str, optional
        ``robust`` or ``poly``: each slice's polynomial is fitted (and applied
        for the drift pairs); ``rows``: the coefficients are given (one row
        per slice, method ``illumination_method``); ``gaussian``: each slice's
        blur is removed (nothing is returned).
    illumination_method, degree, sigma_fraction, mode
        As :class:`pipeline.correct.chain.IlluminationParams`.
    lags : int
        Drift pairs of each slice against the ``lags`` slices before it.
    drift_options : dict
        Keyword arguments of the phase correlation (``upsample``, ``highpass_px``, ...).
    probe_lag : int
        Lag of the parallax probe's pairs, whose later slices are ``probe_starts + probe_lag``.
    probe_starts : tuple of int
        First slices of the probe's pairs (global indices).
    """

    stripe_method: str | None = None
    stripe_params: dict[str, Any] = field(default_factory=dict)
    illumination: str | None = None
    illumination_method: str = "robust"
    degree: int = 2
    sigma_fraction: float = 0.125
    mode: str = "divide"
    lags: int = 0
    drift_options: dict[str, Any] = field(default_factory=dict)
    probe_lag: int = 0
    probe_starts: tuple[int, ...] = ()

    @property
    def empty(self) -> bool:
        """True when the pass would measure nothing."""
        return self.stripe_method is None and self.illumination not in ("robust", "poly") and not self.lags

    @property
    def reach(self) -> int:
        """Most slices apart of two slices correlated together."""
        return max(self.lags, self.probe_lag if self.probe_starts else 0)


@dataclass
class Estimates:
    """The pass' results for the whole stack (NumPy; None where not planned).

    ``offsets``: (z, x) or (z, 4, x) stripe offsets; ``coefficients``: (z,
    n_terms) illumination fits; ``pairs``: (z, lags, 3) ``[dy, dx,
    confidence]`` of slice z against z - k (NaN before the first slice);
    ``probe_dy``: (len(probe_starts),) y shift of each probe pair.
    """

    offsets: np.ndarray | None
    coefficients: np.ndarray | None
    pairs: np.ndarray | None
    probe_dy: np.ndarray | None


def _fit(block: Any, method: str, degree: int) -> np.ndarray:
    fit = fit_log_background if method == "robust" else fit_background
    return np.stack([fit(block[k], degree) for k in range(block.shape[0])]) if block.shape[0] else np.zeros((0, 0))


def estimate_slab(block: Any, z0: int, plan: EstimatePlan, rows: np.ndarray | None = None) -> dict[str, Any]:
    """Every planned statistic of the slab ``block`` (slices ``z0`` ... of the stack).

    Parameters
    ----------
    block : ndarray (z, y, x)
        Whole slices, NumPy or CuPy, with the steps before destriping applied.
    z0 : int
        Index of the block's first slice in the stack.
    plan : EstimatePlan
    rows : ndarray, optional
        The block's illumination coefficients when ``plan.illumination`` is ``rows``.

    Returns
    -------
    dict
        ``offsets``, ``coefficients`` (NumPy or None), ``pairs`` (the block's
        pairs; NaN where the earlier slice lies before the block), ``probe``
        ({start: dy} of the probe pairs inside the block), and ``head`` /
        ``tail``: {slice: spectrum} of the first and last slices that pairs
        across the block's edges need.
    """
    dz = int(block.shape[0])
    out: dict[str, Any] = {"offsets": None, "coefficients": None, "pairs": None, "probe": {}, "head": {}, "tail": {}}
    a = block
    if plan.stripe_method is not None:
        offsets = _offsets(a, plan.stripe_method, **plan.stripe_params)
        a = _subtract(a, offsets, plan.stripe_method)
        out["offsets"] = np.asarray(to_numpy(offsets), dtype=np.float64)
    if plan.illumination is not None:
        coefs = None
        if plan.illumination in ("robust", "poly"):
            coefs = _fit(a, plan.illumination, plan.degree)
            out["coefficients"] = coefs
        elif plan.illumination == "rows":
            coefs = rows
        if plan.lags:  # only the drift pairs see the flattened slab
            method = plan.illumination_method if plan.illumination == "rows" else plan.illumination
            a = _correct_block(a, coefs, method, plan.degree, plan.sigma_fraction, plan.mode)
    if not plan.lags:
        return out
    z1 = z0 + dz
    reach = plan.reach
    hp = float(plan.drift_options.get("highpass_px", 16.0))
    opts = {k: v for k, v in plan.drift_options.items() if k != "highpass_px"}
    starts = set(plan.probe_starts)
    keep_tail = set(range(max(z0, z1 - plan.lags), z1)) | {s for s in starts if z0 <= s < z1 <= s + plan.probe_lag}
    keep_head = set(range(z0, min(z1, z0 + plan.lags))) | {
        s + plan.probe_lag for s in starts if s < z0 <= s + plan.probe_lag < z1
    }
    pairs = np.full((dz, plan.lags, 3), np.nan)
    window: dict[int, Any] = {}  # spectra of the last `reach` slices
    for i in range(dz):
        z = z0 + i
        window[z] = _spectrum(a[i], hp)
        window.pop(z - reach - 1, None)
        for k in range(1, min(plan.lags, i) + 1):
            pairs[i, k - 1] = _correlate(window[z], window[z - k], **opts)
        s = z - plan.probe_lag
        if s in starts and s >= z0:
            out["probe"][s] = _correlate(window[z], window[s], **opts)[0]
        if z in keep_head:
            out["head"][z] = window[z]
        if z in keep_tail:
            out["tail"][z] = window[z]
    out["pairs"] = pairs
    return out


def _boundary(before: dict[str, Any], after: dict[str, Any], z1: int, plan: EstimatePlan) -> dict[str, Any]:
    """Pairs of the slices after the boundary at ``z1`` against slices before it, and the probe pairs across it."""
    spec = {**before["tail"], **after["head"]}
    opts = {k: v for k, v in plan.drift_options.items() if k != "highpass_px"}
    rows = {}
    for z in range(z1, z1 + plan.lags):
        if z not in spec:
            continue
        rows[z] = [(k, _correlate(spec[z], spec[z - k], **opts)) for k in range(z - z1 + 1, plan.lags + 1) if z - k in spec]
    probe = {s: _correlate(spec[s + plan.probe_lag], spec[s], **opts)[0]
             for s in plan.probe_starts if s < z1 <= s + plan.probe_lag and s in spec and s + plan.probe_lag in spec}
    return {"pairs": rows, "probe": probe}


def _small(result: dict[str, Any]) -> dict[str, Any]:
    """A slab's result without its edge spectra (what the driver gathers)."""
    return {k: v for k, v in result.items() if k not in ("head", "tail")}


def estimate_dask(arr: da.Array, plan: EstimatePlan, *, rows: np.ndarray | None = None,
                  progress: str | None = None) -> Estimates:
    """Run :func:`estimate_slab` over the whole-slice slabs of a dask stack in one pass.

    Equal to the statistics of the whole stack measured in memory (the
    chunking does not change them). A slab is released when its task is done;
    until its neighbours' boundary tasks have run, only the spectra of its
    edge slices are held. ``rows``: (z, n_terms) given illumination
    coefficients (``plan.illumination == "rows"``). ``progress`` labels a
    progress bar over the pass.
    """
    if getattr(arr, "ndim", None) != 3:
        raise ValueError(f"expected a 3D (z, y, x) dask array; got shape {getattr(arr, 'shape', None)}")
    if plan.lags < 0 or (plan.probe_starts and plan.probe_lag < 1):
        raise ValueError(f"lags must be >= 0 and the probe's lag >= 1; got {plan.lags} and {plan.probe_lag}")
    if plan.illumination == "rows" and (rows is None or len(rows) != arr.shape[0]):
        raise ValueError(f"illumination 'rows' needs one coefficient row per slice ({arr.shape[0]})")
    arr = arr.rechunk({1: -1, 2: -1})
    zchunks = merge_shallow_slabs(list(arr.chunks[0]), plan.reach)
    if tuple(zchunks) != arr.chunks[0]:
        arr = arr.rechunk({0: tuple(zchunks)})
    starts = np.cumsum([0] + zchunks[:-1]).astype(int).tolist()
    slabs = []
    for z0, dz, block in zip(starts, zchunks, arr.to_delayed().ravel()):
        r = None if rows is None else np.ascontiguousarray(rows[z0 : z0 + dz])  # each task carries its own rows
        slabs.append(dask.delayed(estimate_slab, pure=True)(block, z0, plan, r))
    inside = [dask.delayed(_small, pure=True)(s) for s in slabs]
    across = [] if not plan.lags else [
        dask.delayed(_boundary, pure=True)(a, b, z1, plan) for a, b, z1 in zip(slabs[:-1], slabs[1:], starts[1:])
    ]
    results = compute(*inside, *across, desc=progress)
    parts, edges = results[: len(slabs)], results[len(slabs):]

    def stacked(key: str) -> np.ndarray | None:
        vals = [p[key] for p in parts]
        return None if any(v is None for v in vals) else np.concatenate(vals, axis=0)

    pairs = stacked("pairs")
    probe: dict[int, float] = {}
    for p in parts:
        probe.update(p["probe"])
    for e in edges:
        probe.update(e["probe"])
        for zz, found in e["pairs"].items():
            for k, value in found:
                pairs[zz, k - 1] = value  # type: ignore[index]
    probe_dy = None
    if plan.lags and plan.probe_starts:
        probe_dy = np.array([probe.get(s, np.nan) for s in plan.probe_starts], dtype=np.float64)
    return Estimates(stacked("offsets"), stacked("coefficients"), pairs, probe_dy)
