"""Test-wide settings: quiet progress bars, caches in the repo, no cluster left behind."""

from __future__ import annotations

import os
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("PORELAB_PROGRESS", "0")
os.environ.setdefault("MPLCONFIGDIR", str(REPO / ".cache" / "matplotlib"))
os.environ.setdefault("XDG_CACHE_HOME", str(REPO / ".cache" / "xdg"))
os.environ.setdefault("PORELAB_CACHE", str(REPO / ".cache"))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

_CLUSTER_WORDS = ("dask", "distributed", "ray", "raylet", "gcs_server", "plasma")


def _cluster_children() -> list[str]:
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            cmd = " ".join(child.cmdline())
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        if any(word in cmd for word in _CLUSTER_WORDS):
            found.append(f"{child.pid}: {cmd[:120]}")
    return found


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run when a Dask or Ray process started by the tests is still alive."""
    import time

    deadline = time.monotonic() + 15
    left = _cluster_children()
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = _cluster_children()
    if left:
        print("\nDask or Ray processes left behind by the tests:\n  " + "\n  ".join(left))
        session.exitstatus = 1
