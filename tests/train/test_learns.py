"""A few minutes of training on a small synthetic dataset beat the threshold baseline on its test split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipeline.jobs.runner import run_job


@pytest.mark.slow
def test_a_short_training_beats_the_baseline(tmp_path: Path) -> None:
    job = tmp_path / "learn.yaml"
    job.write_text(yaml.safe_dump({
        "name": "learn", "seed": 4,
        "engine": {"dask": {"n_workers": 2, "threads_per_worker": 1, "memory_limit": "3GiB"}},
        "stages": [
            {"stage": "synth", "count": 16, "shape": [32, 128, 128], "executor": "local", "figures": False,
             "structure": {"families": {"solid_spheres": 1, "blobs": 1, "agglomerates": 1}, "porosity": [0.35, 0.7],
                           "median_nm": [60, 140]},
             "splits": {"train": 0.75, "val": 0.125, "test": 0.125}},
            {"stage": "train2d", "slices": 3, "patch": [96, 96], "tile": [128, 128], "epochs": 6, "steps_per_epoch": 30,
             "batch_size": 8, "lr": 0.003, "val_slices": 8, "net": {"features": 8, "depth": 3},
             "workers": {"executor": "local"}},
            {"stage": "segment", "input": "synth", "model": "train2d", "splits": ["test"]},
            {"stage": "evaluate", "segmentations": ["segment"], "split": "test"},
        ]}))
    run = run_job(job, runs_dir=tmp_path / "runs").run_dir
    history = json.loads((run / "train2d" / "history.json").read_text())
    assert history[-1]["train_loss"] < 0.7 * history[0]["train_loss"]
    ev = json.loads((run / "evaluate.json").read_text())["methods"]
    model, base = ev["segment"]["overall"], ev["baseline"]["overall"]
    assert model["iou_pore"] > base["iou_pore"], (model, base)
    assert model["porosity_abs_error"] < base["porosity_abs_error"], (model, base)
