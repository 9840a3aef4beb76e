"""OME-Zarr export read back by the ``ome-zarr`` package (not porelab's reader): scale in nm per level, pyramid, labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.io.export.downsample import downsample_mean, downsample_mode
from pipeline.io.export.ome_zarr import write_ome_zarr
from pipeline.io.volume import as_volume, open_volume, write_volume

VOXEL = (10.0, 5.0, 5.0)


def _read(path: Path):
    from ome_zarr.io import parse_url  # the ome-zarr package (dev extra), not porelab's reader
    from ome_zarr.reader import Reader

    nodes = list(Reader(parse_url(str(path)))())
    assert nodes, f"ome-zarr found no image in {path}"
    return nodes[0]


def _store(tmp_path: Path, data: np.ndarray, name: str = "image", origin=(0.0, 0.0, 0.0)) -> Path:
    return write_volume(as_volume(data, VOXEL, name=name, origin_nm=origin), tmp_path / f"{name}.zarr", chunks=(8, 32, 32))


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_grey_pyramid_reads_back_at_scale(tmp_path: Path, version: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import pipeline.io.export.slabs as slabs

    rng = np.random.default_rng(0)
    data = rng.integers(0, 4000, (45, 70, 90)).astype(np.uint16)
    vol = open_volume(_store(tmp_path, data, origin=(0.0, 50.0, 100.0)))
    # slabs of 3 slices: levels are assembled across many slabs and still equal whole-volume downsampling
    monkeypatch.setattr(slabs, "SLAB_BYTES", 3 * 70 * 90 * 2)
    assert slabs.slab_depth(vol) == 3
    out = write_ome_zarr(vol, tmp_path / "img.ome.zarr", levels=3, version=version)
    node = _read(out)
    axes = node.metadata["axes"]
    assert [a["name"] for a in axes] == ["z", "y", "x"] and {a["unit"] for a in axes} == {"nanometer"}
    transforms = node.metadata["coordinateTransformations"]
    scales = [next(t["scale"] for t in ts if t["type"] == "scale") for ts in transforms]
    shifts = [next(t["translation"] for t in ts if t["type"] == "translation") for ts in transforms]
    assert scales == [[10.0, 5.0, 5.0], [10.0, 10.0, 10.0], [20.0, 20.0, 20.0]]
    # each level's first voxel centre: the centre of the level-0 block it averages
    assert shifts == [[0.0, 50.0, 100.0], [0.0, 52.5, 102.5], [5.0, 57.5, 107.5]]
    levels = [np.asarray(d) for d in node.data]
    want1 = downsample_mean(data, (1, 2, 2))
    want2 = downsample_mean(want1, (2, 2, 2))
    assert [lv.shape for lv in levels] == [(45, 70, 90), (45, 35, 45), (23, 18, 23)]
    np.testing.assert_array_equal(levels[0], data)
    np.testing.assert_array_equal(levels[1], want1)
    np.testing.assert_array_equal(levels[2], want2)
    assert all(lv.dtype == np.uint16 for lv in levels)
    assert node.metadata["contrast_limits"] == [[float(data.min()), float(data.max())]]


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_labels_are_label_images_downsampled_by_mode(tmp_path: Path, version: str) -> None:
    from ome_zarr.reader import Label

    rng = np.random.default_rng(1)
    data = (rng.random((20, 33, 40)) > 0.55).astype(np.uint8)
    vol = open_volume(_store(tmp_path, data, name="labels"))
    node = _read(write_ome_zarr(vol, tmp_path / "lab.ome.zarr", levels=2, version=version))
    assert node.load(Label) is not None  # napari opens it as a labels layer
    assert node.metadata["properties"] == {0: {"name": "solid"}, 1: {"name": "pore"}}
    levels = [np.asarray(d) for d in node.data]
    np.testing.assert_array_equal(levels[0], data)
    np.testing.assert_array_equal(levels[1], downsample_mode(data, (1, 2, 2)))
    assert set(np.unique(levels[1])) <= {0, 1}


def test_float_probability_and_default_levels(tmp_path: Path) -> None:
    data = np.linspace(0, 1, 4 * 600 * 16, dtype=np.float32).reshape(4, 600, 16)
    node = _read(write_ome_zarr(as_volume(data, (5.0, 5.0, 5.0), name="probability"), tmp_path / "p.ome.zarr"))
    assert len(node.data) == 2  # 600 voxels > 512: one more level
    np.testing.assert_allclose(np.asarray(node.data[1]), downsample_mean(data, (2, 2, 2)), rtol=1e-6)
    assert node.data[1].dtype == np.float32


def test_nothing_left_behind_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pipeline.io.export.ome_zarr as oz

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(oz, "downsample_mean", broken)
    vol = as_volume(np.zeros((4, 8, 8), np.uint16), VOXEL)
    with pytest.raises(OSError, match="disk full"):
        write_ome_zarr(vol, tmp_path / "x.ome.zarr", levels=2)
    assert list(tmp_path.iterdir()) == []


def test_provenance_travels_with_the_export(tmp_path: Path) -> None:
    import zarr

    vol = as_volume(np.zeros((2, 4, 4), np.uint8), VOXEL, name="labels", attrs={"provenance": {"stage": "baseline"}})
    root = zarr.open_group(str(write_ome_zarr(vol, tmp_path / "m.ome.zarr", levels=1, version="0.5")), mode="r")
    assert root.attrs["porelab"] == {"voxel_size_nm": list(VOXEL), "provenance": {"stage": "baseline"}}
    assert root.attrs["ome"]["version"] == "0.5" and "image-label" in root.attrs["ome"]
