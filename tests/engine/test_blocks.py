"""Chunk-aligned block writes with done markers."""

from __future__ import annotations

import json

from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest
import zarr

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


def test_nesting_chunks_keep_the_store_chunks_where_the_blocks_are_multiples_and_take_the_blocks_elsewhere() -> None:
    from pipeline.engine.blocks import nesting_chunks, nests

    # 2D blocks of 8 whole slices under store chunks of 32 slices: the store takes 8
    assert nesting_chunks(((8, 8, 8, 6), (1299,), (1024,)), (32, 256, 256)) == (8, 256, 256)
    # 3D blocks of 48 x 192 x 192 (the last one longer): neither nests in 32 x 256 x 256
    assert nesting_chunks(((48, 48, 70), (192, 192, 200), (192, 130)), (32, 256, 256)) == (48, 192, 192)
    # blocks that are whole store chunks keep them
    assert nesting_chunks(((64, 64, 30), (256, 256), (512,)), (32, 256, 256)) == (32, 256, 256)
    assert nests(((64, 64, 30), (256, 256), (512,)), (32, 256, 256))
    assert nests(((8, 8, 8, 6), (1299,), (1024,)), (8, 256, 256))
    assert not nests(((8, 8, 8, 6), (1299,), (1024,)), (32, 256, 256))
    with pytest.raises(ValueError, match="differ"):
        nesting_chunks(((8,), (8,)), (8, 8, 8))


def test_chunk_regions_follow_irregular_chunks() -> None:
    from pipeline.engine.blocks import chunk_regions

    got = list(chunk_regions(((2, 3), (4,))))
    assert got == [((0, 0), (slice(0, 2), slice(0, 4))), ((1, 0), (slice(2, 5), slice(0, 4)))]


def _spy_run(tmp_path: Path, data: np.ndarray, data_chunks: tuple, store_chunks: tuple, **kw: object) -> list[tuple[int, ...]]:
    """Write ``data`` in ``data_chunks`` into a store of ``store_chunks`` at ``tmp_path`` (kept if it exists); the blocks computed."""
    calls: list[tuple[int, ...]] = []

    def spy(block: np.ndarray) -> np.ndarray:
        calls.append(block.shape)
        return block

    if (tmp_path / "v").exists():
        target = zarr.open_array(str(tmp_path / "v"), mode="r+")
    else:
        target = zarr.open_group(str(tmp_path), mode="w").create_array("v", shape=data.shape, chunks=store_chunks, dtype=data.dtype)
    lazy = da.from_array(data, chunks=data_chunks).map_blocks(spy, meta=np.empty((0, 0, 0), data.dtype))
    store_blocks(lazy, target, markers=kw.pop("markers", None), **kw)  # type: ignore[arg-type]
    np.testing.assert_array_equal(target[:], data)
    return calls


def test_blocks_that_nest_in_the_store_chunks_are_each_computed_once(tmp_path: Path) -> None:
    """A store made with nesting_chunks takes every block as computed, the last, longer one included."""
    from pipeline.engine.blocks import nesting_chunks

    data = np.random.default_rng(2).integers(0, 9, (22, 21, 17)).astype(np.uint16)
    blocks = ((8, 14), (21,), (17,))  # the last block took the short rest, as block_chunks does
    store = nesting_chunks(blocks, (16, 8, 8))
    assert store == (8, 8, 8)
    calls = _spy_run(tmp_path / "a", data, blocks, store, cover_data_chunks=True)
    assert sorted(calls) == [(8, 21, 17), (14, 21, 17)]
    # the job's own chunks would cover 16 slices: a block computed for each store block it touches
    assert len(_spy_run(tmp_path / "b", data, blocks, (16, 8, 8))) > 2
    # above the byte cap the write falls back to store chunks (bounded memory, recomputed blocks)
    assert len(_spy_run(tmp_path / "c", data, blocks, store, cover_data_chunks=True, max_block_bytes=14 * 21 * 17 * 2 - 1)) > 2


def test_a_resumed_write_cut_into_other_blocks_forgets_the_old_markers(tmp_path: Path) -> None:
    """Markers name block indices: written with another grid (another worker memory) they would skip wrong regions."""
    from pipeline.engine.blocks import TOTAL_NAME

    data = np.random.default_rng(3).integers(1, 9, (16, 8, 8)).astype(np.uint16)
    markers = tmp_path / "markers"
    store = tmp_path / "store"
    _spy_run(store, data, ((8, 8), (8,), (8,)), (4, 8, 8), cover_data_chunks=True, markers=markers)
    assert json.loads((markers / TOTAL_NAME).read_text())["grid"] == [[8, 8], [8], [8]]
    (markers / "1.0.0.done").unlink()  # as if killed before the second block
    zarr.open_array(str(store / "v"), mode="r+")[8:] = 0
    calls = _spy_run(store, data, ((8, 8), (8,), (8,)), (4, 8, 8), cover_data_chunks=True, markers=markers)
    assert calls == [(8, 8, 8)]  # the same grid: only the missing block
    zarr.open_array(str(store / "v"), mode="r+")[:] = 0
    calls = _spy_run(store, data, ((4, 4, 4, 4), (8,), (8,)), (4, 8, 8), cover_data_chunks=True, markers=markers)
    assert len(calls) == 4  # another grid: every block again (the old markers 0 and 1 would skip slices 0-8)


@pytest.mark.parametrize("on_cluster", [False, True])
def test_compute_tasks_returns_every_result_in_order(on_cluster: bool) -> None:
    from pipeline.engine.blocks import compute_tasks

    rng = np.random.default_rng(0)
    delays = rng.random(12) * 0.01

    def slow_square(i: int, d: float) -> int:
        import time

        time.sleep(d)  # results finish out of order
        return i * i

    tasks = [dask.delayed(slow_square, pure=False)(i, float(d)) for i, d in enumerate(delays)]
    tasks.append(dask.delayed(slow_square, pure=True)(3, 0.0))  # equal tasks share a key
    tasks.append(dask.delayed(slow_square, pure=True)(3, 0.0))
    if on_cluster:
        from distributed import Client, LocalCluster

        with LocalCluster(n_workers=1, threads_per_worker=3, processes=False, dashboard_address=None) as cluster, Client(cluster):
            out = compute_tasks(tasks, max_in_flight=4)
    else:
        out = compute_tasks(tasks, max_in_flight=4)
    assert out == [i * i for i in range(12)] + [9, 9]
