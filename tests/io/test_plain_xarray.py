"""Stores written by porelab open in plain xarray without a warning, with their final attrs."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

from pipeline.io.volume import as_volume, open_volume, write_volume, write_volume_two_pass


def _open_plain(path: Path) -> tuple[xr.Dataset, xr.DataArray | None]:
    """``xr.open_zarr`` (and ``open_dataarray`` for a one-variable store) with every warning an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = xr.open_zarr(path)
        da = xr.open_dataarray(path, engine="zarr") if len(ds.data_vars) == 1 else None
    return ds, da


@pytest.mark.parametrize("name, dtype", [("image", np.uint16), ("labels", np.uint8)])
def test_volume_and_labels_stores(tmp_path: Path, name: str, dtype: type) -> None:
    data = (np.arange(6 * 10 * 12) % 7).astype(dtype).reshape(6, 10, 12)
    path = write_volume(as_volume(data, (10.0, 5.0, 5.0), name=name, attrs={"note": "x"}), tmp_path / "v.zarr", chunks=(4, 8, 8))
    ds, da = _open_plain(path)
    assert da is not None and da.name == name and da.attrs["voxel_size_nm"] == [10.0, 5.0, 5.0]
    np.testing.assert_array_equal(da.values, data)
    np.testing.assert_allclose(ds["y"].values, 5.0 * np.arange(10))


def test_attrs_written_after_the_data_are_seen(tmp_path: Path) -> None:
    """The consolidated copy is rewritten after the two-pass write adds its state to the attrs."""
    data = np.arange(4 * 8 * 8, dtype=np.float32).reshape(4, 8, 8)
    path = write_volume_two_pass(
        as_volume(data, (1.0, 1.0, 1.0)), tmp_path / "t.zarr", chunks=(2, 8, 8),
        summary=lambda b: np.array([float(np.sum(b)), float(b.size)]),
        finish=lambda total, collect: {"mean": float(total[0] / total[1])},
        apply=lambda b, state: b - state["mean"],
    )
    _, da = _open_plain(path)
    assert da is not None and da.attrs["mean"] == pytest.approx(data.mean())
    np.testing.assert_allclose(da.values, data - data.mean())


def test_dataset_store(tmp_path: Path) -> None:
    from pipeline.synth.factory import build_dataset, plan_samples

    plans = plan_samples(2, seed=1, shape=(8, 24, 24), voxel_size_nm=(10.0, 10.0, 10.0), families={"solid_spheres": 1.0},
                         structure_ranges={"porosity": 0.5, "median_nm": 30.0, "sigma": 0.25}, render={"backend": "builtin"})
    out = tmp_path / "d.zarr"
    build_dataset(out, plans, seed=1, executor="local", figures=False)
    ds, _ = _open_plain(out)
    assert ds.attrs["complete"] is True and ds["labels"].dims == ("sample", "z", "y", "x")
    assert list(ds["split"].values) == list(xr.open_zarr(out, consolidated=False)["split"].values)
    # every node of the finished store is in the consolidated copy: zarr finds the per-sample sphere lists
    root = zarr.open_group(out, mode="r")
    assert root.metadata.consolidated_metadata is not None
    assert sorted(root["spheres"].keys()) == ["s000000", "s000001"]


def test_stores_written_before_consolidation_still_open(tmp_path: Path) -> None:
    data = np.ones((3, 4, 5), np.uint8)
    vol = as_volume(data, (2.0, 2.0, 2.0), name="labels")
    vol.to_dataset().to_zarr(tmp_path / "old.zarr", zarr_format=3, consolidated=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        old = open_volume(tmp_path / "old.zarr")
    np.testing.assert_array_equal(old.values, data)


def test_job_stage_stores(tmp_path: Path) -> None:
    """A stage's resumable writes (run folder, block markers) consolidate too, after the two-pass state is added."""
    import dask

    from pipeline.jobs.context import StageContext

    ctx = StageContext(run_dir=tmp_path / "run", name="pre", seed=0, backend="numpy", input=None, outputs={},
                       job_hash="job", stage_hash="h" * 16, chunks=(2, 8, 8))
    data = np.arange(4 * 8 * 8, dtype=np.float32).reshape(4, 8, 8)
    vol = as_volume(data, (1.0, 1.0, 1.0))
    with dask.config.set(scheduler="threads"):
        one = ctx.write_volume(vol, "one.zarr", params={"a": 1})
        two = ctx.write_volume_two_pass(
            vol, "two.zarr", summary=lambda b: np.array([float(np.sum(b)), float(b.size)]),
            finish=lambda total, collect: {"mean": float(total[0] / total[1])}, apply=lambda b, state: b - state["mean"])
    _, da_one = _open_plain(one)
    _, da_two = _open_plain(two)
    assert da_one is not None and da_one.attrs["provenance"]["parameters"] == {"a": 1}
    assert da_two is not None and da_two.attrs["mean"] == pytest.approx(data.mean())


def test_segmentation_stores_open_with_every_variable(tmp_path: Path) -> None:
    """A store of several volumes (a segmentation: mask, probability) opens silently; porelab opens its mask."""
    from pipeline.io.volume import create_group_store

    grey = as_volume(np.zeros((4, 8, 8), np.float32), (10.0, 5.0, 5.0), name="mask")
    arrays = create_group_store(tmp_path / "s.zarr", grey, {"mask": np.uint8, "probability": np.float16})
    arrays["mask"][...] = 1
    arrays["probability"][...] = 0.75
    ds, _ = _open_plain(tmp_path / "s.zarr")
    assert set(ds.data_vars) == {"mask", "probability"} and ds.attrs["primary_variable"] == "mask"
    assert float(ds["probability"].values.mean()) == 0.75
    assert open_volume(tmp_path / "s.zarr").name == "mask"
