"""The dataset store: layout, splits, per-sample parameters, card, figures, resume, never half-written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from pipeline.errors import UserError
from pipeline.synth import dataset as dstore
from pipeline.synth.factory import build_dataset, make_sample, partial_path, plan_renders, plan_samples
from pipeline.synth.params import assign_splits

FAMILIES = {"solid_spheres": 1.0, "pore_spheres": 1.0, "blobs": 1.0, "agglomerates": 1.0}


def _plans(n: int = 5, seed: int = 3, render: dict | None = None) -> list[dict]:
    return plan_samples(n, seed=seed, shape=(12, 32, 32), voxel_size_nm=(10.0, 10.0, 10.0), families=FAMILIES,
                        structure_ranges={"porosity": (0.35, 0.6), "median_nm": 60.0, "sigma": 0.25, "correlation_nm": 25.0},
                        render={"backend": "builtin"} if render is None else render)


def test_dataset_layout(tmp_path: Path) -> None:
    out = tmp_path / "d.zarr"
    card = build_dataset(out, _plans(), seed=3, executor="local", card={"job": {"name": "t"}})
    ds = xr.open_zarr(out, zarr_format=3, consolidated=False)  # plain xarray opens it
    assert ds["image"].dims == ("sample", "z", "y", "x") and ds["labels"].dims == ("sample", "z", "y", "x")
    assert ds["image"].shape == (5, 12, 32, 32) and ds["image"].dtype == np.uint8 and ds["labels"].dtype == np.uint8
    assert list(ds["split"].values) == assign_splits(5, 3)
    assert set(ds["split"].values) == {"train", "val", "test"}
    assert ds.attrs["voxel_size_nm"] == [10.0, 10.0, 10.0] and ds.attrs["complete"] is True
    for name in ("family", "porosity", "target_porosity", "render_dose", "render_depth_nm", "render_seed", "structure_seed"):
        assert name in ds and ds[name].dims == ("sample",), name
    por = ds["labels"].mean(dim=("z", "y", "x")).values
    # drift shifts labels by a few pixels at most, so the stored porosity stays close
    np.testing.assert_allclose(por, ds["porosity"].values, atol=0.03)
    assert np.all(np.abs(ds["porosity"].values - ds["target_porosity"].values) <= 0.01)
    doses = ds["render_dose"].values
    assert len(set(np.round(doses, 6))) == 5 and doses.min() >= 25 and doses.max() <= 300  # drawn per sample
    fam = [str(f) for f in ds["family"].values]
    for i, f in enumerate(fam):
        sph = dstore.read_record(out, i)
        assert sph is not None and sph["family"] == f
    import zarr

    root = zarr.open_group(out, mode="r")
    spheres = [np.asarray(root["spheres"][dstore.sample_id(i)]) for i in range(5)]
    for f, s in zip(fam, spheres):
        assert (len(s) > 0) == (f != "blobs") and s.shape[1:] == (4,)
    figs = dstore.figures_dir(out)
    saved = json.loads((figs / "card.json").read_text())
    assert saved["job"] == {"name": "t"} and saved["achieved"]["samples"] == 5
    assert saved == card == ds.attrs["card"]
    assert (figs / "psd.png").stat().st_size > 5000 and (figs / "panels.png").stat().st_size > 5000
    assert not partial_path(out).exists()


def test_same_seed_same_dataset(tmp_path: Path) -> None:
    a = build_dataset(tmp_path / "a.zarr", _plans(3), seed=3, executor="local", figures=False)
    b = build_dataset(tmp_path / "b.zarr", _plans(3), seed=3, executor="local", figures=False)
    da_, db = dstore.open_dataset(tmp_path / "a.zarr"), dstore.open_dataset(tmp_path / "b.zarr")
    np.testing.assert_array_equal(da_["image"].values, db["image"].values)
    np.testing.assert_array_equal(da_["labels"].values, db["labels"].values)
    assert a["achieved"]["porosity_mean"] == b["achieved"]["porosity_mean"]
    # a sample's parameters do not depend on the dataset's size
    assert _plans(3)[1] == _plans(5)[1]


def test_interrupted_build_resumes_and_is_never_taken_for_done(tmp_path: Path) -> None:
    out = tmp_path / "d.zarr"
    plans = _plans(4)
    tmp = partial_path(out)
    key = "k"
    # simulate a build that died after two samples, and a third whose writer died mid-write
    from pipeline.synth.factory import _build_key

    key = _build_key(plans, None)
    dstore.create_store(tmp, 4, (12, 32, 32), (10.0, 10.0, 10.0), build_key=key)
    rec0 = make_sample(str(tmp), plans[0])
    make_sample(str(tmp), plans[1])
    import zarr

    zarr.open_group(tmp, mode="r+")["labels"][2] = np.ones((12, 32, 32), np.uint8)  # arrays, but no record
    assert dstore.done_samples(tmp) == {0, 1}
    with pytest.raises(UserError, match="no such dataset"):
        dstore.open_dataset(out)
    with pytest.raises(UserError, match="unfinished"):
        dstore.open_dataset(tmp)
    before = (tmp / "records" / "s000000.json").stat().st_mtime_ns
    build_dataset(out, plans, seed=3, executor="local", figures=False)
    ds = dstore.open_dataset(out)
    assert (Path(out) / "records" / "s000000.json").stat().st_mtime_ns == before  # finished sample not redone
    assert dstore.read_record(out, 0) == rec0
    ref = build_dataset(tmp_path / "ref.zarr", plans, seed=3, executor="local", figures=False)
    np.testing.assert_array_equal(ds["labels"].values, dstore.open_dataset(tmp_path / "ref.zarr")["labels"].values)
    np.testing.assert_array_equal(ds["image"].values, dstore.open_dataset(tmp_path / "ref.zarr")["image"].values)
    assert ref["achieved"]["samples"] == 4


def test_existing_output_is_kept_without_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "d.zarr"
    build_dataset(out, _plans(2), seed=1, executor="local", figures=False)
    with pytest.raises(UserError, match="already exists"):
        build_dataset(out, _plans(2), seed=1, executor="local", figures=False)


def test_structures_only_then_render(tmp_path: Path) -> None:
    plans = plan_samples(3, seed=2, shape=(12, 24, 24), voxel_size_nm=(10.0, 10.0, 10.0), families={"solid_spheres": 1.0},
                         structure_ranges={"median_nm": 60.0}, render=None)
    build_dataset(tmp_path / "s.zarr", plans, seed=2, executor="local", figures=False)
    s = dstore.open_dataset(tmp_path / "s.zarr")
    assert "image" not in s and s["labels"].shape == (3, 12, 24, 24)
    rplans = plan_renders(tmp_path / "s.zarr", seed=5, render={"backend": "builtin"}, render_ranges={"drift_px": 0.0, "dose": 50.0})
    build_dataset(tmp_path / "r.zarr", rplans, seed=5, source=tmp_path / "s.zarr", executor="local", figures=False)
    r = dstore.open_dataset(tmp_path / "r.zarr")
    np.testing.assert_array_equal(r["labels"].values, s["labels"].values)  # same structures
    assert r["image"].shape == (3, 12, 24, 24) and float(r["image"].std()) > 5
    np.testing.assert_array_equal(r["porosity"].values, s["porosity"].values)
    assert np.all(r["render_dose"].values == 50.0)


def test_splits_rule() -> None:
    s = assign_splits(100, 1)
    assert (s.count("train"), s.count("val"), s.count("test")) == (80, 10, 10)
    assert s == assign_splits(100, 1) and s != assign_splits(100, 2)
    assert sorted(assign_splits(3, 0)) == ["test", "train", "val"]
    assert assign_splits(5, 0, {"train": 1.0}) == ["train"] * 5


def test_shine_through_share_counts_bright_pore_voxels() -> None:
    import numpy as np

    from pipeline.synth.stats import shine_through_share

    labels = np.zeros((2, 10, 10), np.uint8)
    labels[:, :, :5] = 1
    image = np.where(labels == 1, 20, 200).astype(np.uint8)
    assert shine_through_share(image, labels) == 0.0
    image[:, :5, :5] = 190  # half the pore shows bright material behind it
    assert abs(shine_through_share(image, labels) - 0.5) < 1e-9
    assert shine_through_share(image, np.zeros_like(labels)) == 0.0
