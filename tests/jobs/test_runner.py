"""`porelab run`: run folder, manifest, skipping what is up to date, --fresh."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.cli.main import main
from pipeline.io.volume import open_volume
from pipeline.jobs.runner import run_job, stage_seed


def _job(tmp_path: Path, *, seed: int = 1, name: str = "t") -> Path:
    data = np.random.default_rng(0).integers(0, 255, (9, 20, 24), dtype=np.uint8)
    np.save(tmp_path / "stack.npy", data)
    job = {
        "name": name,
        "seed": seed,
        "engine": {"dask": {"n_workers": 1, "memory_limit": "1GiB"}, "chunks": [4, 16, 16]},
        "stages": [
            {"stage": "ingest", "path": "stack.npy", "voxel_size_nm": [10, 4, 4]},
            {"stage": "ingest", "name": "again", "path": "stack.npy", "voxel_size_nm": [10, 4, 4]},
        ],
    }
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


def test_run_writes_manifest_and_outputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job = _job(tmp_path)
    runs = tmp_path / "runs"
    assert main(["run", str(job), "--runs-dir", str(runs)]) == 0
    run_dir = runs / "t"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    for key in ("name", "spec", "spec_hash", "seed", "versions", "git_commit", "machine", "created", "status", "stages"):
        assert key in manifest, key
    assert manifest["status"] == "done"
    assert [s["name"] for s in manifest["stages"]] == ["ingest", "again"]
    for stage in manifest["stages"]:
        assert stage["status"] == "done" and stage["seconds"] >= 0
        assert stage["metrics"]["shape"] == [9, 20, 24]
        assert stage["seed"] == stage_seed(1, stage["name"])
    expected = np.load(tmp_path / "stack.npy")
    np.testing.assert_array_equal(open_volume(run_dir / "ingest.zarr").values, expected)
    assert "ran ingest, again" in capsys.readouterr().out

    # A finished job run again does nothing and says so.
    assert main(["run", str(job), "--runs-dir", str(runs)]) == 0
    assert "up to date, nothing to do" in capsys.readouterr().out
    assert json.loads((run_dir / "manifest.json").read_text()) == manifest


def test_changed_stage_reruns_only_what_changed(tmp_path: Path) -> None:
    job = _job(tmp_path)
    runs = tmp_path / "runs"
    run_job(job, runs_dir=runs, report=False)
    spec = yaml.safe_load(job.read_text())
    spec["stages"][1]["voxel_size_nm"] = [20, 4, 4]
    job.write_text(yaml.safe_dump(spec))
    result = run_job(job, runs_dir=runs, report=False)
    assert result.ran == ["again"] and result.skipped == ["ingest"]
    assert open_volume(runs / "t" / "again.zarr").attrs["voxel_size_nm"] == [20.0, 4.0, 4.0]


def test_fresh_redoes_everything(tmp_path: Path) -> None:
    job = _job(tmp_path)
    runs = tmp_path / "runs"
    run_job(job, runs_dir=runs, report=False)
    (runs / "t" / "stray.txt").write_text("x")
    result = run_job(job, runs_dir=runs, fresh=True, report=False)
    assert result.ran == ["ingest", "again"]
    assert not (runs / "t" / "stray.txt").exists()


def test_missing_input_fails_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job = _job(tmp_path)
    (tmp_path / "stack.npy").unlink()
    assert main(["run", str(job), "--runs-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "stack.npy" in err and "Traceback" not in err
    manifest = json.loads((tmp_path / "runs" / "t" / "manifest.json").read_text())
    assert manifest["status"] == "failed"
    assert manifest["stages"][0]["status"] == "failed"
    assert not (tmp_path / "runs" / "t" / "ingest.zarr").exists()


def test_stage_seeds_differ_and_are_stable() -> None:
    assert stage_seed(0, "a") == stage_seed(0, "a")
    assert stage_seed(0, "a") != stage_seed(0, "b")
    assert stage_seed(0, "a") != stage_seed(1, "a")


def test_ingest_stage_reads_a_store_sample(tmp_path: Path) -> None:
    import dask.array as da
    import xarray as xr

    labels = (np.random.default_rng(3).random((3, 6, 10, 12)) > 0.5).astype(np.uint8)
    ds = xr.Dataset(
        {"labels": (("sample", "z", "y", "x"), da.from_array(labels, chunks=(1, 6, 10, 12)))},
        attrs={"voxel_size_nm": [4.0, 4.0, 4.0]},
    )
    ds.to_zarr(tmp_path / "ds.zarr", zarr_format=3, consolidated=False)
    job = {
        "name": "fromstore",
        "engine": {"dask": {"n_workers": 1}},
        "stages": [
            {"stage": "ingest", "name": "truth", "path": "ds.zarr", "variable": "labels", "sample": 2},
            {"stage": "ingest", "name": "bad", "path": "ds.zarr", "variable": "labels"},
        ],
    }
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    with pytest.raises(Exception, match="holds 3 samples; set sample"):
        run_job(tmp_path / "job.yaml", runs_dir=tmp_path / "runs", report=False)
    vol = open_volume(tmp_path / "runs" / "fromstore" / "truth.zarr")
    np.testing.assert_array_equal(vol.values, labels[2])
    assert vol.attrs["voxel_size_nm"] == [4.0, 4.0, 4.0] and vol.attrs["source_sample"] == 2
    assert vol.name == "labels"
