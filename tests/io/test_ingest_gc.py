"""ingest() keeps the garbage collector off the objects of the imports while it writes, and restores it after."""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import pytest

import pipeline.io.ingest as ingest_mod
from pipeline.io.ingest import gc_frozen, ingest


def test_gc_frozen_freezes_inside_and_restores() -> None:
    assert gc.get_freeze_count() == 0
    with gc_frozen():
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0


def test_gc_frozen_restores_on_error() -> None:
    with pytest.raises(RuntimeError):
        with gc_frozen():
            raise RuntimeError("boom")
    assert gc.get_freeze_count() == 0


def test_gc_frozen_leaves_a_callers_freeze_alone() -> None:
    gc.freeze()
    try:
        before = gc.get_freeze_count()
        with gc_frozen():
            pass
        assert gc.get_freeze_count() == before
    finally:
        gc.unfreeze()


def test_ingest_writes_with_the_gc_frozen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    real = ingest_mod.store_blocks

    def spy(*args: object, **kwargs: object) -> int:
        seen.append(gc.get_freeze_count())
        return real(*args, **kwargs)

    monkeypatch.setattr(ingest_mod, "store_blocks", spy)
    data = np.arange(4 * 8 * 8, dtype=np.uint16).reshape(4, 8, 8)
    np.save(tmp_path / "s.npy", data)
    ingest(tmp_path / "s.npy", tmp_path / "s.zarr", (1, 1, 1), progress=None)
    assert seen and seen[0] > 0
    assert gc.get_freeze_count() == 0
