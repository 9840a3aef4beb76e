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
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import zarr

from pipeline.progress import progress_bar

__all__ = ["store_blocks", "block_regions", "covering_block_shape", "done_blocks", "record_total", "TOTAL_NAME"]

#: file in a marker folder that says how many blocks the write has (read by ``porelab status``)
TOTAL_NAME = "blocks.json"


def block_regions(shape: Sequence[int], chunks: Sequence[int]) -> Iterator[tuple[tuple[int, ...], tuple[slice, ...]]]:
    """Yield ``(block_index, region)`` for a regular chunk grid over ``shape``."""
    grids = [range(0, int(s), int(c)) for s, c in zip(shape, chunks)]
    for starts in itertools.product(*grids):
        index = tuple(st // int(c) for st, c in zip(starts, chunks))
        region = tuple(slice(st, min(st + int(c), int(s))) for st, c, s in zip(starts, chunks, shape))
        yield index, region


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


def _marker(markers: Path, index: tuple[int, ...]) -> Path:
    return markers / (".".join(str(i) for i in index) + ".done")


def record_total(markers: Path, total: int) -> None:
    """Write how many blocks the write in ``markers`` has, so progress can be told from outside (atomic)."""
    import json

    tmp = markers / f".{TOTAL_NAME}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps({"total": int(total)}))
    os.replace(tmp, markers / TOTAL_NAME)


def done_blocks(markers: Path | None) -> set[str]:
    """Names of the blocks already marked done in ``markers``."""
    if markers is None or not markers.exists():
        return set()
    return {p.name for p in markers.iterdir() if p.suffix == ".done"}


def _write_chunks(block: np.ndarray, store: str, region: tuple[slice, ...]) -> None:
    from pipeline.backend import to_numpy

    # Every chunk of a block is written, fill-valued or not: zarr's check for
    # "equal to the fill value" costs as much as compressing the chunk, and the
    # done markers, not chunk presence, say what is complete.
    arr = zarr.open_array(store, mode="r+").with_config({"write_empty_chunks": True})
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


def _active_client() -> Any:
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
        Without ``block_shape``: blocks that hold ``data``'s own largest chunk
        (:func:`covering_block_shape`), so that a lazy array of chunks larger
        than the store's is computed once per chunk, not once per store chunk.
    max_block_bytes : int, optional
        With ``cover_data_chunks``: the most bytes of ``data`` one covering
        block may hold (all channels); a larger one falls back to the store's
        chunks, which bounds memory at the price of recomputing ``data``'s
        chunks (a worker holds a block, its parts and their casts at once).

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
    if block_shape is None and cover_data_chunks:
        cover = covering_block_shape(data.chunks[-len(chunks):], chunks, target.shape)
        nbytes = int(np.prod(cover)) * (len(targets) if several else 1) * data.dtype.itemsize
        if max_block_bytes is None or nbytes <= max_block_bytes:
            block_shape = cover
    if block_shape is not None:
        block_shape = tuple(min(int(b), int(s)) for b, s in zip(block_shape, target.shape))
        for b, c, s in zip(block_shape, chunks, target.shape):
            if b % c and b != s:
                raise ValueError(f"block shape {block_shape} is not a whole multiple of the chunks {chunks}")
        chunks = block_shape
    data = data.rechunk(((len(targets),), *chunks) if several else chunks)
    paths = [str(Path(str(t.store.root)) / t.path) if t.path else str(t.store.root) for t in targets]
    store: str | list[str] = paths if several else paths[0]
    marker_dir = Path(markers) if markers is not None else None
    if marker_dir is not None:
        marker_dir.mkdir(parents=True, exist_ok=True)
    done = done_blocks(marker_dir)
    todo = [
        (index, region)
        for index, region in block_regions(target.shape, chunks)
        if marker_dir is None or _marker(marker_dir, index).name not in done
    ]
    total = int(np.prod(data.numblocks))
    if marker_dir is not None:
        record_total(marker_dir, total)
    lead = (0,) if several else ()
    client = _active_client()
    if max_in_flight is None:
        threads = sum(client.nthreads().values()) if client is not None else (os.cpu_count() or 1)
        max_in_flight = max(2, threads + max(1, threads // 2))
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
    with progress_bar(total=total, initial=total - len(todo), desc=progress, unit="block") as bar:
        if client is not None:
            from distributed import as_completed

            pending = iter(tasks)
            futures = client.compute(list(itertools.islice(pending, max_in_flight)))
            queue = as_completed(futures)
            for fut in queue:
                fut.result()
                bar.update(1)
                nxt = next(pending, None)
                if nxt is not None:
                    queue.add(client.compute(nxt))
        else:
            _compute_in_threads(tasks, min(max_in_flight, os.cpu_count() or 1), bar)
    return len(todo)


def _compute_in_threads(tasks: list[Any], n_threads: int, bar: Any) -> None:
    """Compute independent block tasks on ``n_threads`` threads, each block's graph on the synchronous scheduler.

    A thread takes the next block as soon as it is free (no batch barrier), and
    only ``n_threads`` blocks are in memory at once. The first error cancels the
    blocks not started and is raised.
    """
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    pool = ThreadPoolExecutor(max_workers=max(1, n_threads), thread_name_prefix="porelab-block")
    try:
        running = {pool.submit(dask.compute, t, scheduler="sync") for t in tasks}
        while running:
            done, running = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                fut.result()
                bar.update(1)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
