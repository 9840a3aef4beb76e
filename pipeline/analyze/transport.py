"""Transport through a phase: connectivity, the tortuosity factor of steady diffusion, geometric tortuosity.

Tortuosity factor (:func:`tortuosity_factor`), what electrochemists use: the
steady diffusion ``div(D grad c) = 0`` in the phase (D = D0 inside, 0 in the
other phase: no flux through the walls), ``c = 1`` and ``c = 0`` in
reservoirs on the two faces across one axis, no flux through the four other
faces. From the flux ``Q`` through the volume, the effective diffusivity
``D_eff / D0 = Q L / (A Δc)`` (L the length along the axis, A the cross
section), the tortuosity factor ``τ = ε D0 / D_eff`` (ε the phase's volume
fraction) and the MacMullin number ``N_M = D0 / D_eff = τ / ε``. These are
TauFactor's definitions and discretisation (finite volumes on voxel centres,
face conductance ``A_face / h``, the reservoirs half a voxel beyond the faces),
so the values compare directly with ``taufactor.Solver`` (tests and
benchmarks/analyze.py). porelab solves it with its own matrix-free conjugate
gradients (Jacobi preconditioner, numba kernels on both cores) rather than
with TauFactor: the field, residual, direction and its image in float32 and
the conductances computed from the mask are 25 bytes per voxel with no
temporary (TauFactor keeps about six float32 tensors and their padded
copies, on torch), and porelab does not need torch at run time. Voxels of
clusters that do not join the two faces carry no flux and are left out of
the solve.

Geometric tortuosity (:func:`geometric_tortuosity`), the cheap option: the
mean shortest 26-connected path through the phase from one face to the
other over the straight length, by chamfer sweeps (5 bytes per voxel).

All three need the phase in memory; :func:`pipeline.analyze.measure.measure`
skips them above a voxel budget and says so, and can measure them on a
sub-volume instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["connectivity", "geometric_tortuosity", "tortuosity_factor", "percolating", "BYTES_PER_VOXEL"]

_AXES = ("z", "y", "x")
#: Memory of :func:`tortuosity_factor` per voxel of the volume (its arrays; the mask is the caller's).
BYTES_PER_VOXEL = 25


def connectivity(pore: np.ndarray) -> dict[str, Any]:
    """Share of the pore volume in components that touch both opposite faces, per axis.

    Components are 6-connected. Also returns the share of the pore volume
    in the largest component and the number of components.

    Returns
    -------
    dict
        ``connected_fraction`` {"z", "y", "x"} (0..1 of the pore volume),
        ``largest_component_fraction``, ``components``.
    """
    import scipy.ndimage as ndi

    p = np.asarray(pore, dtype=bool)
    total = int(p.sum())
    if total == 0:
        return {"connected_fraction": {a: 0.0 for a in _AXES}, "largest_component_fraction": 0.0, "components": 0}
    lab, n = ndi.label(p)
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    out: dict[str, float] = {}
    for ax, name in enumerate(_AXES):
        both = _spanning(lab, ax)
        out[name] = float(sizes[both].sum() / total)
    return {
        "connected_fraction": out,
        "largest_component_fraction": float(sizes[1:].max() / total),
        "components": int(n),
    }


def _spanning(lab: np.ndarray, axis: int) -> np.ndarray:
    lo = np.unique(np.take(lab, 0, axis=axis))
    hi = np.unique(np.take(lab, lab.shape[axis] - 1, axis=axis))
    return np.intersect1d(lo[lo > 0], hi[hi > 0])


def percolating(phase: np.ndarray, axis: int) -> np.ndarray:
    """The voxels of ``phase`` in 6-connected components that touch both faces across ``axis`` (uint8, 1 = kept)."""
    import scipy.ndimage as ndi

    lab, _ = ndi.label(np.asarray(phase, dtype=bool))
    keep = _spanning(lab, axis)
    out = np.isin(lab, keep).astype(np.uint8) if len(keep) else np.zeros(lab.shape, np.uint8)
    out[lab == 0] = 0
    return out


def _threads(threads: int | None) -> int:
    import os

    return int(threads or os.cpu_count() or 1)


def _in_threads(fn: Any, n: int, threads: int, *args: Any) -> list[Any]:
    from pipeline.analyze.thickness import _in_threads as run

    return run(fn, n, threads, *args)


def tortuosity_factor(
    phase: np.ndarray, voxel_size_nm: Sequence[float], axis: int = 0, *, rtol: float = 1e-5, max_iter: int | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """Tortuosity factor, effective diffusivity and MacMullin number of ``phase`` across ``axis`` (steady diffusion).

    Parameters
    ----------
    phase : bool array (z, y, x)
        The conducting phase (True), e.g. ``labels == 1`` for the pores.
    voxel_size_nm : (float, float, float)
    axis : int
        0, 1, 2 for z, y, x: the reservoirs are on the two faces across it.
    rtol : float
        Stop when the residual is below ``rtol`` times the right-hand side's norm.
    max_iter : int, optional
        Most iterations (default ``20 * max(shape) + 1000``).
    threads : int, optional
        Default: every core.

    Returns
    -------
    dict
        ``tau`` (``inf`` when no path crosses), ``effective_diffusivity``
        (D_eff / D0), ``macmullin`` (D0 / D_eff), ``volume_fraction`` (ε of
        the whole phase), ``percolating_fraction`` (of the phase volume),
        ``flux_spread`` (largest relative difference of the flux across the
        face planes), ``iterations``, ``residual`` (relative), ``converged``.
    """
    from pipeline.analyze import _transport_kernels as kern

    p = np.asarray(phase, dtype=bool)
    if p.ndim != 3:
        raise ValueError(f"phase must be 3D (z, y, x); got shape {p.shape}")
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2; got {axis}")
    vs = np.asarray([float(v) for v in voxel_size_nm])
    eps = float(p.mean())
    order = [axis] + [a for a in range(3) if a != axis]
    m = np.ascontiguousarray(np.transpose(percolating(p, axis), order))
    n0, n1, n2 = m.shape
    v = vs[order]
    # face conductances A_face / h relative to the flux axis's
    g = np.array([1.0, (v[0] * v[2] / v[1]) / (v[1] * v[2] / v[0]), (v[0] * v[1] / v[2]) / (v[1] * v[2] / v[0])])
    frac = float(m.sum()) / max(int(p.sum()), 1)
    result: dict[str, Any] = {"volume_fraction": eps, "percolating_fraction": frac}
    if not m.any():
        return {**result, "tau": math.inf, "effective_diffusivity": 0.0, "macmullin": math.inf, "flux_spread": 0.0,
                "iterations": 0, "residual": 0.0, "converged": True}
    th = _threads(threads)
    diag = np.empty(m.shape, np.float32)
    _in_threads(kern.diagonal, n0, th, m, g, diag)
    dinv = np.empty(m.shape, np.float32)
    _in_threads(kern.invert, n0, th, diag, dinv)
    x = np.empty(m.shape, np.float32)
    np.multiply(m, (1.0 - (np.arange(n0) + 0.5) / n0).astype(np.float32)[:, None, None], out=x)
    r = np.zeros(m.shape, np.float32)
    parts = _in_threads(kern.residual, n0, th, m, g, diag, x, r)
    bnorm = math.sqrt(sum(b for b, _ in parts))
    rr = sum(q for _, q in parts)
    pdir = np.zeros(m.shape, np.float32)
    ap = np.zeros(m.shape, np.float32)
    _in_threads(kern.direction, n0, th, m, r, pdir, dinv, 0.0)
    rz = sum(a for a, _ in _in_threads(kern.step, n0, th, m, x, r, pdir, ap, dinv, 0.0))
    limit = int(max_iter or 20 * max(m.shape) + 1000)
    it = 0
    while math.sqrt(rr) > rtol * bnorm and it < limit:
        pap = sum(_in_threads(kern.matvec, n0, th, m, g, diag, pdir, ap))
        if pap <= 0:
            break
        alpha = rz / pap
        parts = _in_threads(kern.step, n0, th, m, x, r, pdir, ap, dinv, alpha)
        rz_new = sum(a for a, _ in parts)
        rr = sum(b for _, b in parts)
        _in_threads(kern.direction, n0, th, m, r, pdir, dinv, rz_new / rz)
        rz = rz_new
        it += 1
    del pdir, ap, r, diag, dinv
    flux = np.empty(n0 + 1)
    kern.plane_fluxes(m, g, x.astype(np.float64), flux)
    q = float(np.mean(flux))
    d_rel = q * n0 / (n1 * n2)  # Q L / (A dc), the conductances being relative to the flux axis's
    return {**result, "tau": eps / d_rel if d_rel > 0 else math.inf, "effective_diffusivity": d_rel,
            "macmullin": 1.0 / d_rel if d_rel > 0 else math.inf,
            "flux_spread": float((flux.max() - flux.min()) / q) if q > 0 else 0.0,
            "iterations": it, "residual": math.sqrt(rr) / bnorm if bnorm > 0 else 0.0, "converged": math.sqrt(rr) <= rtol * bnorm}


def geometric_tortuosity(pore: np.ndarray, voxel_size_nm: Sequence[float], axis: int = 0) -> float:
    """Mean shortest path through the pores from one face to the other, over the straight length.

    The path length is the shortest 26-connected path (steps weighted by
    their length in nm) from any pore voxel of the first face, found by
    repeated forward and backward chamfer sweeps until nothing changes (the
    same lengths as ``skimage.graph.MCP_Geometric``, in 5 bytes per voxel);
    the tortuosity is its mean over the pore voxels of the last face that it
    reaches, divided by the distance between the faces. ``nan`` when no pore
    path crosses.
    """
    from pipeline.analyze import _transport_kernels as kern

    p = np.asarray(pore, dtype=bool)
    vs = np.asarray([float(v) for v in voxel_size_nm])
    order = [axis] + [a for a in range(3) if a != axis]
    m = np.ascontiguousarray(np.transpose(p, order)).view(np.uint8)
    v = vs[order]
    if not m[0].any():
        return float("nan")
    dist = np.full(m.shape, np.inf, np.float32)
    dist[0][m[0] != 0] = 0.0
    a, b, c = np.meshgrid([-1, 0, 1], [-1, 0, 1], [-1, 0, 1], indexing="ij")
    w = np.sqrt((a * v[0]) ** 2 + (b * v[1]) ** 2 + (c * v[2]) ** 2).astype(np.float32)
    forward, quiet = True, 0
    while quiet < 2:  # a forward and a backward sweep that change nothing: the shortest paths
        quiet = quiet + 1 if kern.chamfer_sweep(m, dist, w, forward) == 0 else 0
        forward = not forward
    last = dist[-1]
    ok = np.isfinite(last) & (m[-1] != 0)
    if not ok.any():
        return float("nan")
    length = (m.shape[0] - 1) * v[0]
    return float(last[ok].astype(np.float64).mean() / length) if length > 0 else float("nan")
