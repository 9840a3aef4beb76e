"""Resumable two-pass writes: values that need a statistic of the whole volume first.

Some results (a volume normalised by its own percentiles, say) need every
block once for a statistic before any block can be finished. Computing the
blocks twice costs a second evaluation of whatever makes them (a filter);
keeping them in memory is not possible out-of-core. Here the store itself
holds them in between:

1. pass 1 writes each block of ``data`` as it is, and reduces a small
   ``summary`` of it (a histogram) over all blocks; blocks done by an
   earlier, interrupted call are read back for their summary instead;
2. ``finish(total)`` turns the summed summary into a small JSON state,
   written next to the markers;
3. pass 2 rewrites every block in place as ``apply(block, state)``.

Pass 2 changes blocks in place, so a block must never be applied twice:
each rewrite leaves a ``.start`` marker before it writes and a ``.done``
marker after. A block found started but not done (killed in between) may
hold either value, so it is recomputed from ``data`` instead of being read.
Writes are chunk-aligned and atomic per chunk (zarr writes a temporary
file and renames it).
"""

from __future__ import annotations

import itertools
import json
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import zarr

from pipeline.engine.blocks import active_client, block_regions, done_blocks, record_total
from pipeline.progress import progress_bar

__all__ = ["TwoPassResult", "store_two_pass"]

Region = tuple[slice, ...]
Index = tuple[int, ...]
#: ``collect(fn)``: ``fn(block)`` of every stored block, as a list.
Collect = Callable[[Callable[[Any], Any]], list[Any]]


@dataclass(frozen=True)
class TwoPassResult:
    """What :func:`store_two_pass` did.

    Attributes
    ----------
    computed : int
        Blocks of ``data`` computed in pass 1 of this call.
    recomputed : int
        Blocks computed again in pass 2 because an interrupted rewrite left
        them in an unknown state.
    state : dict
        The JSON state ``finish`` returned (this call's or an earlier one's).
    """

    computed: int
    recomputed: int
    state: dict[str, Any]


def _name(index: Index, suffix: str) -> str:
    return ".".join(str(i) for i in index) + suffix


def _touch(path: Path) -> None:
    """Create ``path`` durably and atomically (a marker file)."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as fh:
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _store_path(target: zarr.Array) -> str:
    root = Path(str(target.store.root))
    return str(root / target.path) if target.path else str(root)


def _open(store: str) -> zarr.Array:
    # every chunk written, fill-valued or not: markers, not chunk files, say what is done
    from pipeline.io.volume import open_array_cached

    return open_array_cached(store, "r+").with_config({"write_empty_chunks": True})


def _write(block: Any, store: str, region: Region) -> np.ndarray:
    from pipeline.backend import to_numpy

    arr = _open(store)
    value = np.ascontiguousarray(to_numpy(block).astype(arr.dtype, copy=False))
    arr[region] = value
    return value


def _pass1_compute(block: Any, store: str, region: Region, summary: Callable[[Any], np.ndarray], done: str) -> np.ndarray:
    """Write one block, mark it done, return the summary of the values as stored."""
    value = _write(block, store, region)
    _touch(Path(done))
    return np.asarray(summary(value))


def _pass1_read(store: str, region: Region, fn: Callable[[Any], Any]) -> Any:
    """``fn`` of a stored block (the summary of a block written by an earlier call, say)."""
    from pipeline.io.volume import open_array_cached

    return fn(open_array_cached(store)[region])


def _pass2_write(
    source: Any, store: str, region: Region, apply: Callable[[Any, dict[str, Any]], Any], state: dict[str, Any], start: str, done: str
) -> int:
    """Rewrite one block as ``apply(source, state)`` between a start and a done marker."""
    value = apply(source, state)
    _touch(Path(start))
    _write(value, store, region)
    _touch(Path(done))
    return 1


def _pass2_read(store: str, region: Region) -> np.ndarray:
    from pipeline.io.volume import open_array_cached

    return open_array_cached(store)[region]


def _run(tasks: list[Any], on_result: Callable[[Any], None], *, label: str | None, total: int, max_in_flight: int | None) -> None:
    """Compute ``tasks`` (delayed) with at most ``max_in_flight`` at once, handing each result to ``on_result``."""
    client = active_client()
    if max_in_flight is None:
        threads = sum(client.nthreads().values()) if client is not None else (os.cpu_count() or 1)
        max_in_flight = max(2, threads + max(1, threads // 2))
    with progress_bar(total=total, initial=total - len(tasks), desc=label, unit="block") as bar:
        if client is not None:
            from distributed import as_completed

            pending = iter(tasks)
            queue = as_completed(client.compute(list(itertools.islice(pending, max_in_flight))))
            for fut in queue:
                on_result(fut.result())
                fut.release()
                bar.update(1)
                nxt = next(pending, None)
                if nxt is not None:
                    queue.add(client.compute(nxt))
        else:
            for start in range(0, len(tasks), max_in_flight):
                for result in dask.compute(*tasks[start : start + max_in_flight]):
                    on_result(result)
                bar.update(len(tasks[start : start + max_in_flight]))


def _sum_into(acc: list[np.ndarray | None]) -> Callable[[np.ndarray], None]:
    def add(value: np.ndarray) -> None:
        acc[0] = value.copy() if acc[0] is None else acc[0] + value

    return add


def _pass1(
    data: da.Array,
    store: str,
    regions: list[tuple[Index, Region]],
    markers: Path,
    summary: Callable[[Any], np.ndarray],
    *,
    label: str | None,
    max_in_flight: int | None,
) -> tuple[int, np.ndarray]:
    """Write the blocks not done yet and sum the summaries of all blocks; returns (computed, total)."""
    done = done_blocks(markers)
    token = uuid.uuid4().hex[:8]
    tasks = []
    computed = 0
    for index, region in regions:
        key = ".".join(map(str, index))
        if _name(index, ".done") in done:
            tasks.append(dask.delayed(_pass1_read)(store, region, summary, dask_key_name=f"two-pass-read-{store}-{key}-{token}"))
        else:
            marker = str(markers / _name(index, ".done"))
            tasks.append(
                dask.delayed(_pass1_compute)(data.blocks[index], store, region, summary, marker, dask_key_name=f"two-pass-1-{store}-{key}-{token}")
            )
            computed += 1
    acc: list[np.ndarray | None] = [None]
    _run(tasks, _sum_into(acc), label=label, total=len(tasks), max_in_flight=max_in_flight)
    assert acc[0] is not None
    return computed, acc[0]


def _pass2(
    data: da.Array,
    store: str,
    regions: list[tuple[Index, Region]],
    markers: Path,
    apply: Callable[[Any, dict[str, Any]], Any],
    state: dict[str, Any],
    *,
    label: str | None,
    max_in_flight: int | None,
) -> int:
    """Rewrite the blocks not done yet in place; returns how many were recomputed from ``data``."""
    names = {p.name for p in markers.iterdir()} if markers.exists() else set()
    token = uuid.uuid4().hex[:8]
    tasks = []
    recomputed = 0
    for index, region in regions:
        if _name(index, ".done") in names:
            continue
        key = ".".join(map(str, index))
        if _name(index, ".start") in names:  # interrupted rewrite: the stored block may be either value
            source = data.blocks[index]
            recomputed += 1
        else:
            source = dask.delayed(_pass2_read)(store, region, dask_key_name=f"two-pass-read2-{store}-{key}-{token}")
        start, done = (str(markers / _name(index, s)) for s in (".start", ".done"))
        tasks.append(dask.delayed(_pass2_write)(source, store, region, apply, state, start, done, dask_key_name=f"two-pass-2-{store}-{key}-{token}"))
    _run(tasks, lambda _: None, label=label, total=len(regions), max_in_flight=max_in_flight)
    return recomputed


def _collect_stored(
    store: str, regions: list[tuple[Index, Region]], fn: Callable[[Any], Any], *, max_in_flight: int | None
) -> list[Any]:
    """``fn`` of every stored block, in block order (a read pass)."""
    token = uuid.uuid4().hex[:8]
    tasks = [
        dask.delayed(_pass1_read)(store, region, fn, dask_key_name=f"two-pass-collect-{store}-{'.'.join(map(str, index))}-{token}")
        for index, region in regions
    ]
    results: list[Any] = []
    _run(tasks, results.append, label=None, total=len(tasks), max_in_flight=max_in_flight)
    return results


def _read_state(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def _write_state(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, path)


def store_two_pass(
    data: da.Array,
    target: zarr.Array,
    *,
    markers: str | os.PathLike[str],
    summary: Callable[[Any], np.ndarray],
    finish: Callable[[np.ndarray, Collect], dict[str, Any]],
    apply: Callable[[Any, dict[str, Any]], Any],
    progress: str | None = None,
    max_in_flight: int | None = None,
) -> TwoPassResult:
    """Write ``apply(data, finish(sum of summary(block)))`` into ``target``, evaluating ``data`` once.

    Parameters
    ----------
    data : dask.array.Array
        Lazy array of the target's shape; rechunked to the target's chunks
        (one block = one chunk). Its blocks are stored as the target's dtype.
    target : zarr.Array
        Destination array, opened writable, local store. Holds ``data``'s
        blocks between the passes.
    markers : path
        Folder of this write's markers and state (``pass1/``, ``pass2/``,
        ``state.json``); keep it to resume, remove it with the store.
    summary : callable
        ``summary(block) -> ndarray`` of one block (NumPy, the values as
        stored); summed over all blocks. Runs on the workers.
    finish : callable
        ``finish(total, collect) -> dict``: the JSON-serialisable state
        ``apply`` needs. Runs here, once. ``collect(fn)`` gives ``fn`` of
        every stored block as a list (one read pass; keep results small),
        for statistics that need a second look.
    apply : callable
        ``apply(block, state) -> block``: the final values of one block
        (elementwise in effect: a block is computed from itself only).
        Runs on the workers.
    progress : str, optional
        Label of the progress bars (``"... (1/2)"``, ``"... (2/2)"``).
    max_in_flight : int, optional
        Blocks computed at once; default one per worker thread plus half.

    Returns
    -------
    TwoPassResult
    """
    if tuple(data.shape) != tuple(target.shape):
        raise ValueError(f"data shape {data.shape} does not match the store shape {target.shape}")
    chunks = tuple(int(c) for c in target.chunks)
    data = data.rechunk(chunks)
    store = _store_path(target)
    root = Path(markers)
    p1, p2, state_file = root / "pass1", root / "pass2", root / "state.json"
    for d in (p1, p2):
        d.mkdir(parents=True, exist_ok=True)
    regions = list(block_regions(target.shape, chunks))
    for d in (p1, p2):
        record_total(d, len(regions))
    label1, label2 = (None, None) if progress is None else (f"{progress} (1/2)", f"{progress} (2/2)")
    computed = 0
    state = _read_state(state_file)
    if state is None:
        computed, total = _pass1(data, store, regions, p1, summary, label=label1, max_in_flight=max_in_flight)

        def collect(fn: Callable[[Any], Any]) -> list[Any]:
            return _collect_stored(store, regions, fn, max_in_flight=max_in_flight)

        state = finish(total, collect)
        _write_state(state_file, state)
    recomputed = _pass2(data, store, regions, p2, apply, state, label=label2, max_in_flight=max_in_flight)
    return TwoPassResult(computed, recomputed, state)

