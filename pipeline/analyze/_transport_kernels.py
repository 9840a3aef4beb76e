"""Numba kernels of the transport measures (see :mod:`pipeline.analyze.transport`).

The volume is seen with the flux axis first (a transposed view costs nothing:
the kernels index ``[i, j, k]`` of whatever strides they get). Kernels work on
a range ``lo..hi`` of planes along that axis and release the GIL, so a caller
can split them between threads; sums come back per range in float64.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(nogil=True, cache=True)
def diagonal(m, g, diag, lo, hi):  # pragma: no cover - numba
    """Sum of the conductances of each voxel of ``m`` (uint8, 1 = conducting) to its conducting neighbours.

    ``g`` = (g0, g1, g2): face conductance per axis; axis 0 is the flux axis,
    whose two outer faces are reservoirs at half a voxel (conductance 2 g0).
    """
    N0, N1, N2 = m.shape
    for i in range(lo, hi):
        for j in range(N1):
            for k in range(N2):
                if m[i, j, k] == 0:
                    diag[i, j, k] = 0.0
                    continue
                s = 0.0
                if i == 0 or i == N0 - 1:
                    s += 2.0 * g[0]
                if i > 0 and m[i - 1, j, k]:
                    s += g[0]
                if i < N0 - 1 and m[i + 1, j, k]:
                    s += g[0]
                if j > 0 and m[i, j - 1, k]:
                    s += g[1]
                if j < N1 - 1 and m[i, j + 1, k]:
                    s += g[1]
                if k > 0 and m[i, j, k - 1]:
                    s += g[2]
                if k < N2 - 1 and m[i, j, k + 1]:
                    s += g[2]
                diag[i, j, k] = s


@njit(nogil=True, cache=True)
def matvec(m, g, diag, p, out, lo, hi):  # pragma: no cover - numba
    """``out = A p`` on the conducting voxels (planes lo..hi); returns ``p . A p``.

    ``p`` is 0 outside the conducting voxels, so a neighbour's term needs no
    test; the rows are written whole and masked (vectorised).
    """
    N0, N1, N2 = m.shape
    acc = 0.0
    g0 = g[0]
    g1 = g[1]
    g2 = g[2]
    for i in range(lo, hi):
        for j in range(N1):
            for k in range(N2):
                s = 0.0
                if i > 0:
                    s += g0 * p[i - 1, j, k]
                if i < N0 - 1:
                    s += g0 * p[i + 1, j, k]
                if j > 0:
                    s += g1 * p[i, j - 1, k]
                if j < N1 - 1:
                    s += g1 * p[i, j + 1, k]
                if k > 0:
                    s += g2 * p[i, j, k - 1]
                if k < N2 - 1:
                    s += g2 * p[i, j, k + 1]
                v = (diag[i, j, k] * p[i, j, k] - s) * m[i, j, k]
                out[i, j, k] = v
                acc += v * p[i, j, k]
    return acc


@njit(nogil=True, cache=True)
def step(m, x, r, p, ap, dinv, alpha, lo, hi):  # pragma: no cover - numba
    """``x += alpha p``, ``r -= alpha A p``; returns (r . D^-1 r, r . r). ``dinv`` is 1 / diagonal, 0 outside."""
    N0, N1, N2 = m.shape
    rz = 0.0
    rr = 0.0
    for i in range(lo, hi):
        for j in range(N1):
            for k in range(N2):
                x[i, j, k] += alpha * p[i, j, k]
                v = r[i, j, k] - alpha * ap[i, j, k]
                r[i, j, k] = v
                rz += v * v * dinv[i, j, k]
                rr += v * v
    return rz, rr


@njit(nogil=True, cache=True)
def direction(m, r, p, dinv, beta, lo, hi):  # pragma: no cover - numba
    """``p = D^-1 r + beta p`` (Jacobi-preconditioned conjugate direction; stays 0 outside)."""
    N0, N1, N2 = m.shape
    for i in range(lo, hi):
        for j in range(N1):
            for k in range(N2):
                p[i, j, k] = r[i, j, k] * dinv[i, j, k] + beta * p[i, j, k]


@njit(nogil=True, cache=True)
def invert(diag, dinv, lo, hi):  # pragma: no cover - numba
    """``dinv = 1 / diag`` where diag > 0, else 0."""
    N0, N1, N2 = diag.shape
    for i in range(lo, hi):
        for j in range(N1):
            for k in range(N2):
                d = diag[i, j, k]
                dinv[i, j, k] = 1.0 / d if d > 0 else 0.0


@njit(nogil=True, cache=True)
def residual(m, g, diag, x, r, lo, hi):  # pragma: no cover - numba
    """``r = b - A x`` with b the inlet reservoir's term (2 g0 at the first plane); returns (b.b, r.r)."""
    N0, N1, N2 = m.shape
    bb = 0.0
    rr = 0.0
    for i in range(lo, hi):
        for j in range(N1):
            for k in range(N2):
                if m[i, j, k] == 0:
                    continue
                s = 0.0
                if i > 0 and m[i - 1, j, k]:
                    s += g[0] * x[i - 1, j, k]
                if i < N0 - 1 and m[i + 1, j, k]:
                    s += g[0] * x[i + 1, j, k]
                if j > 0 and m[i, j - 1, k]:
                    s += g[1] * x[i, j - 1, k]
                if j < N1 - 1 and m[i, j + 1, k]:
                    s += g[1] * x[i, j + 1, k]
                if k > 0 and m[i, j, k - 1]:
                    s += g[2] * x[i, j, k - 1]
                if k < N2 - 1 and m[i, j, k + 1]:
                    s += g[2] * x[i, j, k + 1]
                b = 2.0 * g[0] if i == 0 else 0.0
                v = b - (diag[i, j, k] * x[i, j, k] - s)
                r[i, j, k] = v
                bb += b * b
                rr += v * v
    return bb, rr


@njit(nogil=True, cache=True)
def plane_fluxes(m, g, x, out):  # pragma: no cover - numba
    """Flux into the volume at the inlet, across every inner face plane, and out at the outlet: ``out`` (N0 + 1)."""
    N0, N1, N2 = m.shape
    for i in range(N0 + 1):
        s = 0.0
        for j in range(N1):
            for k in range(N2):
                if i == 0:
                    if m[0, j, k]:
                        s += 2.0 * g[0] * (1.0 - x[0, j, k])
                elif i == N0:
                    if m[N0 - 1, j, k]:
                        s += 2.0 * g[0] * x[N0 - 1, j, k]
                elif m[i - 1, j, k] and m[i, j, k]:
                    s += g[0] * (x[i - 1, j, k] - x[i, j, k])
        out[i] = s


@njit(nogil=True, cache=True)
def chamfer_sweep(m, dist, w, forward):  # pragma: no cover - numba
    """One raster sweep of 26-neighbour relaxation ``dist[v] = min(dist[v], dist[u] + |u - v|)`` over ``m``.

    ``w[a + 1, b + 1, c + 1]`` is the length of the step (a, b, c). Forward
    sweeps read the 13 neighbours before a voxel in raster order, backward
    sweeps the 13 after. Returns the number of voxels that got closer.
    """
    N0, N1, N2 = m.shape
    changed = 0
    r0 = range(N0) if forward else range(N0 - 1, -1, -1)
    for i in r0:
        for jj in range(N1):
            j = jj if forward else N1 - 1 - jj
            for kk in range(N2):
                k = kk if forward else N2 - 1 - kk
                if m[i, j, k] == 0:
                    continue
                best = dist[i, j, k]
                for a in range(-1, 2):
                    ii = i + a
                    if ii < 0 or ii >= N0:
                        continue
                    for b in range(-1, 2):
                        jn = j + b
                        if jn < 0 or jn >= N1:
                            continue
                        for c in range(-1, 2):
                            kn = k + c
                            if kn < 0 or kn >= N2:
                                continue
                            before = a < 0 or (a == 0 and (b < 0 or (b == 0 and c < 0)))
                            if before != forward or (a == 0 and b == 0 and c == 0):
                                continue
                            if m[ii, jn, kn]:
                                d = dist[ii, jn, kn] + w[a + 1, b + 1, c + 1]
                                if d < best:
                                    best = d
                if best < dist[i, j, k]:
                    dist[i, j, k] = best
                    changed += 1
    return changed
