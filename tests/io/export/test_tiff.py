"""TIFF export: pages, resolution tags and ImageJ metadata as Fiji reads them (checked with tifffile), BigTIFF."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import tifffile

from pipeline.errors import UserError
from pipeline.io.export.tiff import tiff_dtype, write_tiff
from pipeline.io.volume import as_volume, open_volume, write_volume


def _pixels_per_nm(tag) -> float:
    num, den = tag.value
    return float(Fraction(num, den))


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
def test_pages_and_scale(tmp_path: Path, dtype: str) -> None:
    rng = np.random.default_rng(0)
    data = (rng.random((19, 30, 41)) * 200).astype(dtype)
    vol = open_volume(write_volume(as_volume(data, (10.0, 4.0, 2.5)), tmp_path / "v.zarr", chunks=(4, 16, 16)))
    out = write_tiff(vol, tmp_path / "v.tif")
    with tifffile.TiffFile(out) as tif:
        assert tif.is_imagej and not tif.is_bigtiff and len(tif.pages) == 19
        np.testing.assert_array_equal(tif.asarray(), data)
        ij = tif.imagej_metadata
        assert ij["spacing"] == pytest.approx(10.0) and ij["unit"] == "nm" and ij["slices"] == 19
        for page in (tif.pages[0], tif.pages[18]):
            tags = page.tags
            # ImageJ: pixel width = 1 / XResolution in the description's unit
            assert 1 / _pixels_per_nm(tags["XResolution"]) == pytest.approx(2.5, rel=1e-7)
            assert 1 / _pixels_per_nm(tags["YResolution"]) == pytest.approx(4.0, rel=1e-7)
            assert tags["ResolutionUnit"].value == 1  # none: the unit is ImageJ's, nm
        assert "xorigin" not in ij


def test_origin_labels_and_conversions(tmp_path: Path) -> None:
    data = np.zeros((3, 4, 5), bool)
    data[1] = True
    vol = as_volume(data, (10.0, 5.0, 5.0), name="labels", origin_nm=(20.0, 50.0, 0.0))
    with tifffile.TiffFile(write_tiff(vol, tmp_path / "m.tif")) as tif:
        ij = tif.imagej_metadata
        assert tif.pages[0].dtype == np.uint8 and tif.asarray().tolist() == data.astype(np.uint8).tolist()
        assert (ij["min"], ij["max"]) == (0.0, 1.0)
        # ImageJ's origin in pixels: physical = (pixel - origin) * size
        assert ij["zorigin"] == pytest.approx(-2.0) and ij["yorigin"] == pytest.approx(-10.0) and "xorigin" not in ij
    assert tiff_dtype("int16") == np.float32 and tiff_dtype("float64") == np.float32
    with pytest.raises(UserError, match="uint32.*raw or ome-zarr"):
        tiff_dtype("uint32")


def test_bigtiff_keeps_the_scale(tmp_path: Path) -> None:
    data = np.arange(2 * 8 * 8, dtype=np.uint16).reshape(2, 8, 8)
    with tifffile.TiffFile(write_tiff(as_volume(data, (7.0, 3.0, 3.0)), tmp_path / "b.tif", bigtiff=True)) as tif:
        assert tif.is_bigtiff and tif.imagej_metadata["spacing"] == pytest.approx(7.0)
        assert 1 / _pixels_per_nm(tif.pages[0].tags["XResolution"]) == pytest.approx(3.0)
        np.testing.assert_array_equal(tif.asarray(), data)


def test_bigtiff_chosen_by_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pipeline.io.export.tiff as tiff

    data = np.zeros((4, 8, 8), np.uint8)
    monkeypatch.setattr(tiff, "BIGTIFF_BYTES", data.nbytes - 1)
    with tifffile.TiffFile(write_tiff(as_volume(data, (1.0, 1.0, 1.0)), tmp_path / "big.tif")) as tif:
        assert tif.is_bigtiff
    monkeypatch.setattr(tiff, "BIGTIFF_BYTES", data.nbytes)
    with tifffile.TiffFile(write_tiff(as_volume(data, (1.0, 1.0, 1.0)), tmp_path / "classic.tif")) as tif:
        assert not tif.is_bigtiff


def test_existing_file_kept_without_overwrite_and_atomic_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pipeline.io.export.tiff as tiff

    vol = as_volume(np.ones((6, 8, 8), np.uint8), (1.0, 1.0, 1.0))
    target = tmp_path / "t.tif"
    target.write_bytes(b"old")
    with pytest.raises(UserError, match="already exists"):
        write_tiff(vol, target)
    assert target.read_bytes() == b"old"

    def slabs(v, progress=None):
        yield 0, np.ones((3, 8, 8), np.uint8)
        raise OSError("disk full")

    monkeypatch.setattr(tiff, "iter_slabs", slabs)
    with pytest.raises(OSError, match="disk full"):
        write_tiff(vol, target, overwrite=True)
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["t.tif"]
