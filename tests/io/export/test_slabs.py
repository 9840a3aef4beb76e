"""Slabs of a volume: bounded depth, every slice once and in order, in memory or on a Dask cluster."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.io.export.slabs import iter_slabs, slab_depth
from pipeline.io.volume import as_volume, open_volume, write_volume


@pytest.fixture
def vol(tmp_path: Path):
    data = np.arange(21 * 6 * 5, dtype=np.uint16).reshape(21, 6, 5)
    return data, open_volume(write_volume(as_volume(data, (1.0, 1.0, 1.0)), tmp_path / "v.zarr", chunks=(8, 4, 4)))


def test_one_chunk_deep_unless_too_large(vol) -> None:
    data, v = vol
    assert slab_depth(v) == 8
    assert slab_depth(v, max_bytes=3 * 6 * 5 * 2) == 3
    assert slab_depth(v, max_bytes=1) == 1
    assert slab_depth(as_volume(data, (1.0, 1.0, 1.0))) == 21  # in memory: the default chunk, clipped


@pytest.mark.parametrize("depth", [None, 1, 5, 40])
def test_every_slice_once_in_order(vol, depth: int | None) -> None:
    data, v = vol
    got = list(iter_slabs(v, depth))
    assert [z0 for z0, _ in got] == list(range(0, 21, depth or 8))
    assert max(len(s) for _, s in got) == min(depth or 8, 21)
    np.testing.assert_array_equal(np.concatenate([s for _, s in got]), data)


def test_on_a_dask_cluster(vol) -> None:
    from distributed import Client, LocalCluster

    data, v = vol
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, Client(cluster):
        np.testing.assert_array_equal(np.concatenate([s for _, s in iter_slabs(v)]), data)
