"""Ingest streams: a stack 4x larger than the worker's memory limit goes through under the limit."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import psutil

from pipeline.engine.dask_cluster import dask_client
from pipeline.io.ingest import ingest
from pipeline.io.volume import open_volume

LIMIT = 400 * 2**20


def test_ingest_stack_four_times_worker_memory(tmp_path: Path) -> None:
    shape = (800, 1024, 1040)  # uint16: 1.7 GB, over 4x the 400 MiB limit
    stack = np.lib.format.open_memmap(tmp_path / "big.npy", mode="w+", dtype=np.uint16, shape=shape)
    for z in range(0, shape[0], 100):
        stack[z : z + 100] = (np.arange(z, z + 100, dtype=np.uint16)[:, None, None] * 7 + np.arange(shape[2], dtype=np.uint16))
    stack.flush()
    del stack
    assert (tmp_path / "big.npy").stat().st_size >= 4 * LIMIT

    peak = {"rss": 0}
    with dask_client(n_workers=1, threads_per_worker=1, memory_limit=LIMIT, local_directory=tmp_path / "dask") as client:
        pids = list(client.run(os.getpid).values())
        procs = [psutil.Process(pid) for pid in pids]
        stop = threading.Event()

        def watch() -> None:
            while not stop.is_set():
                peak["rss"] = max(peak["rss"], sum(p.memory_info().rss for p in procs))
                time.sleep(0.02)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            ingest(tmp_path / "big.npy", tmp_path / "big.zarr", (5, 5, 5), chunks=(16, 256, 256), progress=None)
        finally:
            stop.set()
            watcher.join()
    assert peak["rss"] < LIMIT, f"worker peaked at {peak['rss'] / 2**20:.0f} MiB over the {LIMIT / 2**20:.0f} MiB limit"
    vol = open_volume(tmp_path / "big.zarr")
    assert vol.shape == shape
    for z in (0, 399, 799):
        expected = (np.uint16(z) * np.uint16(7) + np.arange(shape[2], dtype=np.uint16)).astype(np.uint16)
        np.testing.assert_array_equal(vol[z, 517].values, expected)
