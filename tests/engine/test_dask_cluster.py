"""The default local Dask cluster: loopback only, no profiler history in worker memory, heap-friendly malloc, scratch removed."""

from __future__ import annotations

import os
import time
from pathlib import Path

import dask.array as da

from pipeline.engine.dask_cluster import LARGE_GRAPH, MMAP_THRESHOLD, dask_client


def _history(dask_worker) -> int:  # noqa: ANN001
    return len(dask_worker.profile_history)


def test_workers_keep_no_profile_history_by_default(tmp_path: Path) -> None:
    import dask
    import distributed  # noqa: F401 - loads distributed's config defaults

    scratch = tmp_path / "scratch"
    default = dask.config.get("distributed.admin.large-graph-warning-threshold")
    with dask_client(n_workers=1, memory_limit="1GiB", local_directory=scratch) as client:
        assert all(a.startswith("tcp://127.0.0.1:") for a in client.scheduler_info()["workers"])
        # porelab's own graphs carry per-slab arrays: no "Sending large graph" warning under 256 MB
        assert dask.config.get("distributed.admin.large-graph-warning-threshold") == LARGE_GRAPH
        da.random.random((400, 400), chunks=100).dot(da.ones((400, 400), chunks=100)).sum().compute()
        time.sleep(2.5)  # the profiler cycles once a second
        assert list(client.run(_history).values()) == [0]
    assert not scratch.exists()
    assert dask.config.get("distributed.admin.large-graph-warning-threshold") == default


def _malloc_env() -> tuple[str | None, str | None]:
    return os.environ.get("MALLOC_MMAP_THRESHOLD_"), os.environ.get("MALLOC_TRIM_THRESHOLD_")


def test_workers_reuse_heap_memory_for_slice_temporaries(tmp_path: Path) -> None:
    # dask's nanny freezes glibc's mmap threshold at 128 KiB (MALLOC_TRIM_THRESHOLD_); porelab
    # raises it so slice-sized temporaries are not a fresh mmap each, and keeps trimming on
    with dask_client(n_workers=1, memory_limit="1GiB", local_directory=tmp_path / "s") as client:
        assert list(client.run(_malloc_env).values()) == [(str(MMAP_THRESHOLD), "65536")]


def _trims(dask_worker) -> int:  # noqa: ANN001
    return dask_worker.plugins["porelab-trim-when-high"].trims


def test_workers_trim_the_heap_when_memory_is_high(tmp_path: Path) -> None:
    from pipeline.engine.worker_memory import TrimWhenHigh, trim_heap

    assert trim_heap()  # glibc here
    with dask_client(n_workers=1, memory_limit="1GiB", local_directory=tmp_path / "s") as client:
        time.sleep(1.5)
        assert list(client.run(_trims).values()) == [0]  # a fresh worker is far under 70 % of 1 GiB
        client.register_plugin(TrimWhenHigh(fraction=0.01, interval_ms=100))  # replaces it: always "high"
        time.sleep(1.0)
        assert list(client.run(_trims).values())[0] >= 3


def test_profile_on_when_asked(tmp_path: Path) -> None:
    with dask_client(n_workers=1, memory_limit="1GiB", local_directory=tmp_path / "s", profile=True) as client:
        time.sleep(2.5)
        assert list(client.run(_history).values())[0] > 0


def test_gpu_layout_is_one_single_threaded_worker_unless_set() -> None:
    from pipeline.engine.dask_cluster import gpu_worker_layout

    assert gpu_worker_layout(None, None) == (1, 1)
    assert gpu_worker_layout(4, None) == (4, 1)
    assert gpu_worker_layout(None, 3) == (1, 3)
