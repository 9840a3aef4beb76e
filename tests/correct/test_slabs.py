"""map_slabs: each z-slab gets its own rows of a per-slice table; equal to the whole-array result."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from pipeline.correct.slabs import map_slabs, merge_shallow_slabs


def _add_rows(block: np.ndarray, rows: np.ndarray, scale: float) -> np.ndarray:
    assert len(rows) == block.shape[0]
    return block + scale * rows[:, None, None]


@pytest.mark.parametrize("depth", [None, {0: 0, 1: 2, 2: 1}])
def test_rows_follow_their_slices(depth) -> None:  # noqa: ANN001
    a = np.random.default_rng(0).random((11, 9, 7))
    table = np.arange(11, dtype=float) * 10
    got = map_slabs(da.from_array(a, chunks=(4, 5, 3)), _add_rows, table, depth=depth, dtype=a.dtype, scale=2.0).compute()
    np.testing.assert_array_equal(got, a + 2.0 * table[:, None, None])


def test_table_of_the_wrong_length_or_a_z_halo_is_refused() -> None:
    arr = da.zeros((5, 4, 4), chunks=2)
    with pytest.raises(ValueError, match="does not fit"):
        map_slabs(arr, _add_rows, np.zeros(4), dtype=float, scale=1.0)
    with pytest.raises(ValueError, match="y and x only"):
        map_slabs(arr, _add_rows, np.zeros(5), depth={0: 1, 1: 0, 2: 0}, dtype=float, scale=1.0)


def _located(block: np.ndarray, rows: np.ndarray, block_info: dict | None = None) -> np.ndarray:
    (z0, _), (y0, _), (x0, _) = block_info[0]["array-location"]
    return block + rows[:, None, None] + 1000 * y0 + 10**6 * x0 + 0 * z0


def test_one_layer_whatever_the_slab_count() -> None:
    """A layer per slab made each block computed alone cull thousands of layers (quadratic in the stack's length)."""
    few = map_slabs(da.zeros((8, 4, 4), chunks=(2, 4, 4)), _add_rows, np.zeros(8), dtype=float, scale=1.0)
    many = map_slabs(da.zeros((800, 4, 4), chunks=(2, 4, 4)), _add_rows, np.zeros(800), dtype=float, scale=1.0)
    assert len(many.__dask_graph__().layers) == len(few.__dask_graph__().layers) <= 2


def test_block_info_gives_each_block_its_place() -> None:
    a = np.zeros((6, 6, 6))
    table = np.arange(6, dtype=float)
    got = map_slabs(da.from_array(a, chunks=(3, 2, 4)), _located, table, dtype=float).compute()
    y = (np.arange(6) // 2 * 2)[None, :, None]
    x = (np.arange(6) // 4 * 4)[None, None, :]
    np.testing.assert_array_equal(got, table[:, None, None] + 1000 * y + 10**6 * x)


def test_shallow_slabs_merged_to_the_depth() -> None:
    assert merge_shallow_slabs([5, 2, 5], 4) == [7, 5]
    assert merge_shallow_slabs([6, 6, 1], 4) == [6, 7]  # a shallow last slab joins the one before
    assert merge_shallow_slabs([5, 5], 4) == [5, 5] and merge_shallow_slabs([1, 1], 1) == [1, 1]
    merged = merge_shallow_slabs([1] * 11, 4)
    assert sum(merged) == 11 and min(merged) >= 4
