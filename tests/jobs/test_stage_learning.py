"""The learning stages in a job: synth -> train2d -> segment (dataset) -> train3d, then a volume segmented and refined."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.cli.main import main
from pipeline.io.volume import open_volume
from pipeline.jobs.runner import run_job

TINY = {"features": 4, "depth": 2}


def _job(tmp: Path, **changes: object) -> Path:
    spec = {
        "name": "learn",
        "seed": 3,
        "engine": {"dask": {"n_workers": 1, "threads_per_worker": 2, "memory_limit": "2GiB"}, "chunks": [16, 64, 64]},
        "stages": [
            {"stage": "synth", "count": 6, "shape": [16, 64, 64], "executor": "local", "figures": False,
             "structure": {"families": {"solid_spheres": 1, "blobs": 1}, "porosity": [0.4, 0.6], "median_nm": 60},
             "splits": {"train": 0.5, "val": 0.25, "test": 0.25}},
            {"stage": "train2d", "slices": 3, "patch": [32, 32], "tile": [64, 64], "epochs": 1, "steps_per_epoch": 3,
             "batch_size": 2, "net": TINY, "val_slices": 2, "workers": {"executor": "local"}},
            {"stage": "segment", "name": "seg_ds", "input": "synth", "model": "train2d"},
            {"stage": "train3d", "probability": "seg_ds", "patch": [8, 32, 32], "tile": [8, 64, 64], "epochs": 1,
             "steps_per_epoch": 2, "batch_size": 1, "net": TINY, "workers": {"executor": "local"}},
            {"stage": "refine", "name": "ref_ds", "input": "seg_ds", "model": "train3d", "splits": ["test"]},
            {"stage": "evaluate", "segmentations": ["seg_ds", "ref_ds"], "split": "test"},
            {"stage": "ingest", "name": "image", "path": "synth", "sample": 0},
            {"stage": "ingest", "name": "truth", "path": "synth", "sample": 0, "variable": "labels"},
            {"stage": "preprocess", "input": "image"},
            {"stage": "segment", "model": "train2d", "tta": True},
            {"stage": "refine", "model": "train3d"},
            {"stage": "refine", "name": "mask", "input": "segment", "model": "train3d", "probability_store": "probability"},
            {"stage": "analyze", "input": "refine", "truth": "truth", "tortuosity": False},
        ],
    }
    spec.update(changes)
    path = tmp / "learn.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("learn")
    result = run_job(_job(tmp), runs_dir=tmp / "runs")
    assert result.ran[-1] == "analyze"
    return result.run_dir


def test_training_stages_write_model_folders(run: Path) -> None:
    manifest = json.loads((run / "manifest.json").read_text())
    stages = {s["name"]: s for s in manifest["stages"]}
    for name, task in (("train2d", "segment"), ("train3d", "refine")):
        card = json.loads((run / name / "model" / "model.json").read_text())
        assert card["task"] == task and stages[name]["output"] == str(run / name / "model")
        assert {"iou_pore", "iou_solid", "porosity_abs_error"} <= set(stages[name]["metrics"]["val"])
        assert Path(stages[name]["files"]["curves"]).is_file()


def test_a_dataset_is_segmented_per_sample_with_its_splits(run: Path) -> None:
    import xarray as xr

    ds = xr.open_zarr(run / "seg_ds.zarr", consolidated=False)
    src = xr.open_zarr(run / "synth.zarr", consolidated=False)
    assert ds["probability"].dims == ("sample", "z", "y", "x") and ds["probability"].dtype == np.float16
    assert ds["split"].values.tolist() == src["split"].values.tolist()
    assert ds["sample"].values.tolist() == list(range(src.sizes["sample"]))
    assert ds.attrs["dataset"].endswith("synth.zarr")


def test_evaluation_scores_segmentations_and_the_baseline_per_family(run: Path) -> None:
    import xarray as xr

    d = json.loads((run / "evaluate.json").read_text())
    src = xr.open_zarr(run / "synth.zarr", consolidated=False)
    test = [i for i, s in enumerate(src["split"].values.tolist()) if s == "test"]
    assert d["samples"] == len(test) and set(d["methods"]) == {"seg_ds", "ref_ds", "baseline"}
    for m in d["methods"].values():
        assert 0 <= m["overall"]["iou_pore"] <= 1 and [r["sample"] for r in m["per_sample"]] == test
        assert set(m["families"]) == {src["family"].values[i] for i in test}
    assert "ce" in d["methods"]["seg_ds"]["overall"] and "ce" not in d["methods"]["baseline"]["overall"]
    assert (run / "evaluate.md").read_text().startswith("| method | family |")
    assert "Evaluation on held-out stacks" in (run / "report" / "index.html").read_text()


def test_a_volume_is_segmented_and_refined_with_mask_first(run: Path) -> None:
    seg = open_volume(run / "segment.zarr")
    assert seg.name == "mask" and seg.dtype == np.uint8 and set(np.unique(seg.values)) <= {0, 1}
    prob = open_volume(run / "segment.zarr", "probability")
    unc = open_volume(run / "segment.zarr", "uncertainty")
    assert prob.shape == unc.shape == seg.shape and prob.attrs["voxel_size_nm"] == [10.0, 10.0, 10.0]
    assert np.array_equal(seg.values, (prob.values >= 0.5).astype(np.uint8))
    ref = open_volume(run / "refine.zarr")
    assert ref.name == "mask" and ref.attrs["model"]["task"] == "refine"
    assert ref.attrs["image_store"].endswith("preprocess.zarr")


def test_the_probability_can_go_to_its_own_store(run: Path) -> None:
    mask = open_volume(run / "mask.zarr")
    assert {p.name for p in (run / "mask.zarr").iterdir() if (p / "zarr.json").is_file()} >= {"mask"}
    assert not (run / "mask.zarr" / "probability").exists()
    prob = open_volume(run / "probability.zarr", "probability")
    assert prob.shape == mask.shape and mask.attrs["probability_store"].endswith("probability.zarr")
    assert np.array_equal(mask.values, (prob.values >= 0.5).astype(np.uint8))
    np.testing.assert_array_equal(mask.values, open_volume(run / "refine.zarr").values)


def test_analyze_of_a_segmentation_reports_ce(run: Path) -> None:
    m = json.loads((run / "analyze.json").read_text())
    assert m["truth"]["ce"] > 0 and 0 <= m["truth"]["iou_pore"] <= 1


def test_the_report_shows_training(run: Path) -> None:
    html = (run / "report" / "index.html").read_text()
    assert "Training" in html and "train2d" in html


def test_a_second_run_skips_everything_and_measure_cli_reports_ce(run: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    again = run_job(_job(tmp_path), runs_dir=run.parent)
    assert again.ran == []
    assert main(["measure", str(run / "segment.zarr"), "--truth", str(run / "truth.zarr"), "-o", str(tmp_path / "m.json"),
                 "--no-tortuosity"]) == 0
    assert "CE " in capsys.readouterr().out


def test_train_cli_stops_after_the_last_training_stage(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    job = _job(tmp_path)
    assert main(["train", str(job), "--runs-dir", str(tmp_path / "runs")]) == 0
    manifest = json.loads((tmp_path / "runs" / "learn" / "manifest.json").read_text())
    assert manifest["status"] == "partial" and manifest["stages"][-1]["name"] == "train3d"
    out = capsys.readouterr().out
    assert "train2d:" in out and "train3d:" in out


def test_a_dataset_without_a_val_split_is_one_sentence(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    spec = yaml.safe_load(_job(tmp_path).read_text())
    spec["stages"][0]["splits"] = {"train": 1.0}
    spec["stages"] = spec["stages"][:2]
    job = tmp_path / "noval.yaml"
    job.write_text(yaml.safe_dump(spec))
    assert main(["run", str(job), "--runs-dir", str(tmp_path / "runs")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1 and "no sample in the 'val' split" in err[0]
    assert not (tmp_path / "runs" / "learn" / "train2d" / "model").exists()
