"""Ingest round trips: every input kind and dtype, natural order, voxel size and coordinates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from pipeline.io.ingest import ingest, parse_voxel_size
from pipeline.io.stacks import natural_key, open_stack
from pipeline.io.volume import open_volume

VOXEL = (10.0, 5.0, 2.5)


def _stack(dtype: str, shape: tuple[int, int, int] = (11, 37, 29), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return rng.random(shape, dtype=np.float32)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)


def _check(store: Path, expected: np.ndarray) -> None:
    vol = open_volume(store)
    assert vol.dims == ("z", "y", "x")
    assert vol.dtype == expected.dtype
    np.testing.assert_array_equal(vol.values, expected)
    assert vol.attrs["voxel_size_nm"] == list(VOXEL)
    for i, dim in enumerate("zyx"):
        np.testing.assert_allclose(vol[dim].values, VOXEL[i] * np.arange(expected.shape[i]))
        assert vol[dim].attrs["units"] == "nm"


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
@pytest.mark.parametrize("compression", [None, "zlib"])
def test_multipage_tiff(tmp_path: Path, dtype: str, compression: str | None) -> None:
    data = _stack(dtype)
    tifffile.imwrite(tmp_path / "s.tif", data, compression=compression)
    out = ingest(tmp_path / "s.tif", tmp_path / "s.zarr", VOXEL, chunks=(4, 16, 16))
    _check(out, data)


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
def test_npy(tmp_path: Path, dtype: str) -> None:
    data = _stack(dtype)
    np.save(tmp_path / "s.npy", data)
    _check(ingest(tmp_path / "s.npy", tmp_path / "s.zarr", VOXEL, chunks=(3, 20, 8)), data)


@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
def test_folder_of_tiff_slices_in_natural_order(tmp_path: Path, dtype: str) -> None:
    data = _stack(dtype, shape=(12, 9, 7))
    folder = tmp_path / "slices"
    folder.mkdir()
    for i, img in enumerate(data):
        tifffile.imwrite(folder / f"slice_{i}.tif", img)
    _check(ingest(folder, tmp_path / "s.zarr", VOXEL, chunks=(5, 9, 7)), data)


@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
def test_folder_of_png_slices(tmp_path: Path, dtype: str) -> None:
    data = _stack(dtype, shape=(11, 8, 6))
    folder = tmp_path / "png"
    folder.mkdir()
    for i, img in enumerate(data):
        Image.fromarray(img).save(folder / f"img{i}.png")
    _check(ingest(folder, tmp_path / "s.zarr", VOXEL), data)


def test_natural_key_orders_numbers_by_value() -> None:
    names = ["slice_10.tif", "slice_2.tif", "slice_1.tif", "Slice_03.tif"]
    assert sorted(names, key=natural_key) == ["slice_1.tif", "slice_2.tif", "Slice_03.tif", "slice_10.tif"]


def test_open_stack_reads_shape_without_pixels(tmp_path: Path) -> None:
    data = _stack("uint16", shape=(6, 10, 12))
    tifffile.imwrite(tmp_path / "s.tif", data)
    src = open_stack(tmp_path / "s.tif")
    assert src.shape == (6, 10, 12) and src.dtype == np.uint16
    np.testing.assert_array_equal(src[2:5], data[2:5])
    np.testing.assert_array_equal(src[3, 1:4], data[3, 1:4])


def test_single_page_tiff_is_one_slice(tmp_path: Path) -> None:
    img = _stack("uint8", shape=(1, 10, 12))[0]
    tifffile.imwrite(tmp_path / "one.tif", img)
    _check(ingest(tmp_path / "one.tif", tmp_path / "s.zarr", VOXEL), img[None])


def test_parse_voxel_size() -> None:
    assert parse_voxel_size("10,5,5") == (10.0, 5.0, 5.0)
    assert parse_voxel_size(" 4.5, 2 ,2e0") == (4.5, 2.0, 2.0)


def test_provenance_recorded(tmp_path: Path) -> None:
    np.save(tmp_path / "s.npy", _stack("uint8", shape=(3, 4, 5)))
    vol = open_volume(ingest(tmp_path / "s.npy", tmp_path / "s.zarr", VOXEL))
    prov = vol.attrs["provenance"]
    assert prov["stage"] == "ingest"
    assert prov["parameters"]["voxel_size_nm"] == list(VOXEL)
    assert "zarr" in prov["versions"] and "porelab" in prov["versions"]
