"""Give freed heap memory back to the system when a Dask worker nears its memory limit.

Local workers keep slice-sized temporaries on the heap (glibc's mmap threshold
is raised, see :data:`pipeline.engine.dask_cluster.MMAP_THRESHOLD`), which is
fast but leaves free memory inside the process. Dask pauses a worker whose
process memory passes 80 % of its limit; with nothing to spill it stays paused
for good. :class:`TrimWhenHigh` checks the worker's resident memory once a
second and calls ``malloc_trim(0)`` when it is above ``fraction`` of the limit,
so only memory that is really in use counts.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from typing import Any

import psutil
from distributed import WorkerPlugin

__all__ = ["TrimWhenHigh", "trim_heap"]


@functools.cache
def _libc() -> Any:
    name = ctypes.util.find_library("c")
    try:
        lib = ctypes.CDLL(name)
        lib.malloc_trim  # noqa: B018 - glibc only (not musl, not macOS)
    except (OSError, AttributeError, TypeError):
        return None
    return lib


def trim_heap() -> bool:
    """Return free heap pages of every malloc arena to the system; False where libc has no ``malloc_trim``."""
    lib = _libc()
    if lib is None:
        return False
    lib.malloc_trim(0)
    return True


class TrimWhenHigh(WorkerPlugin):
    """Worker plugin: ``malloc_trim(0)`` each ``interval_ms`` while RSS is above ``fraction`` of the memory limit.

    Parameters
    ----------
    fraction : float
        Share of the worker's memory limit above which the heap is trimmed
        (under Dask's pause threshold, 0.8 by default).
    interval_ms : int
        How often the resident memory is looked at, ms.
    """

    name = "porelab-trim-when-high"

    def __init__(self, fraction: float = 0.7, interval_ms: int = 1000) -> None:
        if not 0 < fraction < 1:
            raise ValueError(f"fraction must be in (0, 1); got {fraction}")
        self.fraction = fraction
        self.interval_ms = interval_ms
        self.trims = 0
        self._callback: Any = None

    def setup(self, worker: Any) -> None:
        from tornado.ioloop import PeriodicCallback

        limit = worker.memory_manager.memory_limit
        if not limit or _libc() is None:
            return
        process = psutil.Process()
        threshold = self.fraction * limit

        def check() -> None:
            if process.memory_info().rss > threshold:
                trim_heap()
                self.trims += 1

        self._callback = PeriodicCallback(check, self.interval_ms)
        self._callback.start()

    def teardown(self, worker: Any) -> None:
        if self._callback is not None:
            self._callback.stop()
