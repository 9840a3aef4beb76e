"""Raw export: bytes little-endian in z, y, x order, a sidecar that reads them back, atomic."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.io.export.raw import read_raw, sidecar_path, write_raw
from pipeline.io.volume import as_volume, open_volume, write_volume


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32", "bool"])
def test_round_trip(tmp_path: Path, dtype: str) -> None:
    rng = np.random.default_rng(0)
    data = (rng.random((13, 17, 11)) * 300).astype(dtype)
    vol = open_volume(write_volume(as_volume(data, (10.0, 5.0, 2.0), origin_nm=(0.0, 5.0, 0.0)), tmp_path / "v.zarr", chunks=(4, 8, 8)))
    out = write_raw(vol, tmp_path / "v.raw")
    meta = json.loads(sidecar_path(out).read_text())
    stored = np.uint8 if dtype == "bool" else np.dtype(dtype)
    assert out.stat().st_size == data.size * np.dtype(stored).itemsize == meta["bytes"]
    assert meta["shape"] == [13, 17, 11] and meta["voxel_size_nm"] == [10.0, 5.0, 2.0] and meta["origin_nm"] == [0.0, 5.0, 0.0]
    assert meta["byte_order"] == "little" and meta["numpy_dtype"][0] in "<|"
    back = np.fromfile(out, dtype=meta["numpy_dtype"]).reshape(meta["shape"])
    np.testing.assert_array_equal(back, data.astype(stored))
    np.testing.assert_array_equal(read_raw(out), data.astype(stored))


def test_sidecar_gives_the_fiji_and_numpy_lines(tmp_path: Path) -> None:
    out = write_raw(as_volume(np.zeros((3, 4, 5), np.uint16), (10.0, 5.0, 2.5)), tmp_path / "s.raw")
    meta = json.loads(sidecar_path(out).read_text())
    assert meta["fiji"] == (
        f'run("Raw...", "open=[{out.resolve()}] image=[16-bit Unsigned] width=5 height=4 number=3 little-endian"); '
        'run("Properties...", "unit=nm pixel_width=2.5 pixel_height=5 voxel_depth=10");'
    )
    namespace = {"numpy": np}
    arr = eval(meta["numpy"], namespace)  # the line the sidecar offers is valid and reads the file
    assert arr.shape == (3, 4, 5) and arr.dtype == np.dtype("<u2")


def test_failure_leaves_neither_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pipeline.io.export.raw as raw

    def slabs(v, progress=None):
        yield 0, np.ones((2, 4, 4), np.uint8)
        raise OSError("disk full")

    monkeypatch.setattr(raw, "iter_slabs", slabs)
    with pytest.raises(OSError, match="disk full"):
        write_raw(as_volume(np.ones((4, 4, 4), np.uint8), (1.0, 1.0, 1.0)), tmp_path / "f.raw")
    assert list(tmp_path.iterdir()) == []
