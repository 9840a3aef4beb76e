"""Chunk-aligned, resumable writes of dask arrays into zarr stores.

A block is one chunk of the target store (or a run of whole chunks). Each block
is computed, written, and only then marked done with a small marker file.
zarr v3 skips chunks equal to the fill value, so "chunk exists" does not mean
"block done": the marker does. A run killed in the middle leaves some blocks
without markers; running again recomputes exactly those, and since blocks are
chunk-aligned no two blocks ever write the same chunk.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import zarr

from pipeline.progress import progress_bar

__all__ = ["store_blocks", "compute_tasks", "active_client", "centred_box", "grouped_block_shape", "grouped_blocks", "block_regions", "chunk_regions", "covering_block_shape", "nests", "nesting_chunks", "done_blocks",
           "record_total", "TOTAL_NAME"]

#: file in a marker folder that says how many blocks the write has (read by ``porelab status``)
TOTAL_NAME = "blocks.json"


def block_regions(shape: Sequence[int], chunks: Sequence[int]) -> Iterator[tuple[tuple[int, ...], tuple[slice, ...]]]:
    """Yield ``(block_index, region)`` for a regular chunk grid over ``shape``."""
    grids = [range(0, int(s), int(c)) for s, c in zip(shape, chunks)]
    for starts in itertools.product(*grids):
        index = tuple(st // int(c) for st, c in zip(starts, chunks))
        region = tuple(slice(st, min(st + int(c), int(s))) for st, c, s in zip(starts, chunks, shape))
        yield index, region


def chunk_regions(chunks: Sequence[Sequence[int]]) -> Iterator[tuple[tuple[int, ...], tuple[slice, ...]]]:
    """Yield ``(block_index, region)`` for the chunks of a dask array (``Array.chunks``, regular or not)."""
    bounds = [np.concatenate([[0], np.cumsum([int(v) for v in c])]).astype(int) for c in chunks]
    for index in itertools.product(*(range(len(c)) for c in chunks)):
        yield index, tuple(slice(int(b[i]), int(b[i + 1])) for b, i in zip(bounds, index))


def nests(data_chunks: Sequence[Sequence[int]], chunks: Sequence[int]) -> bool:
    """Whether every border between ``data_chunks`` (per axis, ``Array.chunks``) is a border of the store's ``chunks``.

    Then each of the data's chunks is a whole number of store chunks, and
    writing the data chunk by chunk computes each chunk exactly once.
    """
    if len(data_chunks) != len(chunks):
        raise ValueError(f"data chunks {len(data_chunks)}-D and store chunks {len(chunks)}-D differ")
    return all(int(b) % int(c) == 0 for dc, c in zip(data_chunks, chunks) for b in np.cumsum([int(v) for v in dc])[:-1])


def nesting_chunks(data_chunks: Sequence[Sequence[int]], chunks: Sequence[int]) -> tuple[int, ...]:
    """Store chunks for a lazy array: ``chunks`` where its own chunks are whole multiples of them, else its own chunk size.

    A segmentation's blocks are sized by memory, not by the store: blocks of
    8 whole slices under a store chunk of 32 slices, or 3D blocks of 48 x 192 x
    192 voxels under store chunks of 32 x 256 x 256. A store with these chunks
    (8 x 256 x 256, or 48 x 192 x 192) takes every block as it is computed
    (:func:`nests`); with the other chunks each block would be computed once
    for every store block it touches.

    Parameters
    ----------
    data_chunks : sequence of sequences of int
        The lazy array's chunk sizes per axis (``dask.array.Array.chunks``).
    chunks : sequence of int
        The store chunks one would use otherwise (the job's).
    """
    if len(data_chunks) != len(chunks):
        raise ValueError(f"data chunks {len(data_chunks)}-D and store chunks {len(chunks)}-D differ")
    out = []
    for dc, c in zip(data_chunks, chunks):
        borders = np.cumsum([int(v) for v in dc])[:-1]
        own = int(dc[0])
        if all(int(b) % int(c) == 0 for b in borders):
            out.append(int(c))
        elif all(int(b) % own == 0 for b in borders):
            out.append(own)
        else:
            out.append(int(c))
    return tuple(out)


def covering_block_shape(data_chunks: Sequence[Sequence[int]], chunks: Sequence[int], shape: Sequence[int]) -> tuple[int, ...]:
    """The smallest whole multiple of ``chunks`` (per axis, capped at ``shape``) that holds the largest of ``data_chunks``.

    A lazy array whose own chunks are larger than the store's (a
    segmentation's blocks of whole planes) is written in blocks of this shape
    so that each of its chunks is computed about once; blocks of the store's
    chunks would compute it once for every store chunk it covers.

    Parameters
    ----------
    data_chunks : sequence of sequences of int
        The lazy array's chunk sizes per axis (``dask.array.Array.chunks``).
    chunks, shape : sequence of int
        The store's chunk shape and shape, same axes.
    """
    if not (len(data_chunks) == len(chunks) == len(shape)):
        raise ValueError(f"data chunks {len(data_chunks)}-D, store chunks {len(chunks)}-D and shape {len(shape)}-D differ")
    out = []
    for dc, c, s in zip(data_chunks, chunks, shape):
        largest = max(int(v) for v in dc)
        out.append(min(int(s), -(-largest // int(c)) * int(c)))
    return tuple(out)


def centred_box(shape: Sequence[int], max_voxels: int) -> tuple[tuple[int, int], ...] | None:
    """The centred box (per axis start, stop) of at most ``max_voxels`` voxels in the volume's proportions; None when it fits."""
    n = math.prod(int(v) for v in shape)
    if max_voxels <= 0 or n <= max_voxels:
        return None
    f = (max_voxels / n) ** (1 / len(shape))
    sides = [max(2, int(math.floor(int(v) * f))) for v in shape]
    while math.prod(sides) > max_voxels and max(sides) > 2:
        sides[int(np.argmax(sides))] -= 1
    return tuple(((int(v) - s) // 2, (int(v) - s) // 2 + s) for v, s in zip(shape, sides))


def grouped_block_shape(shape: Sequence[int], chunks: Sequence[int], max_voxels: int) -> tuple[int, ...]:
    """Blocks of whole chunks, as few as hold at most ``max_voxels``: the volume, its longest side halved until it fits.

    A block is never smaller than one chunk (a chunk bigger than
    ``max_voxels`` is its own block). Small chunks grouped this way make
    fewer, larger tasks where a task's overhead would dominate.
    """
    block = [int(n) for n in shape]
    while int(np.prod(block)) > max_voxels:
        ax = int(np.argmax([b if b > c else 0 for b, c in zip(block, chunks)]))
        if block[ax] <= chunks[ax]:
            break
        block[ax] = int(chunks[ax]) * max(1, math.ceil(block[ax] / 2 / chunks[ax]))
    return tuple(block)


def grouped_blocks(arr: da.Array, max_voxels: int = 1 << 24) -> da.Array:
    """``arr`` rechunked to :func:`grouped_block_shape` (chunks merged, never split, when they are regular)."""
    block = grouped_block_shape(arr.shape, arr.chunksize, max_voxels)
    return arr if block == tuple(arr.chunksize) else arr.rechunk(block)


def _marker(markers: Path, index: tuple[int, ...]) -> Path:
    return markers / (".".join(str(i) for i in index) + ".done")


def record_total(markers: Path, total: int, grid: Sequence[Sequence[int]] | None = None) -> None:
    """Write how many blocks the write in ``markers`` has (and their sizes per axis), so progress can be told
    from outside and a resumed write knows what its markers mean (atomic)."""
    import json

    tmp = markers / f".{TOTAL_NAME}.tmp-{os.getpid()}"
    info: dict[str, Any] = {"total": int(total)}
    if grid is not None:
        info["grid"] = [[int(v) for v in c] for c in grid]
    tmp.write_text(json.dumps(info))
    os.replace(tmp, markers / TOTAL_NAME)


def _forget_other_grid(markers: Path, grid: Sequence[Sequence[int]]) -> None:
    """Remove the done markers of an earlier write whose blocks were cut otherwise (another worker memory, say):
    their indices name other regions. Markers without a recorded grid are kept (a write of the same store chunks)."""
    import json

    try:
        old = json.loads((markers / TOTAL_NAME).read_text()).get("grid")
    except (OSError, ValueError):
        return
    if old is not None and old != [[int(v) for v in c] for c in grid]:
        for marker in markers.glob("*.done"):
            marker.unlink()


def done_blocks(markers: Path | None) -> set[str]:
    """Names of the blocks already marked done in ``markers``."""
    if markers is None or not markers.exists():
        return set()
    return {p.name for p in markers.iterdir() if p.suffix == ".done"}


def _write_chunks(block: np.ndarray, store: str, region: tuple[slice, ...]) -> None:
    from pipeline.backend import to_numpy
    from pipeline.io.volume import open_array_cached

    # Every chunk of a block is written, fill-valued or not: zarr's check for
    # "equal to the fill value" costs as much as compressing the chunk, and the
    # done markers, not chunk presence, say what is complete.
    arr = open_array_cached(store, "r+").with_config({"write_empty_chunks": True})
    block = to_numpy(block).astype(arr.dtype, copy=False)
    # One chunk per write: zarr hands a value of exactly one chunk's shape to the
    # codecs as it is, where a larger value is first copied chunk by chunk into
    # fresh buffers on its single event-loop thread.
    offset = [r.start for r in region]
    for _, sub in block_regions(block.shape, arr.chunks):
        target = tuple(slice(o + s.start, o + s.stop) for o, s in zip(offset, sub))
        arr[target] = np.ascontiguousarray(block[sub])


def _mark_done(marker: str | None) -> None:
    if marker is not None:
        tmp = f"{marker}.tmp-{os.getpid()}"
        with open(tmp, "wb") as fh:
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, marker)


def _write_block(block: np.ndarray, store: str | list[str], region: tuple[slice, ...], marker: str | None) -> int:
    """Write one block (or, with several stores, channel ``i`` of a block to store ``i``), then mark it done."""
    if isinstance(store, list):
        for i, st in enumerate(store):
            _write_chunks(block[i], st, region)
    else:
        _write_chunks(block, store, region)
    _mark_done(marker)
    return int(np.prod([r.stop - r.start for r in region]))


def active_client() -> Any:
    try:
        from distributed import get_client

        return get_client()
    except (ImportError, ValueError):
        return None


def store_blocks(
    data: da.Array,
    target: zarr.Array | Sequence[zarr.Array],
    *,
    markers: str | os.PathLike[str] | None,
    progress: str | None = None,
    max_in_flight: int | None = None,
    block_shape: Sequence[int] | None = None,
    cover_data_chunks: bool = False,
    max_block_bytes: int | None = None,
) -> int:
    """Compute ``data`` block by block into ``target``, skipping blocks marked done.

    Parameters
    ----------
    data : dask.array.Array
        Lazy array of the target's shape. Rechunked to the target's chunks.
    target : zarr.Array or sequence of zarr.Array
        Destination array, opened writable, local store. With several arrays
        (of one shape and chunking), ``data`` has a leading axis of one channel
        per array, and every block writes all of them from one computation
        (a segmentation's probability and mask).
    markers : path, optional
        Folder of per-block done markers. None writes every block and keeps
        no markers (the caller makes the whole write atomic instead).
    progress : str, optional
        Label of a progress bar over blocks.
    max_in_flight : int, optional
        Blocks computed at once; bounds memory. Default: one per worker thread
        plus half as many queued, so workers never wait and memory stays bounded.
    block_shape : sequence of int, optional
        Shape of one unit of work: whole multiples of the target's chunks
        (an edge may be the full extent). Default: one chunk.
    cover_data_chunks : bool
        Without ``block_shape``: ``data``'s own chunks are the blocks where they
        are whole store chunks (:func:`nests`; a store made with
        :func:`nesting_chunks`), else blocks that hold ``data``'s largest chunk
        (:func:`covering_block_shape`). Either way a lazy array of chunks
        larger than the store's is computed once per chunk, not once per store
        chunk.
    max_block_bytes : int, optional
        With ``cover_data_chunks``: the most bytes of ``data`` one block may
        hold (all channels); a larger one falls back to the store's chunks,
        which bounds memory at the price of recomputing ``data``'s chunks (a
        worker holds a block, its parts and their casts at once).

    Returns
    -------
    int
        Number of blocks computed in this call (blocks already done excluded).
    """
    targets = list(target) if isinstance(target, (list, tuple)) else [target]
    several = isinstance(target, (list, tuple))
    target = targets[0]
    expected = (len(targets), *target.shape) if several else tuple(target.shape)
    if tuple(data.shape) != expected or any(t.shape != target.shape or t.chunks != target.chunks for t in targets):
        raise ValueError(f"data shape {data.shape} does not match the store shape {expected}")
    chunks = tuple(int(c) for c in target.chunks)
    per_channel = (len(targets) if several else 1) * data.dtype.itemsize
    grid: tuple[tuple[int, ...], ...] | None = None  # blocks of the data's own (possibly irregular) chunks
    if block_shape is None and cover_data_chunks:
        own = tuple(tuple(int(v) for v in c) for c in data.chunks[-len(chunks):])
        if nests(own, chunks):
            if max_block_bytes is None or int(np.prod([max(c) for c in own])) * per_channel <= max_block_bytes:
                grid = own
        else:
            cover = covering_block_shape(own, chunks, target.shape)
            if max_block_bytes is None or int(np.prod(cover)) * per_channel <= max_block_bytes:
                block_shape = cover
    if block_shape is not None:
        block_shape = tuple(min(int(b), int(s)) for b, s in zip(block_shape, target.shape))
        for b, c, s in zip(block_shape, chunks, target.shape):
            if b % c and b != s:
                raise ValueError(f"block shape {block_shape} is not a whole multiple of the chunks {chunks}")
        chunks = block_shape
    if grid is None:
        grid = tuple(tuple(min(int(c), int(s) - st) for st in range(0, int(s), int(c))) for c, s in zip(chunks, target.shape))
    data = data.rechunk(((len(targets),), *grid) if several else grid)
    paths = [str(Path(str(t.store.root)) / t.path) if t.path else str(t.store.root) for t in targets]
    store: str | list[str] = paths if several else paths[0]
    marker_dir = Path(markers) if markers is not None else None
    if marker_dir is not None:
        marker_dir.mkdir(parents=True, exist_ok=True)
    if marker_dir is not None:
        _forget_other_grid(marker_dir, grid)
    done = done_blocks(marker_dir)
    todo = [
        (index, region)
        for index, region in chunk_regions(grid)
        if marker_dir is None or _marker(marker_dir, index).name not in done
    ]
    total = int(np.prod(data.numblocks))
    if marker_dir is not None:
        record_total(marker_dir, total, grid)
    lead = (0,) if several else ()
    # data is chunked by block, so each block is one dask chunk: its delayed
    # value (with the graph culled to that block) is the chunk itself, where
    # passing data.blocks[...] would concatenate a copy of it.
    tasks = [
        dask.delayed(_write_block)(
            data.blocks[lead + index].to_delayed(optimize_graph=True).item(),
            store,
            region,
            None if marker_dir is None else str(_marker(marker_dir, index)),
            dask_key_name=f"store-block-{paths[0]}-{'.'.join(map(str, index))}",
        )
        for index, region in todo
    ]
    compute_tasks(tasks, progress=progress, total=total, max_in_flight=max_in_flight)
    return len(todo)


def compute_tasks(tasks: Sequence[Any], *, progress: str | None = None, total: int | None = None,
                  max_in_flight: int | None = None) -> list[Any]:
    """Compute independent delayed tasks (blocks) on the active Dask client, or on threads without one.

    Parameters
    ----------
    tasks : sequence of dask.delayed
        One per block; each is submitted with its own (culled) graph, so that
        no task carries the graph of the whole volume.
    progress : str, optional
        Label of a progress bar over blocks.
    total : int, optional
        Blocks of the whole job when some were done before (the bar starts at
        ``total - len(tasks)``).
    max_in_flight : int, optional
        Blocks computed at once; bounds memory. Default: one per worker thread
        plus half as many queued, so workers never wait and memory stays bounded.

    Returns
    -------
    list
        The tasks' results, in the order of ``tasks`` (keep them small: they
        are gathered to the caller).
    """
    client = active_client()
    if max_in_flight is None:
        threads = sum(client.nthreads().values()) if client is not None else (os.cpu_count() or 1)
        max_in_flight = max(2, threads + max(1, threads // 2))
    tasks = list(tasks)
    results: list[Any] = [None] * len(tasks)
    total = len(tasks) if total is None else int(total)
    with progress_bar(total=total, initial=total - len(tasks), desc=progress, unit="block") as bar:
        if client is not None:
            from distributed import as_completed

            pending = iter(enumerate(tasks))
            where: dict[str, list[int]] = {}  # equal tasks share a key: one index per submission

            def submit(item: tuple[int, Any]) -> Any:
                future = client.compute(item[1])
                where.setdefault(future.key, []).append(item[0])
                return future

            queue = as_completed([submit(item) for item in itertools.islice(pending, max_in_flight)])
            for fut in queue:
                results[where[fut.key].pop()] = fut.result()
                fut.release()
                bar.update(1)
                nxt = next(pending, None)
                if nxt is not None:
                    queue.add(submit(nxt))
        else:
            _compute_in_threads(tasks, min(max_in_flight, os.cpu_count() or 1), bar, results)
    return results


def _compute_in_threads(tasks: list[Any], n_threads: int, bar: Any, results: list[Any]) -> None:
    """Compute independent block tasks on ``n_threads`` threads, each block's graph on the synchronous scheduler.

    A thread takes the next block as soon as it is free (no batch barrier), and
    only ``n_threads`` blocks are in memory at once. ``results[i]`` receives
    the result of ``tasks[i]``. The first error cancels the blocks not started
    and is raised.
    """
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    pool = ThreadPoolExecutor(max_workers=max(1, n_threads), thread_name_prefix="porelab-block")
    try:
        running = {pool.submit(dask.compute, t, scheduler="sync"): i for i, t in enumerate(tasks)}
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                results[running.pop(fut)] = fut.result()[0]
                bar.update(1)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
