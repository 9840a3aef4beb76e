"""Exact median filters of size 3 (3x3 per slice, 3x3x3) built from min/max networks.

A median is a selection; it cannot be split into 1D passes. These filters are
exact (equal, value for value, to :func:`scipy.ndimage.median_filter` with the
same ``mode``) and fast because they run only element-wise ``minimum`` and
``maximum`` over whole tiles, which NumPy vectorises and CuPy runs on the GPU:

* 3x3: each vertical triple is sorted once and shared by the three windows
  that use it; the median is ``med3(max(lows), med3(mids), min(highs))``, the
  classic exact rule for a 3x3 matrix with sorted columns and rows.
* 3x3x3: triples are sorted along z, then along y (both shared between
  neighbouring windows); the 27 values of a window then form three 3x3
  matrices sorted along both axes, and a Batcher odd-even merge-sort network
  of 32 wires is pruned to the comparisons that (a) still matter for output
  rank 13 and (b) are not already decided by that known order.

Floats are mapped to order-preserving int32 keys so that ``minimum`` and
``maximum`` run at integer speed (and NaN checks vanish); the result is
mapped back, so values are returned bit for bit (``-0.0`` and ``0.0`` compare
as different keys; either is a correct median of equal values).
Inputs must be finite.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from pipeline.backend import ndimage_of, xp_of

__all__ = ["median3x3", "median3x3x3", "median_filter", "PAD_MODES"]

#: scipy.ndimage mode -> numpy.pad mode
PAD_MODES: dict[str, str] = {
    "reflect": "symmetric",
    "mirror": "reflect",
    "nearest": "edge",
    "wrap": "wrap",
    "constant": "constant",
}

_TILE_VOXELS = 1 << 16  # voxels per tile: enough to amortise Python overhead, small enough for cache


def _sort3(xp: Any, a: Any, b: Any, c: Any) -> tuple[Any, Any, Any]:
    lo = xp.minimum(a, b)
    hi = xp.maximum(a, b)
    mid = xp.minimum(hi, c)
    hi = xp.maximum(hi, c)
    return xp.minimum(lo, mid), xp.maximum(lo, mid), hi


def _med3(xp: Any, a: Any, b: Any, c: Any) -> Any:
    return xp.maximum(xp.minimum(a, b), xp.minimum(xp.maximum(a, b), c))


def _batcher_pairs(n: int) -> list[tuple[int, int]]:
    """Comparators of Batcher's odd-even merge sort for ``n`` (a power of two) wires."""
    pairs: list[tuple[int, int]] = []
    p = 1
    while p < n:
        k = p
        while k >= 1:
            for j in range(k % p, n - k, 2 * k):
                for i in range(min(k, n - j - k)):
                    if (i + j) // (p * 2) == (i + j + k) // (p * 2):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return pairs


def _closure(le: dict[int, set[int]], x: int) -> set[int]:
    seen: set[int] = set()
    stack = list(le[x])
    while stack:
        v = stack.pop()
        if v not in seen:
            seen.add(v)
            stack.extend(le.get(v, ()))
    return seen


@functools.cache
def selection_program(n_inputs: int, rank: int, known_le: tuple[tuple[int, int], ...] = ()) -> tuple[tuple[tuple[str, int, int, int], ...], int]:
    """A pruned min/max program that returns the ``rank``-th smallest of ``n_inputs`` values.

    Parameters
    ----------
    n_inputs : int
        Number of inputs (at most 32).
    rank : int
        0-based rank of the output (``n_inputs // 2`` for the median).
    known_le : tuple of (i, j)
        Pairs of inputs known to satisfy ``x[i] <= x[j]``; comparisons
        they decide are skipped.

    Returns
    -------
    program : tuple of (op, a, b, out)
        ``op`` is ``"min"`` or ``"max"``; values are numbered, inputs first.
    out : int
        Number of the value holding the result.
    """
    width = 1
    while width < n_inputs:
        width *= 2
    inf = -1
    wires = list(range(n_inputs)) + [inf] * (width - n_inputs)
    le: dict[int, set[int]] = {i: set() for i in range(n_inputs)}
    for a, b in known_le:
        le[a].add(b)
    for k in list(le):
        le[k] = _closure(le, k)
    ops: dict[int, tuple[str, int, int]] = {}
    nxt = n_inputs
    for i, j in _batcher_pairs(width):
        a, b = wires[i], wires[j]
        if b == inf:
            continue
        if a == inf:
            wires[i], wires[j] = b, a
            continue
        if b in le[a]:
            continue
        if a in le[b]:
            wires[i], wires[j] = b, a
            continue
        lo, hi = nxt, nxt + 1
        nxt += 2
        ops[lo] = ("min", a, b)
        ops[hi] = ("max", a, b)
        # Sound (not complete) bookkeeping of the order between values.
        le_lo = {a, b, hi} | le[a] | le[b]
        le_hi = le[a] & le[b]
        for x, s in le.items():
            if a in s or b in s:
                s.add(hi)
            if a in s and b in s:
                s.add(lo)
        le[lo] = le_lo
        le[hi] = le_hi
        le[lo] = le_lo | _closure(le, lo)
        wires[i], wires[j] = lo, hi
    out = wires[rank]
    need: set[int] = set()
    stack = [out]
    while stack:
        v = stack.pop()
        if v in ops and v not in need:
            need.add(v)
            stack.extend(ops[v][1:])
    program = tuple((ops[v][0], ops[v][1], ops[v][2], v) for v in sorted(need))
    return program, out


def _run_program(xp: Any, program: tuple[tuple[str, int, int, int], ...], out: int, inputs: list[Any]) -> Any:
    values: dict[int, Any] = dict(enumerate(inputs))
    last: dict[int, int] = {}
    for k, (_, a, b, _o) in enumerate(program):
        last[a] = k
        last[b] = k
    n = len(inputs)
    for k, (op, a, b, o) in enumerate(program):
        values[o] = (xp.minimum if op == "min" else xp.maximum)(values[a], values[b])
        for v in (a, b):
            if v >= n and last.get(v) == k and v in values:
                del values[v]
    return values[out]


def _known_order_27() -> tuple[tuple[int, int], ...]:
    # input index c*9 + s*3 + r: x offset c, y rank s, z rank r (sorted along r and s)
    pairs = []
    for c in range(3):
        for s in range(3):
            for r in range(3):
                i = c * 9 + s * 3 + r
                if r < 2:
                    pairs.append((i, i + 1))
                if s < 2:
                    pairs.append((i, i + 3))
    return tuple(pairs)


def _to_keys(xp: Any, a: Any) -> tuple[Any, Any]:
    """Order-preserving integer view of ``a`` and the dtype to map back to (None if unchanged)."""
    if a.dtype.kind in "biu":
        return a, None
    if a.dtype == np.float64:
        b = a.view(xp.int64)
        return b ^ ((b >> 63) & xp.int64(0x7FFFFFFFFFFFFFFF)), np.float64
    if a.dtype == np.float32:
        b = a.view(xp.int32)
        return b ^ ((b >> 31) & xp.int32(0x7FFFFFFF)), np.float32
    if a.dtype == np.float16:
        return a.astype(np.float32), np.float16
    raise ValueError(f"median filter: unsupported dtype {a.dtype}")


def _from_keys(xp: Any, k: Any, dtype: Any) -> Any:
    if dtype is None:
        return k
    if dtype == np.float16:
        return k.astype(np.float16)
    if dtype == np.float64:
        return (k ^ ((k >> 63) & xp.int64(0x7FFFFFFFFFFFFFFF))).view(xp.float64)
    return (k ^ ((k >> 31) & xp.int32(0x7FFFFFFF))).view(xp.float32)


def _pad(xp: Any, a: Any, pad: tuple[tuple[int, int], ...], mode: str, cval: float) -> Any:
    if mode not in PAD_MODES:
        raise ValueError(f"mode {mode!r} is not one of {sorted(PAD_MODES)}")
    if mode == "constant":
        return xp.pad(a, pad, mode="constant", constant_values=a.dtype.type(cval))
    return xp.pad(a, pad, mode=PAD_MODES[mode])


def _tiles(shape: tuple[int, ...]) -> list[tuple[slice, slice]]:
    """(z, y) output tiles of about ``_TILE_VOXELS`` voxels each."""
    z, y, x = shape
    if y * x >= _TILE_VOXELS:
        rows = max(1, _TILE_VOXELS // max(1, x))
        return [(slice(k, k + 1), slice(r, min(y, r + rows))) for k in range(z) for r in range(0, y, rows)]
    step = max(1, _TILE_VOXELS // max(1, y * x))
    return [(slice(k, min(z, k + step)), slice(0, y)) for k in range(0, z, step)]


def _check3d(image: Any) -> None:
    if getattr(image, "ndim", None) != 3:
        raise ValueError(f"expected a 3D (z, y, x) array; got shape {getattr(image, 'shape', None)}")


def median3x3(image: Any, *, mode: str = "reflect", cval: float = 0.0) -> Any:
    """Exact 3x3 median of every (y, x) slice of a (z, y, x) stack.

    Parameters
    ----------
    image : ndarray (z, y, x)
        NumPy or CuPy array, integer or float (finite values).
    mode : str
        Border rule of :mod:`scipy.ndimage` (``reflect``, ``mirror``,
        ``nearest``, ``wrap``, ``constant``).
    cval : float
        Fill value for ``mode="constant"``.

    Returns
    -------
    ndarray
        Same shape and dtype; equal to ``scipy.ndimage.median_filter(image,
        size=(1, 3, 3), mode=mode)``.
    """
    _check3d(image)
    xp = xp_of(image)
    if image.dtype == bool:
        return median3x3(image.view(np.uint8), mode=mode, cval=cval).view(bool)
    pad = _pad(xp, image, ((0, 0), (1, 1), (1, 1)), mode, cval)
    keys, back = _to_keys(xp, pad)
    out = xp.empty(image.shape, dtype=keys.dtype)
    for zs, ys in _tiles(image.shape):
        p = keys[zs, ys.start : ys.stop + 2]
        lo, mid, hi = _sort3(xp, p[:, :-2], p[:, 1:-1], p[:, 2:])
        mx = xp.maximum(xp.maximum(lo[..., :-2], lo[..., 1:-1]), lo[..., 2:])
        mn = xp.minimum(xp.minimum(hi[..., :-2], hi[..., 1:-1]), hi[..., 2:])
        md = _med3(xp, mid[..., :-2], mid[..., 1:-1], mid[..., 2:])
        out[zs, ys] = _med3(xp, mx, md, mn)
    return _from_keys(xp, out, back)


def median3x3x3(image: Any, *, mode: str = "reflect", cval: float = 0.0) -> Any:
    """Exact 3x3x3 median of a (z, y, x) volume.

    Parameters
    ----------
    image : ndarray (z, y, x)
        NumPy or CuPy array, integer or float (finite values).
    mode, cval
        Border rule as in :func:`median3x3`.

    Returns
    -------
    ndarray
        Same shape and dtype; equal to ``scipy.ndimage.median_filter(image,
        size=3, mode=mode)``.
    """
    _check3d(image)
    xp = xp_of(image)
    if image.dtype == bool:
        return median3x3x3(image.view(np.uint8), mode=mode, cval=cval).view(bool)
    pad = _pad(xp, image, ((1, 1), (1, 1), (1, 1)), mode, cval)
    keys, back = _to_keys(xp, pad)
    program, result = selection_program(27, 13, _known_order_27())
    x = image.shape[2]
    out = xp.empty(image.shape, dtype=keys.dtype)
    for zs, ys in _tiles(image.shape):
        q = keys[zs.start : zs.stop + 2, ys.start : ys.stop + 2]
        s = _sort3(xp, q[:-2], q[1:-1], q[2:])  # along z: (n, y+2, x+2) each
        t: dict[tuple[int, int], Any] = {}
        for r in range(3):
            sorted_y = _sort3(xp, s[r][:, :-2], s[r][:, 1:-1], s[r][:, 2:])
            for k in range(3):
                t[r, k] = sorted_y[k]
        inputs = [t[r, k][..., c : c + x] for c in range(3) for k in range(3) for r in range(3)]
        out[zs, ys] = _run_program(xp, program, result, inputs)
    return _from_keys(xp, out, back)


def median_filter(image: Any, size: int = 3, *, dims: int = 2, mode: str = "reflect", cval: float = 0.0) -> Any:
    """Exact median filter of a (z, y, x) stack, per slice (``dims=2``) or in 3D.

    Size 3 uses the fast networks (:func:`median3x3`, :func:`median3x3x3`);
    other odd sizes use :func:`scipy.ndimage.median_filter` (or CuPy's).

    Parameters
    ----------
    image : ndarray (z, y, x)
    size : int
        Odd window edge in voxels (>= 1).
    dims : {2, 3}
        2: a size x size window in every slice; 3: a size^3 window.
    mode, cval
        Border rule of :mod:`scipy.ndimage`.
    """
    _check3d(image)
    if dims not in (2, 3):
        raise ValueError(f"dims must be 2 or 3; got {dims}")
    if size < 1 or size % 2 == 0:
        raise ValueError(f"median size must be an odd integer >= 1; got {size}")
    if size == 1:
        return image.copy()
    if size == 3:
        return median3x3(image, mode=mode, cval=cval) if dims == 2 else median3x3x3(image, mode=mode, cval=cval)
    window = (1, size, size) if dims == 2 else (size, size, size)
    return ndimage_of(image).median_filter(image, size=window, mode=mode, cval=cval)
