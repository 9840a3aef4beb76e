"""Map a function over the z-slabs of a dask stack with each slab's rows of a per-slice table."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dask.array as da
import numpy as np

__all__ = ["map_slabs"]


def map_slabs(arr: da.Array, fn: Callable[..., Any], table: np.ndarray, *, depth: dict[int, int] | None = None, **kwargs: Any) -> da.Array:
    """``fn(block, rows=table[z0:z1], **kwargs)`` over every z-chunk of ``arr``.

    Every task carries only its own slices' rows of ``table`` (per-slice
    parameters: shifts, background coefficients) as a literal. A closure over
    the whole table is serialised into every task, and a worker holding its
    queue of tasks then holds as many copies (hundreds of MB on long stacks).

    Parameters
    ----------
    arr : dask.array.Array
        (z, y, x) stack.
    fn : callable
        Block function; gets the block and ``rows`` (its slices' rows).
    table : numpy.ndarray
        One row per slice of ``arr`` (first axis z).
    depth : dict, optional
        Halo in y and x (z must be 0) for :func:`dask.array.map_overlap`
        with ``boundary="none"``; None maps blocks without overlap.
    **kwargs
        Passed to ``map_blocks``/``map_overlap`` (``dtype``, ...) and to ``fn``.
    """
    table = np.asarray(table)
    if len(table) != arr.shape[0]:
        raise ValueError(f"a table of {len(table)} rows does not fit a stack of {arr.shape[0]} slices")
    if depth is not None and depth.get(0, 0):
        raise ValueError("map_slabs halos are in y and x only")
    pieces, z0 = [], 0
    for dz in arr.chunks[0]:
        rows = np.ascontiguousarray(table[z0 : z0 + dz])
        piece = arr[z0 : z0 + dz]
        if depth is None:
            pieces.append(piece.map_blocks(fn, rows=rows, **kwargs))
        else:
            pieces.append(da.map_overlap(fn, piece, depth=depth, boundary="none", trim=True, rows=rows, **kwargs))
        z0 += dz
    return da.concatenate(pieces, axis=0) if len(pieces) > 1 else pieces[0]
