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
