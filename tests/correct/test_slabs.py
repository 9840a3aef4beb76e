"""map_slabs: each z-slab gets its own rows of a per-slice table; equal to the whole-array result."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from pipeline.correct.slabs import map_slabs


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
