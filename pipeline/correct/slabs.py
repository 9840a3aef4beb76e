"""Map a function over the z-slabs of a dask stack with each slab's rows of a per-slice table."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import dask.array as da
import numpy as np

__all__ = ["map_slabs", "merge_shallow_slabs"]


def merge_shallow_slabs(chunks: list[int], depth: int) -> list[int]:
    """Slab depths (z chunks) merged so that every slab has at least ``depth`` slices.

    A pair of slices up to ``depth`` apart then crosses one slab boundary at most.
    """
    if depth <= 1 or len(chunks) < 2 or min(chunks) >= depth:
        return list(chunks)
    merged: list[int] = []
    for dz in chunks:
        if merged and (merged[-1] < depth or dz < depth):
            merged[-1] += dz
        else:
            merged.append(dz)
    if len(merged) > 1 and merged[-1] < depth:
        merged[-2] += merged.pop()
    return merged


def map_slabs(arr: da.Array, fn: Callable[..., Any], table: np.ndarray, *, depth: dict[int, int] | None = None, **kwargs: Any) -> da.Array:
    """``fn(block, rows=table[z0:z1], **kwargs)`` over every z-chunk of ``arr``.

    Every task carries only its own slices' rows of ``table`` (per-slice
    parameters: shifts, background coefficients) as a literal. A closure over
    the whole table is serialised into every task, and a worker holding its
    queue of tasks then holds as many copies (hundreds of MB on long stacks).
    The tasks make one graph layer whatever the number of slabs: a layer per
    slab made every block computed on its own (``store_blocks``) cull
    thousands of layers, 0.18 s of the driver's time per block on 16,400
    slices, quadratic in the stack's length.

    Parameters
    ----------
    arr : dask.array.Array
        (z, y, x) stack.
    fn : callable
        Block function; gets the block and ``rows`` (its slices' rows), and
        ``block_info`` (``{0: {"array-location": ...}}`` of the block it
        gets) when it takes that argument.
    table : numpy.ndarray
        One row per slice of ``arr`` (first axis z).
    depth : dict, optional
        Halo in y and x (z must be 0), as :func:`dask.array.map_overlap`
        with ``boundary="none"`` and trimmed; None maps blocks without overlap.
    **kwargs
        ``dtype`` of the result, and keywords of ``fn``.
    """
    table = np.asarray(table)
    if len(table) != arr.shape[0]:
        raise ValueError(f"a table of {len(table)} rows does not fit a stack of {arr.shape[0]} slices")
    if depth is not None and depth.get(0, 0):
        raise ValueError("map_slabs halos are in y and x only")
    dtype = np.dtype(kwargs.pop("dtype", arr.dtype))
    halo = {0: 0, 1: 0, 2: 0, **(depth or {})}
    src = da.overlap.overlap(arr, depth=halo, boundary="none") if depth is not None and any(halo.values()) else arr
    out = _slab_layer(src, fn, table, dtype, kwargs)
    return da.overlap.trim_internal(out, halo, boundary="none") if src is not arr else out


def _slab_layer(arr: da.Array, fn: Callable[..., Any], table: np.ndarray, dtype: np.dtype, kwargs: dict[str, Any]) -> da.Array:
    """One layer of tasks ``fn(block, rows=..., **kwargs)``, one per block of ``arr`` (same chunks out)."""
    import inspect

    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph
    from dask.utils import funcname

    with_info = "block_info" in inspect.signature(fn).parameters
    name = f"{funcname(fn)}-slabs-{tokenize(arr.name, fn, table, sorted(kwargs.items(), key=lambda kv: kv[0]))}"
    starts = [np.cumsum((0,) + tuple(c[:-1])).tolist() for c in arr.chunks]
    z0 = starts[0]
    dsk: dict[Any, Any] = {}
    for idx in np.ndindex(*arr.numblocks):
        rows = np.ascontiguousarray(table[z0[idx[0]] : z0[idx[0]] + arr.chunks[0][idx[0]]])
        extra = dict(kwargs, rows=rows)
        if with_info:
            loc = [(starts[d][i], starts[d][i] + arr.chunks[d][i]) for d, i in enumerate(idx)]
            extra["block_info"] = {0: {"array-location": loc}}
        dsk[(name, *idx)] = (functools.partial(fn, **extra), (arr.name, *idx))
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[arr])
    return da.Array(graph, name, arr.chunks, dtype=dtype, meta=np.empty((0,) * arr.ndim, dtype=dtype))
