"""The shipped demo job runs end to end, measures against its truth, and a second run does nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parents[2] / "jobs" / "demo.yaml"


@pytest.mark.slow
def test_demo_job_end_to_end(tmp_path: Path) -> None:
    from pipeline.jobs.runner import run_job

    result = run_job(DEMO, runs_dir=tmp_path)
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["status"] == "done"
    stages = {s["name"]: s for s in manifest["stages"]}
    assert all(s["status"] == "done" for s in stages.values())
    # the stack taken as if from the microscope: the shipped models beat the threshold baseline on it
    learned, baseline = stages["analyze"]["metrics"]["truth"], stages["baseline"]["metrics"]["truth"]
    # (the demo's stacks have strong shine-through, as the training data: the baseline scored 0.65 / 0.52 there)
    assert 0.5 < baseline["accuracy"] < 0.99 and 0.3 < baseline["iou_pore"] < 0.99
    assert learned["iou_pore"] > baseline["iou_pore"] and learned["accuracy"] > baseline["accuracy"]
    # and on the held-out samples of the dataset, per method, after refinement and after fine-tuning
    scored = stages["evaluate"]["metrics"]
    for method in ("shipped_3d", "finetuned_3d"):
        assert scored[method]["iou_pore"] > scored["baseline"]["iou_pore"]
        assert scored[method]["porosity_abs_error"] < scored["baseline"]["porosity_abs_error"]
    assert stages["finetuned"]["metrics"]["epochs"] == 2
    assert all(m["watertight"] for name, m in stages["reconstruct"]["metrics"]["methods"].items() if name != "voxel_direct")
    assert result.report is not None and result.report.stat().st_size > 100_000
    again = run_job(DEMO, runs_dir=tmp_path)
    assert again.ran == [] and len(again.skipped) == len(stages)
