"""Two-pass writes: a statistic of all blocks, then every block rewritten in place; resumable without applying twice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import pytest

from pipeline.engine.blocks import block_regions
from pipeline.engine.two_pass import store_two_pass
from pipeline.io.volume import as_volume, create_volume_store

SHAPE, CHUNKS = (10, 21, 17), (4, 8, 8)
BLOCKS = 3 * 3 * 3


def _data() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 1000, SHAPE).astype(np.float32)


def _target(tmp_path: Path) -> Any:
    template = as_volume(da.zeros(SHAPE, dtype=np.float32, chunks=CHUNKS), (1, 1, 1))
    return create_volume_store(tmp_path / "t.zarr", template, chunks=CHUNKS)


def _lazy(a: np.ndarray, calls: list[tuple[int, ...]], chunks: tuple[int, ...] = CHUNKS) -> da.Array:
    def spy(block: np.ndarray) -> np.ndarray:
        if block.size:
            calls.append(block.shape)
        return block

    return da.from_array(a, chunks=chunks).map_blocks(spy, dtype=np.float32)


def _summary(block: np.ndarray) -> np.ndarray:
    return np.array([int(block.sum()), block.size], dtype=np.int64)


def _finish(total: np.ndarray, collect: Any) -> dict[str, Any]:
    return {"mean": float(total[0] / total[1]), "max": max(collect(lambda b: float(b.max())))}


def _apply(block: np.ndarray, state: dict[str, Any]) -> np.ndarray:
    return (block - state["mean"]) / state["max"]  # not idempotent: applied twice it would show


def _expected(a: np.ndarray) -> np.ndarray:
    return ((a - a.mean(dtype=np.float64)) / a.max()).astype(np.float32)


def _run(a: np.ndarray, target: Any, markers: Path, calls: list[tuple[int, ...]], chunks: tuple[int, ...] = CHUNKS) -> Any:
    with dask.config.set(scheduler="sync"):
        data = _lazy(a, calls, chunks)
        return store_two_pass(data, target, markers=markers, summary=_summary, finish=_finish, apply=_apply)


def test_writes_the_applied_values_and_evaluates_data_once(tmp_path: Path) -> None:
    a, calls = _data(), []
    target = _target(tmp_path)
    result = _run(a, target, tmp_path / "m", calls)
    np.testing.assert_allclose(target[:], _expected(a), rtol=0, atol=1e-6)
    assert result.computed == BLOCKS and result.recomputed == 0
    assert result.state == pytest.approx({"mean": float(a.mean(dtype=np.float64)), "max": float(a.max())})
    assert sum(int(np.prod(s)) for s in calls) == a.size  # each voxel of data computed once (chunks as the store's)
    assert len(list((tmp_path / "m" / "pass2").glob("*.done"))) == BLOCKS
    calls.clear()
    again = _run(a, target, tmp_path / "m", calls)  # all done: nothing computed, nothing applied twice
    assert (again.computed, again.recomputed, calls) == (0, 0, [])
    np.testing.assert_allclose(target[:], _expected(a), rtol=0, atol=1e-6)


def test_resumes_pass_one_reading_back_the_blocks_it_wrote(tmp_path: Path) -> None:
    a, calls = _data(), []
    target = _target(tmp_path)
    p1 = tmp_path / "m" / "pass1"
    p1.mkdir(parents=True)
    done = list(block_regions(SHAPE, CHUNKS))[:10]  # a run killed after writing ten blocks of pass 1
    for index, region in done:
        target[region] = a[region]
        (p1 / (".".join(map(str, index)) + ".done")).touch()
    result = _run(a, target, tmp_path / "m", calls, chunks=(5, 9, 17))  # chunks unlike the store's: rechunked
    assert result.computed == BLOCKS - 10
    np.testing.assert_allclose(target[:], _expected(a), rtol=0, atol=1e-6)


def test_a_block_rewritten_but_not_marked_is_recomputed_not_applied_twice(tmp_path: Path) -> None:
    a, calls = _data(), []
    target = _target(tmp_path)
    _run(a, target, tmp_path / "m", calls)
    p2 = tmp_path / "m" / "pass2"
    regions = list(block_regions(SHAPE, CHUNKS))
    (p2 / "0.0.0.done").unlink()  # killed between writing block 0.0.0 and its done marker
    (index, region) = regions[5]  # killed before block 5 was started: it still holds pass 1's value
    name = ".".join(map(str, index))
    (p2 / f"{name}.done").unlink()
    (p2 / f"{name}.start").unlink()
    target[region] = a[region]
    calls.clear()
    result = _run(a, target, tmp_path / "m", calls)
    assert (result.computed, result.recomputed) == (0, 1)
    assert len(calls) >= 1 and sum(int(np.prod(s)) for s in calls) < a.size  # only what block 0.0.0 needs
    np.testing.assert_allclose(target[:], _expected(a), rtol=0, atol=1e-6)


def test_shape_mismatch(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not match"):
        store_two_pass(da.zeros((3, 3, 3), chunks=3), _target(tmp_path), markers=tmp_path / "m",
                       summary=_summary, finish=_finish, apply=_apply)
