"""Reading a job's log file, whole or as it grows."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["follow_file"]


def follow_file(path: Path, write: Callable[[str], Any], *, until: Callable[[], bool] | None, poll_s: float = 0.5) -> None:
    """Hand ``path``'s text to ``write``; with ``until``, keep handing what is appended until ``until()`` is true.

    The file may not exist yet (a job still queued): following waits for it.
    After ``until()`` turns true the rest of the file is read once more, so
    the last lines a job wrote are not lost.
    """
    offset = 0

    def drain() -> None:
        nonlocal offset
        try:
            with open(path, "rb") as fh:
                fh.seek(offset)
                data = fh.read()
        except FileNotFoundError:
            return
        if data:
            offset += len(data)
            write(data.decode("utf-8", errors="replace"))

    drain()
    if until is None:
        return
    while not until():
        time.sleep(poll_s)
        drain()
    drain()
