"""Volume stores: codec per kind of data, and every block's chunks written (fill-valued ones too)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr

from pipeline.engine.blocks import store_blocks
from pipeline.io.volume import as_volume, create_volume_store, open_volume


def _codec(path: Path, name: str) -> str:
    arr = zarr.open_array(path / name, mode="r")
    return arr.compressors[0].cname.value


def test_labels_zstd_images_lz4(tmp_path: Path) -> None:
    vs = (5.0, 5.0, 5.0)
    img = create_volume_store(tmp_path / "img.zarr", as_volume(np.zeros((4, 8, 8), np.uint16), vs))
    lab = create_volume_store(tmp_path / "lab.zarr", as_volume(np.zeros((4, 8, 8), np.uint8), vs, name="labels"))
    assert _codec(tmp_path / "img.zarr", "image") == "lz4"
    assert _codec(tmp_path / "lab.zarr", "labels") == "zstd"
    assert img.dtype == np.uint16 and lab.dtype == np.uint8


def test_fill_valued_chunks_are_written(tmp_path: Path) -> None:
    """A block of zeros is stored, so the store reads back the same with or without its markers."""
    import dask.array as da

    vol = as_volume(np.zeros((8, 16, 16), np.uint8), (1.0, 1.0, 1.0))
    vol[4:, :8, :8] = 1
    target = create_volume_store(tmp_path / "v.zarr", vol, chunks=(4, 8, 8))
    store_blocks(da.from_array(vol.values, chunks=(4, 8, 8)), target, markers=None)
    chunk_files = [p for p in (tmp_path / "v.zarr" / "image" / "c").rglob("*") if p.is_file()]
    assert len(chunk_files) == 8  # 2 x 2 x 2 chunks, 7 of them all zero
    np.testing.assert_array_equal(open_volume(tmp_path / "v.zarr").values, vol.values)
