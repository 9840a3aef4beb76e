"""Chunk-aligned block writes with done markers."""

from __future__ import annotations

from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest

from pipeline.engine.blocks import block_regions, covering_block_shape, store_blocks
from pipeline.io.volume import as_volume, create_volume_store


def _target(tmp_path: Path, shape=(10, 21, 17), chunks=(4, 8, 8), dtype="uint16"):
    template = as_volume(da.zeros(shape, dtype=dtype, chunks=chunks), (1, 1, 1))
    return create_volume_store(tmp_path / "t.zarr", template, chunks=chunks)


def test_block_regions_cover_shape_once() -> None:
    covered = np.zeros((10, 21, 17), int)
    for _, region in block_regions(covered.shape, (4, 8, 8)):
        covered[region] += 1
    assert (covered == 1).all()


def test_markers_skip_done_blocks_even_when_chunks_are_empty(tmp_path: Path) -> None:
    data = np.zeros((10, 21, 17), np.uint16)
    data[5:] = np.arange(5 * 21 * 17, dtype=np.uint16).reshape(5, 21, 17)
    target = _target(tmp_path)
    markers = tmp_path / "markers"
    assert store_blocks(da.from_array(data, chunks=(3, 5, 7)), target, markers=markers) == 3 * 3 * 3
    np.testing.assert_array_equal(target[:], data)
    assert len(list(markers.glob("*.done"))) == 27
    # All-zero blocks wrote no chunk file, yet count as done.
    assert store_blocks(da.from_array(data, chunks=(3, 5, 7)), target, markers=markers) == 0
    (markers / "1.1.1.done").unlink()
    calls = []

    def spy(block: np.ndarray) -> np.ndarray:
        calls.append(block.shape)
        return block

    lazy = da.from_array(data, chunks=(4, 8, 8)).map_blocks(spy, meta=np.empty((0, 0, 0), np.uint16))
    recomputed = store_blocks(lazy, target, markers=markers)
    assert recomputed == 1
    assert calls == [(4, 8, 8)]


def test_block_shape_must_be_whole_chunks(tmp_path: Path) -> None:
    target = _target(tmp_path)
    data = da.zeros(target.shape, dtype="uint16", chunks=(4, 8, 8))
    with pytest.raises(ValueError, match="whole multiple"):
        store_blocks(data, target, markers=None, block_shape=(4, 12, 17))
    assert store_blocks(data, target, markers=None, block_shape=(8, 21, 17)) == 2


def test_shape_mismatch(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not match"):
        store_blocks(da.zeros((3, 3, 3), chunks=3), _target(tmp_path), markers=None)


def test_works_with_synchronous_scheduler(tmp_path: Path) -> None:
    data = np.random.default_rng(0).integers(0, 9, (10, 21, 17)).astype(np.uint16)
    target = _target(tmp_path)
    with dask.config.set(scheduler="synchronous"):
        store_blocks(da.from_array(data, chunks=(5, 21, 17)), target, markers=None)
    np.testing.assert_array_equal(target[:], data)


def test_covering_block_shape_holds_the_largest_data_chunk_in_whole_store_chunks() -> None:
    assert covering_block_shape(((5, 5), (21,), (17,)), (4, 8, 8), (10, 21, 17)) == (8, 21, 17)
    assert covering_block_shape(((4, 4, 2), (8, 8, 5), (8, 8, 1)), (4, 8, 8), (10, 21, 17)) == (4, 8, 8)
    with pytest.raises(ValueError, match="differ"):
        covering_block_shape(((5, 5), (21,)), (4, 8, 8), (10, 21, 17))


def test_cover_data_chunks_computes_each_large_chunk_about_once(tmp_path: Path) -> None:
    """A lazy array of whole-plane chunks (a segmentation's) is not recomputed for every store chunk it covers."""
    data = np.random.default_rng(1).integers(0, 9, (10, 21, 17)).astype(np.uint16)

    def run(**kw: bool | int) -> list[tuple[int, ...]]:
        calls: list[tuple[int, ...]] = []

        def spy(block: np.ndarray) -> np.ndarray:
            calls.append(block.shape)
            return block

        target = _target(tmp_path / str(kw))
        lazy = da.from_array(data, chunks=(5, 21, 17)).map_blocks(spy, meta=np.empty((0, 0, 0), np.uint16))
        store_blocks(lazy, target, markers=None, **kw)
        np.testing.assert_array_equal(target[:], data)
        return calls

    assert len(run()) >= 27  # one store chunk (4, 8, 8) at a time: each plane block computed 9 to 18 times
    assert len(run(cover_data_chunks=True)) == 3  # blocks (8, 21, 17): the chunk across their border twice
    # a covering block above the byte cap (8 x 21 x 17 x 2 bytes) falls back to the store's chunks
    assert len(run(cover_data_chunks=True, max_block_bytes=8 * 21 * 17 * 2 - 1)) >= 27
    assert len(run(cover_data_chunks=True, max_block_bytes=8 * 21 * 17 * 2)) == 3
