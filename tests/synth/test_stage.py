"""`synth` and `render` stages in a job: manifest metrics, files, a dataset the next stage can read."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.cli.main import main
from pipeline.errors import UserError
from pipeline.jobs.models import load_job
from pipeline.synth.dataset import open_dataset


def _job(tmp_path: Path, stages: list[dict]) -> Path:
    job = {"name": "syn", "seed": 5, "stages": stages}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


def test_synth_then_render_job(tmp_path: Path) -> None:
    job = _job(tmp_path, [
        {"stage": "synth", "count": 3, "shape": [12, 24, 24], "executor": "local", "render": None, "figures": False,
         "structure": {"families": {"pore_spheres": 1, "blobs": 1}, "porosity": [0.3, 0.5], "median_nm": 50,
                       "correlation_nm": 20}},
        {"stage": "render", "executor": "local",
         "render": {"params": {"dose": [40, 60], "drift_px": 0.0}}},
    ])
    assert main(["run", str(job), "--runs-dir", str(tmp_path / "runs")]) == 0
    run = tmp_path / "runs" / "syn"
    manifest = json.loads((run / "manifest.json").read_text())
    synth, render = manifest["stages"]
    assert synth["status"] == render["status"] == "done"
    assert synth["metrics"]["samples"] == 3 and synth["metrics"]["porosity_abs_error_max"] <= 0.01
    assert synth["metrics"]["samples_per_minute"] > 0
    assert Path(render["files"]["panels"]).is_file() and Path(render["files"]["card"]).is_file()
    structures = open_dataset(run / "synth.zarr")
    rendered = open_dataset(run / "render.zarr")
    assert "image" not in structures
    np.testing.assert_array_equal(rendered["labels"].values, structures["labels"].values)
    assert rendered["image"].shape == (3, 12, 24, 24)
    assert np.all((rendered["render_dose"].values >= 40) & (rendered["render_dose"].values <= 60))
    # the lead's ingest reads one sample of a dataset
    from pipeline.io.stores import volume_from_store

    vol = volume_from_store(run / "render.zarr", variable="image", sample=1)
    assert vol.shape == (12, 24, 24)


@pytest.mark.parametrize(
    "stage, fragment",
    [
        ({"stage": "synth", "structure": {"porosity": 1.2}}, "porosity 1.2 is outside"),
        ({"stage": "synth", "render": {"params": {"glow": 1}}}, "'glow' is not a renderer parameter"),
        ({"stage": "synth", "render": {"params": {"dose": [50, 10]}}}, "low above high"),
        ({"stage": "synth", "structure": {"families": {"cubes": 1}}}, "cubes"),
        ({"stage": "synth", "shape": [2, 10, 10]}, "at least 4 voxels"),
    ],
)
def test_bad_stage_values_name_the_key(tmp_path: Path, stage: dict, fragment: str) -> None:
    with pytest.raises(UserError, match="job.yaml") as err:
        load_job(_job(tmp_path, [stage]))
    assert fragment in str(err.value)


def test_ingest_reads_a_dataset_stage_and_undoes_its_drift(tmp_path: Path) -> None:
    """``path: synth`` reads the earlier stage; ``undo_drift`` moves labels back to the drift-free geometry."""
    job = _job(tmp_path, [
        {"stage": "synth", "count": 1, "shape": [24, 32, 32], "executor": "local", "figures": False,
         "structure": {"porosity": 0.5, "median_nm": 60}, "render": {"params": {"drift_px": 1.5}}},
        {"stage": "ingest", "name": "truth", "path": "synth", "sample": 0, "variable": "labels", "undo_drift": True},
        {"stage": "ingest", "name": "raw", "path": "synth", "sample": 0, "variable": "labels"},
    ])
    assert main(["run", str(job), "--runs-dir", str(tmp_path / "runs")]) == 0
    run = tmp_path / "runs" / "syn"
    import zarr

    from pipeline.io.volume import open_volume

    drift = np.asarray(zarr.open_group(run / "synth.zarr", mode="r")["drift_px"][0])
    assert np.abs(np.diff(drift, axis=0)).max() > 0  # the renderer did move slices
    raw = open_volume(run / "raw.zarr").values
    undone = open_volume(run / "truth.zarr").values
    assert undone.dtype == np.uint8 and set(np.unique(undone)) <= {0, 1}
    ref = np.round(np.median(drift, axis=0)).astype(int)
    m = int(np.abs(drift - ref).max()) + 1
    assert m < 10
    Y, X = raw.shape[1:]
    for z in range(raw.shape[0]):
        sy, sx = (drift[z] - ref).tolist()
        # slice z moved back by (sy, sx); compare away from the border that came into view
        np.testing.assert_array_equal(undone[z, m:Y - m, m:X - m], raw[z, m + sy:Y - m + sy, m + sx:X - m + sx])


def test_undo_drift_of_an_image_stack_is_a_user_error(tmp_path: Path) -> None:
    np.save(tmp_path / "stack.npy", np.zeros((4, 8, 8), np.uint8))
    job = _job(tmp_path, [{"stage": "ingest", "path": "stack.npy", "voxel_size_nm": [5, 5, 5], "undo_drift": True}])
    assert main(["run", str(job), "--runs-dir", str(tmp_path / "runs")]) == 2
