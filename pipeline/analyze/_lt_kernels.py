"""Numba kernels of the local thickness (the method is described in :mod:`pipeline.analyze.thickness`).

Units: lengths in voxels of the smallest edge (``w = voxel_size / min(voxel_size)``),
squared distances in float32 (exact integers for isotropic voxels).
Every kernel works on a range ``lo..hi`` of planes or rows so that a caller can
split one block between threads; all release the GIL.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numba.cpython.unsafe.numbers import trailing_zeros

_INF = np.float32(np.inf)
_ALL = np.uint64(0xFFFFFFFFFFFFFFFF)
#: Segments between two boundary voxels up to this long are minimised by brute force (no divisions).
_BRUTE = 16
#: Farthest neighbour offset (voxels per axis) of the containment test, and its offset classes
#: ``(R+1)^2 |dz| + (R+1) |dy| + |dx|``. On a fibre felt (radius steps of 0.8 voxel) offsets of 2
#: keep 31 % fewer balls than the 26 neighbours alone, 3 keep 23 % fewer again but cost as much as
#: they save; with steps of a quarter voxel (small pores) offsets of 2 keep 2 % fewer and cost more.
_RING = 2
_BASE = _RING + 1
_CLASSES = _BASE**3


@njit(nogil=True, cache=True)
def edt_z(mask, a0, a1, out, lo, hi):  # pragma: no cover - numba
    """Voxels along z to the nearest voxel outside ``mask``: ``out[z - a0, y, x]`` for z in a0..a1, rows y in lo..hi.

    65535 where the column has none (the array's faces are not boundaries).
    """
    Z, Y, X = mask.shape
    last = np.empty(X, np.int64)
    for y in range(lo, hi):
        last[:] = -1
        for z in range(a1):
            for x in range(X):
                if not mask[z, y, x]:
                    last[x] = z
            if z >= a0:
                for x in range(X):
                    out[z - a0, y, x] = 65535 if last[x] < 0 else min(z - last[x], 65534)
        last[:] = -1
        for z in range(Z - 1, a0 - 1, -1):
            for x in range(X):
                if not mask[z, y, x]:
                    last[x] = z
            if z < a1:
                for x in range(X):
                    if last[x] >= 0 and last[x] - z < out[z - a0, y, x]:
                        out[z - a0, y, x] = last[x] - z


@njit(nogil=True, cache=True)
def _min_line(f, n, w2, p0, p1, out, v, zn, zd):  # pragma: no cover - numba
    """``out[p - p0] = min_q f[q] + w2 (p - q)^2`` for p in p0..p1 (float64; inf for no site).

    Zeros of ``f`` (boundary voxels) split the line: a position between two
    zeros only sees the sites between them. Short segments are minimised by
    brute force, long ones by the lower envelope of parabolas (Felzenszwalb &
    Huttenlocher) with its breakpoints kept as fractions ``zn / zd`` (no division).
    """
    p = p0
    while p < p1:
        if f[p] == 0:
            out[p - p0] = 0
            p += 1
            continue
        # the segment of non-zeros around p: s..e, and the sites that can matter, qa..qb
        s = p
        while s > 0 and f[s - 1] != 0:
            s -= 1
        e = p
        while e < n - 1 and f[e + 1] != 0:
            e += 1
        qa = s - 1 if s > 0 else s
        qb = e + 1 if e < n - 1 else e
        pe = min(e, p1 - 1)
        if e - s < _BRUTE:
            for pp in range(p, pe + 1):
                best = np.inf
                for q in range(qa, qb + 1):
                    d = float(pp - q)
                    best = min(best, f[q] + w2 * d * d)
                out[pp - p0] = best
        else:
            k = -1
            for q in range(qa, qb + 1):
                fq = f[q]
                if fq == np.inf:
                    continue
                big = fq + w2 * q * q
                num = 0.0
                den = 0.0
                while k >= 0:
                    r = v[k]
                    num = big - (f[r] + w2 * r * r)
                    den = 2.0 * w2 * (q - r)
                    if k > 0 and num * zd[k] <= zn[k] * den:  # the new breakpoint is left of the last: pop
                        k -= 1
                    else:
                        break
                k += 1
                v[k] = q
                zn[k] = num
                zd[k] = den
            if k < 0:
                for pp in range(p, pe + 1):
                    out[pp - p0] = np.inf
            else:
                j = 0
                for pp in range(p, pe + 1):
                    while j < k and zn[j + 1] < pp * zd[j + 1]:
                        j += 1
                    d = float(pp - v[j])
                    out[pp - p0] = w2 * d * d + f[v[j]]
        p = pe + 1


@njit(nogil=True, cache=True)
def edt_yx(g1, wz, ay0, ay1, ax0, ax1, wy, wx, thr2, tab, d2_out, lev_out, lo, hi):  # pragma: no cover - numba
    """Finish the squared distance transform plane by plane (planes lo..hi of ``g1``, from :func:`edt_z`).

    For y in ay0..ay1 and x in ax0..ax1 writes the squared distance into
    ``d2_out[z, y - ay0, x - ax0]`` (float32) or, when ``d2_out`` is empty,
    its level (see :func:`levels`) into ``lev_out``. Returns the largest
    squared distance (float64, as computed).
    """
    Z, Y, X = g1.shape
    ny = ay1 - ay0
    nx = ax1 - ax0
    plane = np.empty((ny, X), np.float64)
    f = np.empty(max(Y, X), np.float64)
    col = np.empty(ny, np.float64)
    row = np.empty(nx, np.float64)
    v = np.empty(max(Y, X), np.int64)
    zn = np.empty(max(Y, X), np.float64)
    zd = np.empty(max(Y, X), np.float64)
    wz2 = wz * wz
    wy2 = wy * wy
    wx2 = wx * wx
    top = 0.0
    K = thr2.shape[0]
    T = tab.shape[0] - 1
    write_d2 = d2_out.size > 0
    for z in range(lo, hi):
        for x in range(X):
            for y in range(Y):
                k = g1[z, y, x]
                if k == 65535:
                    f[y] = np.inf
                else:
                    d = float(k)
                    f[y] = wz2 * d * d
            _min_line(f, Y, wy2, ay0, ay1, col, v, zn, zd)
            for y in range(ny):
                plane[y, x] = col[y]
        for y in range(ny):
            _min_line(plane[y], X, wx2, ax0, ax1, row, v, zn, zd)
            for x in range(nx):
                if row[x] > top:
                    top = row[x]
            if write_d2:
                for x in range(nx):
                    d2_out[z, y, x] = row[x]
            else:
                for x in range(nx):
                    d = row[x]
                    if d >= thr2[K - 1]:
                        lev_out[z, y, x] = K
                        continue
                    a = tab[min(int(d), T)]
                    while a < K and thr2[a] <= d:
                        a += 1
                    lev_out[z, y, x] = a
    return top


@njit(nogil=True, cache=True)
def levels(d2, thr2, tab, out, lo, hi):  # pragma: no cover - numba
    """``out`` = number of ``thr2`` (ascending squared thresholds) <= ``d2``: ``tab[floor(d2)]`` and a short scan; planes lo..hi."""
    Z, Y, X = d2.shape
    K = thr2.shape[0]
    T = tab.shape[0] - 1
    top = thr2[K - 1]
    for z in range(lo, hi):
        for y in range(Y):
            for x in range(X):
                d = d2[z, y, x]
                if d >= top:
                    out[z, y, x] = K
                    continue
                a = tab[min(int(d), T)]
                while a < K and thr2[a] <= d:
                    a += 1
                out[z, y, x] = a


@njit(nogil=True, cache=True, inline="always")
def _held(lev, need, z, y, x, level, r, inner):  # pragma: no cover - numba
    """Whether the ball of a voxel ``inner + 1 .. r`` voxels away (per axis, the largest) contains the ball at (z, y, x)."""
    Z, Y, X = lev.shape
    for dz in range(-r, r + 1):
        zz = z + dz
        if zz < 0 or zz >= Z:
            continue
        for dy in range(-r, r + 1):
            yy = y + dy
            if yy < 0 or yy >= Y:
                continue
            for dx in range(-r, r + 1):
                if abs(dz) <= inner and abs(dy) <= inner and abs(dx) <= inner:
                    continue
                xx = x + dx
                if xx < 0 or xx >= X:
                    continue
                if lev[zz, yy, xx] >= need[level, (abs(dz) * _BASE + abs(dy)) * _BASE + abs(dx)]:
                    return True
    return False


@njit(nogil=True, cache=True)
def centres(lev, need, ring, box, reach, lo, hi):  # pragma: no cover - numba
    """Flat indices (into ``lev``) of the balls that must be painted, from planes lo..hi.

    A voxel of level ``l`` (its ball: radius ``rho[l]``) is kept when

    0. ``l >= 2`` (every phase voxel gets level 1 at least, see :func:`finish`);
    1. one of its 6 neighbours has a lower level (else its ball lies in the
       union of its neighbours' balls and of the voxels of level >= l);
    2. no ball of a voxel up to ``ring`` (at most :data:`_RING`) voxels away
       per axis contains its ball: ``lev[n] < need[l, c]`` with
       ``c = (|dz| B + |dy|) B + |dx|``, ``B = _RING + 1`` (exact digital
       containment; nearer rings first);
    3. its ball reaches the core ``box`` (z0, z1, y0, y1, x0, x1), ``reach[l]``
       voxels per axis.
    """
    Z, Y, X = lev.shape
    out = np.empty(max(0, hi - lo) * Y * X, np.int64)
    n = 0
    for z in range(lo, hi):
        for y in range(Y):
            for x in range(X):
                level = lev[z, y, x]
                if level <= 1:
                    continue
                if (z + reach[level, 0] < box[0] or z - reach[level, 0] >= box[1] or y + reach[level, 1] < box[2]
                        or y - reach[level, 1] >= box[3] or x + reach[level, 2] < box[4] or x - reach[level, 2] >= box[5]):
                    continue
                if not ((z > 0 and lev[z - 1, y, x] < level) or (z + 1 < Z and lev[z + 1, y, x] < level)
                        or (y > 0 and lev[z, y - 1, x] < level) or (y + 1 < Y and lev[z, y + 1, x] < level)
                        or (x > 0 and lev[z, y, x - 1] < level) or (x + 1 < X and lev[z, y, x + 1] < level)):
                    continue
                keep = not _held(lev, need, z, y, x, level, 1, 0)
                if keep and ring >= 2:
                    keep = not _held(lev, need, z, y, x, level, 2, 1)
                if keep:
                    out[n] = (z * Y + y) * X + x
                    n += 1
    return out[:n]


@njit(nogil=True, cache=True)
def sort_by_level(cen, lev_flat, K):  # pragma: no cover - numba
    """``cen`` ordered by descending level (stable within a level), and their levels."""
    counts = np.zeros(K + 2, np.int64)
    for i in range(cen.shape[0]):
        counts[K - lev_flat[cen[i]]] += 1
    start = np.zeros(K + 2, np.int64)
    for k in range(1, K + 2):
        start[k] = start[k - 1] + counts[k - 1]
    out = np.empty_like(cen)
    lv = np.empty(cen.shape[0], lev_flat.dtype)
    for i in range(cen.shape[0]):
        level = lev_flat[cen[i]]
        j = start[K - level]
        out[j] = cen[i]
        lv[j] = level
        start[K - level] = j + 1
    return out, lv


#: Voxels along x per word of the paint's bit mask (a power of two, at most 64): a ball's row visits
#: the rows whose word in its span has a voxel not painted yet; 16 rather than 64 visits 3-4x fewer
#: rows that turn out to have none inside the span.
_XW = 16
_XS = 4
#: dtype of those words
WORD = np.uint16
#: Planes per group of the paint's coarse summary (a power of two): a ball's planes in a group whose
#: rows are all painted cost one test per word and 64 rows for the whole group.
_GROUP = 8
_GROUP_SHIFT = 3


@njit(nogil=True, cache=True)
def group_summary(cols, groups, lo, hi):  # pragma: no cover - numba
    """``groups[g, word, y // 64]`` = OR of ``cols`` over the planes of group ``g`` (``_GROUP`` planes); groups lo..hi."""
    Z = cols.shape[0]
    for g in range(lo, hi):
        groups[g] = 0
        for z in range(g << _GROUP_SHIFT, min(Z, (g + 1) << _GROUP_SHIFT)):
            for wi in range(cols.shape[1]):
                for yw in range(cols.shape[2]):
                    groups[g, wi, yw] |= cols[z, wi, yw]


@njit(nogil=True, cache=True)
def paint(cen, clev, ey, ex, oz, oy, ox, rz_of, dz_base, ry_of, row_w, bits, cols, groups, out, z0, z1):  # pragma: no cover - numba
    """Paint the balls of ``cen`` (flat indices into a (., ey, ex) grid, descending level) into planes z0..z1 of ``out``.

    ``bits[z, y, word]`` holds the core voxels not painted yet (phase only,
    ``_XW`` per word along x), ``cols[z, word, y // 64]`` which of those words
    are not zero, so that a ball's plane whose rows are all painted costs a
    word test per 64 rows, and ``groups`` the same for groups of ``_GROUP``
    planes (:func:`group_summary`), so that a ball's planes in a painted
    group are passed over together. z0 must start a group (threads paint
    whole groups). A voxel takes the level of the first ball that covers
    it, the largest. The core's origin in the grid is (oz, oy, ox).
    The ball of level ``l`` has the planes dz in -rz_of[l]..rz_of[l]; row (dz,
    dy) has the half width ``row_w[dz_base[l, dz + R] + ry_of[l, dz + R] + dy]``.
    """
    Z, Y, W = bits.shape
    X = out.shape[2]
    R = (dz_base.shape[1] - 1) // 2
    plane = ey * ex
    for i in range(cen.shape[0]):
        c = cen[i]
        level = clev[i]
        cz = c // plane
        r = c - cz * plane
        cy = r // ex
        cx = r - cy * ex - ox
        cz -= oz
        cy -= oy
        rz = rz_of[level]
        # the ball's bounding box in the core: the rows of its middle plane are its widest
        ryb = ry_of[level, R]
        yb0 = max(0, cy - ryb)
        yb1 = min(Y - 1, cy + ryb)
        wb = row_w[dz_base[level, R] + ryb]
        xb0 = max(0, cx - wb)
        xb1 = min(X - 1, cx + wb)
        if yb0 > yb1 or xb0 > xb1:
            continue
        z = max(z0, cz - rz)
        zend = min(z1 - 1, cz + rz)
        while z <= zend:
            if (z & (_GROUP - 1)) == 0 or z == max(z0, cz - rz):
                g = z >> _GROUP_SHIFT
                empty = True
                for wi in range(xb0 >> _XS, (xb1 >> _XS) + 1):
                    for yw in range(yb0 >> 6, (yb1 >> 6) + 1):
                        a = yb0 - (yw << 6) if yw == (yb0 >> 6) else 0
                        b = yb1 - (yw << 6) if yw == (yb1 >> 6) else 63
                        if groups[g, wi, yw] & ((_ALL >> np.uint64(63 - b + a)) << np.uint64(a)):
                            empty = False
                            break
                    if not empty:
                        break
                if empty:
                    z = ((g + 1) << _GROUP_SHIFT)
                    continue
            k = z - cz + R
            ry = ry_of[level, k]
            base = dz_base[level, k] + ry - cy
            ya = max(0, cy - ry)
            yb = min(Y - 1, cy + ry)
            if ya > yb:
                z += 1
                continue
            # the plane's widest row in the core bounds its words
            yw0 = min(max(cy, ya), yb)
            w0 = row_w[base + yw0]
            xa0 = max(0, cx - w0)
            xb0p = min(X - 1, cx + w0)
            if xa0 > xb0p:
                z += 1
                continue
            for wi in range(xa0 >> _XS, (xb0p >> _XS) + 1):
                lo_x = wi << _XS
                for yw in range(ya >> 6, (yb >> 6) + 1):
                    a = ya - (yw << 6) if yw == (ya >> 6) else 0
                    b = yb - (yw << 6) if yw == (yb >> 6) else 63
                    cm = cols[z, wi, yw] & ((_ALL >> np.uint64(63 - b + a)) << np.uint64(a))
                    while cm:
                        t = trailing_zeros(cm)
                        cm &= cm - np.uint64(1)
                        y = (yw << 6) + t
                        w = row_w[base + y]
                        xa = max(cx - w, lo_x)
                        xb = min(cx + w, lo_x + _XW - 1, X - 1)
                        if xa > xb:
                            continue
                        m = np.uint64(bits[z, y, wi])
                        hit = m & ((_ALL >> np.uint64(63 - (xb - xa))) << np.uint64(xa - lo_x))
                        if hit == 0:
                            continue
                        m ^= hit
                        bits[z, y, wi] = m
                        if m == 0:
                            bit = np.uint64(1) << np.uint64(t)
                            cols[z, wi, yw] &= ~bit
                            # the group's row bit goes when no plane of the group has the row left
                            g = z >> _GROUP_SHIFT
                            left = False
                            for zz in range(g << _GROUP_SHIFT, min(Z, (g + 1) << _GROUP_SHIFT)):
                                if cols[zz, wi, yw] & bit:
                                    left = True
                                    break
                            if not left:
                                groups[g, wi, yw] &= ~bit
                        while hit:
                            out[z, y, lo_x + trailing_zeros(hit)] = level
                            hit &= hit - np.uint64(1)
            z += 1


@njit(nogil=True, cache=True)
def pack_bits(mask, mz, my, mx, X, bits, cols, lo, hi):  # pragma: no cover - numba
    """Bit ``x % _XW`` of ``bits[z, y, x // _XW]`` = ``mask[z + mz, y + my, x + mx]`` (x < X), and the
    non-zero words in ``cols`` (see :func:`paint`); planes lo..hi."""
    Z, Y, W = bits.shape
    for z in range(lo, hi):
        cols[z] = 0
        for y in range(Y):
            for wi in range(W):
                word = np.uint64(0)
                for t in range(min(_XW, X - (wi << _XS))):
                    if mask[z + mz, y + my, (wi << _XS) + t + mx]:
                        word |= np.uint64(1) << np.uint64(t)
                bits[z, y, wi] = word
                if word != 0:
                    cols[z, wi, y >> 6] |= np.uint64(1) << np.uint64(y & 63)


@njit(nogil=True, cache=True)
def finish(out, lev, oz, oy, ox, mask, mz, my, mx, values, res, lo, hi):  # pragma: no cover - numba
    """``res`` = ``values[max(painted level, own level, 1)]`` on the phase, 0 elsewhere; planes lo..hi of the core."""
    Z, Y, X = res.shape
    for z in range(lo, hi):
        for y in range(Y):
            for x in range(X):
                if not mask[z + mz, y + my, x + mx]:
                    res[z, y, x] = 0
                    continue
                level = max(out[z, y, x], lev[z + oz, y + oy, x + ox])
                res[z, y, x] = values[max(level, 1)]


@njit(nogil=True, cache=True)
def _reach(rem, v):  # pragma: no cover - numba
    """Largest k >= 0 with (k v)^2 <= rem (-1 when rem < 0)."""
    if rem < 0:
        return -1
    k = int(np.sqrt(rem) / v)
    while ((k + 1) * v) ** 2 <= rem:
        k += 1
    while k >= 0 and (k * v) ** 2 > rem:
        k -= 1
    return k


@njit(nogil=True, cache=True)
def ball_rows(rho2, wz, wy, wx):  # pragma: no cover - numba
    """Rows of the digital ball of each level: the lattice points with ``(dz wz)^2 + (dy wy)^2 + (dx wx)^2 <= rho2[l]``.

    Returns ``rz_of[l]``, ``dz_base[l, dz + R]``, ``ry_of[l, dz + R]``,
    ``row_w`` (half width in x of each row) as :func:`paint` reads them, and
    ``far2[l, c]``: the largest squared distance from a point of the ball to
    the neighbour offset of class ``c`` (:data:`_CLASSES`, offsets of up to
    :data:`_RING` voxels per axis; for the containment test of :func:`centres`).
    """
    K = rho2.shape[0]
    R = max(_reach(rho2[K - 1], wz), 0)
    rz_of = np.zeros(K, np.int64)
    ry_of = np.zeros((K, 2 * R + 1), np.int64)
    dz_base = np.zeros((K, 2 * R + 1), np.int64)
    far2 = np.zeros((K, _CLASSES), np.float64)
    n = 0
    for level in range(K):
        rz = _reach(rho2[level], wz)
        rz_of[level] = max(rz, 0)
        for dz in range(-rz, rz + 1):
            ry = _reach(rho2[level] - (dz * wz) ** 2, wy)
            n += 2 * ry + 1
    row_w = np.zeros(max(n, 1), np.int64)
    n = 0
    for level in range(K):
        rz = _reach(rho2[level], wz)
        for dz in range(-rz, rz + 1):
            rem = rho2[level] - (dz * wz) ** 2
            ry = _reach(rem, wy)
            ry_of[level, dz + R] = ry
            dz_base[level, dz + R] = n
            for dy in range(-ry, ry + 1):
                w = _reach(rem - (dy * wy) ** 2, wx)
                row_w[n] = w
                n += 1
                for c in range(1, _CLASSES):
                    a = c // (_BASE * _BASE)
                    b = (c // _BASE) % _BASE
                    e = c % _BASE
                    d2 = ((abs(dz) + a) * wz) ** 2 + ((abs(dy) + b) * wy) ** 2 + ((w + e) * wx) ** 2
                    if d2 > far2[level, c]:
                        far2[level, c] = d2
    return rz_of, dz_base, ry_of, row_w, far2
