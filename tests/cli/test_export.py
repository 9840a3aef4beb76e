"""``porelab export``: format from the name, dataset samples, and bad input as one sentence with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from pipeline.cli.main import main
from pipeline.io.volume import as_volume, write_volume


@pytest.fixture
def store(tmp_path: Path) -> Path:
    data = np.arange(6 * 10 * 12, dtype=np.uint16).reshape(6, 10, 12)
    return write_volume(as_volume(data, (10.0, 5.0, 5.0)), tmp_path / "in.zarr", chunks=(4, 8, 8))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipeline.synth.factory import build_dataset, plan_samples

    plans = plan_samples(2, seed=1, shape=(8, 24, 24), voxel_size_nm=(10.0, 10.0, 10.0), families={"solid_spheres": 1.0},
                         structure_ranges={"porosity": 0.5, "median_nm": 30.0, "sigma": 0.25}, render={"backend": "builtin"})
    out = tmp_path_factory.mktemp("ds") / "d.zarr"
    build_dataset(out, plans, seed=1, executor="local", figures=False)
    return out


def _error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code = main(["export", *argv])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1 and "Traceback" not in err, err
    return err


def test_format_follows_the_name(store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(store), "-o", str(tmp_path / "a.tif")]) == 0
    assert main(["export", str(store), "-o", str(tmp_path / "a.ome.zarr"), "--levels", "2"]) == 0
    assert main(["export", str(store), "-o", str(tmp_path / "a.raw")]) == 0
    assert main(["export", str(store), "--to", "tiff", "-o", str(tmp_path / "noext")]) == 0
    out = capsys.readouterr().out
    assert "a.ome.zarr: ome-zarr, 6 x 10 x 12 uint16, voxel 10 x 5 x 5 nm, 2 levels" in out
    assert tifffile.imread(tmp_path / "a.tif").shape == (6, 10, 12)
    assert tifffile.TiffFile(tmp_path / "noext").is_imagej
    assert json.loads((tmp_path / "a.raw.json").read_text())["shape"] == [6, 10, 12]
    assert (tmp_path / "a.ome.zarr" / "1").is_dir()


def test_overwrite(store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o.ome.zarr"
    assert main(["export", str(store), "-o", str(out), "--levels", "1"]) == 0
    err = _error(capsys, str(store), "-o", str(out))
    assert "o.ome.zarr" in err and "--overwrite" in err
    assert main(["export", str(store), "-o", str(out), "--levels", "2", "--overwrite"]) == 0
    assert (out / "1").is_dir()


def test_dataset_sample(dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import xarray as xr

    out = tmp_path / "s1.raw"
    assert main(["export", str(dataset), "--variable", "labels", "--sample", "1", "-o", str(out)]) == 0
    meta = json.loads((tmp_path / "s1.raw.json").read_text())
    want = xr.open_zarr(dataset)["labels"].isel(sample=1).values
    np.testing.assert_array_equal(np.fromfile(out, meta["numpy_dtype"]).reshape(meta["shape"]), want)
    assert meta["voxel_size_nm"] == [10.0, 10.0, 10.0] and meta["name"] == "labels"
    err = _error(capsys, str(dataset), "-o", str(tmp_path / "x.tif"))
    assert "2 samples" in err and "--sample" in err
    err = _error(capsys, str(dataset), "--sample", "5", "-o", str(tmp_path / "x.tif"))
    assert "sample 5 is out of range" in err
    err = _error(capsys, str(dataset), "--variable", "nope", "--sample", "0", "-o", str(tmp_path / "x.tif"))
    assert "no variable 'nope'" in err
    assert not (tmp_path / "x.tif").exists()


@pytest.mark.parametrize(
    "args, words",
    [
        (["--to", "png", "-o", "{tmp}/x.png"], ["--to png", "tiff, ome-zarr or raw"]),
        (["-o", "{tmp}/x.png"], ["x.png", "--to"]),
        (["--to", "ome-zarr", "-o", "{tmp}/x.tif"], ["x.tif", "tiff", "--to ome-zarr", ".ome.zarr"]),
        (["-o", "{tmp}/x.ome.zarr", "--levels", "0"], ["--levels 0"]),
        (["-o", "{store}"], ["is the store being exported"]),
        (["-o", "{store}/inside.tif"], ["is the store being exported"]),
    ],
)
def test_bad_arguments(store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], words: list[str]) -> None:
    argv = [a.format(tmp=tmp_path, store=store) for a in args]
    err = _error(capsys, str(store), *argv)
    for w in words:
        assert w in err, (w, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.zarr"]


def test_missing_or_unreadable_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _error(capsys, str(tmp_path / "none.zarr"), "-o", str(tmp_path / "x.tif"))
    assert "none.zarr" in err and "no such store" in err
    (tmp_path / "junk.zarr").mkdir()
    err = _error(capsys, str(tmp_path / "junk.zarr"), "-o", str(tmp_path / "x.tif"))
    assert "junk.zarr" in err
    assert not (tmp_path / "x.tif").exists()


def test_uint32_to_tiff_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write_volume(as_volume(np.zeros((2, 4, 4), np.uint32), (1.0, 1.0, 1.0)), tmp_path / "u.zarr")
    err = _error(capsys, str(src), "-o", str(tmp_path / "u.tif"))
    assert "uint32" in err and "raw or ome-zarr" in err
    assert not (tmp_path / "u.tif").exists()
