"""Block downsampling for image pyramids: grey values by their mean, labels by their most frequent value.

Plain functions on NumPy arrays of shape (z, y, x); ``factors`` are the
block's edge lengths in voxels along z, y, x (1 leaves an axis as it is).
An axis of length ``n`` becomes ``ceil(n / f)`` long: the last block may be
partial. Inputs are never modified.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["downsample_mean", "downsample_mode", "pyramid_factors", "default_levels"]


def _check(a: np.ndarray, factors: Sequence[int]) -> tuple[int, ...]:
    f = tuple(int(v) for v in factors)
    if a.ndim != len(f) or min(f) < 1:
        raise ValueError(f"factors {list(factors)} do not fit an array of shape {a.shape}; expected one integer >= 1 per axis")
    return f


def _along(axis: int, ndim: int, sl: slice) -> tuple[slice, ...]:
    return tuple(sl if i == axis else slice(None) for i in range(ndim))


def _block_means(a: np.ndarray, axis: int, k: int, acc: type) -> np.ndarray:
    """Means of runs of ``k`` along ``axis`` (the last run may be shorter), as ``acc``: sums of strided views."""
    n = a.shape[axis]
    full = n // k
    shape = list(a.shape)
    shape[axis] = -(-n // k)
    out = np.empty(shape, acc)
    head = out[_along(axis, a.ndim, slice(0, full))]
    np.add(a[_along(axis, a.ndim, slice(0, full * k, k))], a[_along(axis, a.ndim, slice(1, full * k, k))], out=head, dtype=acc)
    for i in range(2, k):
        head += a[_along(axis, a.ndim, slice(i, full * k, k))]
    head /= acc(k)
    if n % k:
        tail = out[_along(axis, a.ndim, slice(full, full + 1))]
        np.mean(a[_along(axis, a.ndim, slice(full * k, n))], axis=axis, keepdims=True, dtype=acc, out=tail)
    return out


def downsample_mean(a: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    """Mean of each block, in ``a``'s dtype (integers rounded to nearest).

    A partial block at an edge is the mean of the voxels it has. Sums are
    taken in float32 for 8- and 16-bit data and float32 images (exact for
    integers: 8 x 65535 is far below 2**24) and in float64 otherwise.
    """
    f = _check(a, factors)
    small = a.dtype.itemsize <= 2 or a.dtype == np.float32
    acc = np.float32 if small else np.float64
    out: np.ndarray = a
    for axis, k in enumerate(f):
        if k > 1 and out.shape[axis] > 0:
            out = _block_means(out, axis, k, acc)
    if out is a:
        return a.copy()
    if np.issubdtype(a.dtype, np.integer):
        np.rint(out, out=out)
    return out.astype(a.dtype, copy=False)


def downsample_mode(a: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    """Most frequent value of each block; a tie goes to the block's first voxel (the nearest to its corner).

    For label volumes (uint8, 1 = pore): a block of 2 x 2 x 2 voxels with
    five pore voxels is pore, with four it is what its first voxel is. A
    partial block at an edge counts its voxels as if the edge were repeated.
    """
    f = _check(a, factors)
    pad = [(0, (-n) % k) for n, k in zip(a.shape, f)]
    src = np.pad(a, pad, mode="edge") if any(p for _, p in pad) else a
    views = [src[i :: f[0], j :: f[1], k :: f[2]] for i in range(f[0]) for j in range(f[1]) for k in range(f[2])]
    first = views[0]
    if len(views) == 1:
        return first.copy()
    if a.dtype == np.bool_ or (np.issubdtype(a.dtype, np.unsignedinteger) and (a.size == 0 or int(a.max()) <= 1)):
        ones = np.zeros(first.shape, np.uint16)
        for v in views:
            ones += v
        twice, n = 2 * ones, len(views)
        out = np.where(twice > n, 1, np.where(twice < n, 0, first))
        return out.astype(a.dtype, copy=False)
    best = first.copy()
    best_count = np.zeros(first.shape, np.uint16)
    for v in views:
        count = np.zeros(first.shape, np.uint16)
        for w in views:
            count += v == w
        better = count > best_count  # strictly: an equal count later in the block never replaces an earlier value
        best[better] = v[better]
        best_count[better] = count[better]
    return best


def pyramid_factors(voxel_size_nm: Sequence[float], shape: Sequence[int], levels: int) -> list[tuple[int, int, int]]:
    """Factor (z, y, x) from each level to the next, ``levels - 1`` of them.

    Each level halves the axes whose voxel is finest (within 1.5x of the
    finest), so an anisotropic FIB-SEM voxel (10, 5, 5) nm becomes (10, 10,
    10) and then (20, 20, 20): the pyramid moves towards isotropy. An axis
    one voxel long is never halved.
    """
    vs = [float(v) for v in voxel_size_nm]
    sh = [int(s) for s in shape]
    out: list[tuple[int, int, int]] = []
    for _ in range(max(0, int(levels) - 1)):
        finest = min(v for v, s in zip(vs, sh) if s > 1) if any(s > 1 for s in sh) else min(vs)
        f = tuple(2 if s > 1 and v <= 1.5 * finest else 1 for v, s in zip(vs, sh))
        out.append(f)  # type: ignore[arg-type]
        vs = [v * k for v, k in zip(vs, f)]
        sh = [-(-s // k) for s, k in zip(sh, f)]
    return out


def default_levels(voxel_size_nm: Sequence[float], shape: Sequence[int], *, coarsest: int = 512, most: int = 8) -> int:
    """Levels until the longest side is at most ``coarsest`` voxels (at most ``most`` levels).

    napari draws the coarsest level of a pyramid in 3D, so it stays at
    256-512 voxels a side; a volume no longer than that gets one level.
    """
    sh = [int(s) for s in shape]
    levels = 1
    for f in pyramid_factors(voxel_size_nm, shape, most):
        if max(sh) <= coarsest:
            break
        sh = [-(-s // k) for s, k in zip(sh, f)]
        levels += 1
    return levels
