"""Read tasks of an opened store hold its path, not its metadata: a block computed alone ships little."""

from __future__ import annotations

import cloudpickle
import dask
import numpy as np
import zarr

from pipeline.io.volume import as_volume, open_volume, write_volume


def _store(tmp_path, attrs: dict) -> tuple[np.ndarray, object]:
    data = np.random.default_rng(0).random((40, 24, 24)).astype(np.float32)
    data[3] = 0.0  # zeros and the fill value read back as they are
    return data, write_volume(as_volume(data, (10.0, 5.0, 5.0), attrs=attrs), tmp_path / "v.zarr", chunks=(8, 24, 24))


def test_a_block_graph_does_not_carry_the_attrs(tmp_path) -> None:
    big = {"drift_px": np.zeros((20000, 2)).tolist()}  # a per-slice table of a long stack
    _, path = _store(tmp_path, big)
    vol = open_volume(path)
    assert len(vol.attrs["drift_px"]) == 20000
    block = vol.data.blocks[2]
    graph = dict(block.__dask_graph__())
    assert max(len(cloudpickle.dumps(task)) for task in graph.values()) < 4096  # was about the attrs' JSON size


def test_values_and_chunks_as_stored(tmp_path) -> None:
    data, path = _store(tmp_path, {})
    vol = open_volume(path)
    assert vol.data.chunksize == (8, 24, 24)
    with dask.config.set(scheduler="sync"):
        np.testing.assert_array_equal(vol.values, data)
        np.testing.assert_array_equal(vol[5:17, 3:9].values, data[5:17, 3:9])
    assert vol.data.name == open_volume(path).data.name  # deterministic keys: the same store, the same graph


def test_a_rewritten_store_is_read_again(tmp_path) -> None:
    data, path = _store(tmp_path, {})
    with dask.config.set(scheduler="sync"):
        first = open_volume(path).values
        write_volume(as_volume(data + 1, (10.0, 5.0, 5.0)), path, chunks=(8, 24, 24), overwrite=True)
        again = open_volume(path).values
    np.testing.assert_array_equal(first, data)
    np.testing.assert_array_equal(again, data + 1)
    assert zarr.open_array(str(path / open_volume(path).name), mode="r").shape == data.shape


def test_arrays_are_opened_once_per_process_until_their_metadata_changes(tmp_path, monkeypatch) -> None:
    import pipeline.io.volume as volume

    _, path = _store(tmp_path, {"drift_px": np.zeros((5000, 2)).tolist()})
    opened: list[str] = []
    real = zarr.open_array
    monkeypatch.setattr(volume.zarr, "open_array", lambda p, mode="r": opened.append(p) or real(p, mode=mode))
    vol = open_volume(path)
    array = str(path / vol.name)
    with dask.config.set(scheduler="sync"):
        vol.values  # five chunks read
    assert opened.count(array) == 1
    volume.open_array_cached(array, "r+").attrs.update({"new": 1})  # opened to write (2), a new zarr.json
    assert volume.open_array_cached(array).attrs["new"] == 1  # read again (3), not the stale handle
    assert opened.count(array) == 3
