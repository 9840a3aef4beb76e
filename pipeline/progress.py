"""Progress bars for long work, quiet when there is no label or no terminal wish."""

from __future__ import annotations

import functools
import os
import sys
from typing import Any

import dask
from tqdm.auto import tqdm

__all__ = ["progress_bar", "compute"]


def progress_bar(*, total: int | None, desc: str | None, unit: str = "it", initial: int = 0, **kwargs: Any) -> tqdm:
    """Return a tqdm bar on stderr; disabled when ``desc`` is None or PORELAB_PROGRESS=0."""
    disabled = not _enabled(desc)
    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit=unit,
        disable=disabled,
        file=sys.stderr,
        dynamic_ncols=True,
        leave=False,
        **kwargs,
    )


def _enabled(desc: str | None) -> bool:
    return desc is not None and os.environ.get("PORELAB_PROGRESS", "1") != "0"


def compute(*collections: Any, desc: str | None) -> tuple[Any, ...]:
    """``dask.compute(*collections)`` with a progress bar over its tasks, labelled ``desc``.

    On the active Dask client the bar follows the scheduler's count of the
    graph's tasks still to run; without one it counts the local scheduler's
    tasks. ``desc=None`` (or PORELAB_PROGRESS=0): plain ``dask.compute``.
    """
    if not _enabled(desc):
        return dask.compute(*collections)
    try:
        from distributed import get_client

        client = get_client()
    except (ImportError, ValueError):
        client = None
    if client is None:
        from tqdm.dask import TqdmCallback

        with TqdmCallback(desc=desc, unit="task", file=sys.stderr, dynamic_ncols=True, leave=False):
            return dask.compute(*collections)
    futures = client.compute(list(collections))
    _scheduler_bar_class()(futures, desc)  # returns when every task has run (or one failed)
    return tuple(client.gather(futures))


@functools.cache
def _scheduler_bar_class() -> type:
    """Distributed's text bar drawn by tqdm (built on first use: distributed is not imported before)."""
    from distributed.diagnostics.progressbar import TextProgressBar

    class SchedulerBar(TextProgressBar):
        """Distributed's text progress bar, drawn by tqdm on stderr."""

        def __init__(self, futures: list[Any], desc: str) -> None:
            self._bar = progress_bar(total=None, desc=desc, unit="task")
            try:
                super().__init__(futures, interval="200ms", complete=True)
            finally:
                self._bar.close()

        def _draw_bar(self, remaining: int, all: int, **kwargs: Any) -> None:  # noqa: A002 - distributed's name
            if self._bar.total != all:
                self._bar.total = all
            self._bar.n = all - remaining
            self._bar.refresh()

        def _draw_stop(self, **kwargs: Any) -> None:
            pass

    return SchedulerBar
