"""``porelab analyze``: one command from a stack to mask, probability, metrics, meshes and report; its refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from pipeline.cli.main import main
from pipeline.io.volume import open_volume

WORKERS = ["--workers", "1", "--memory-limit", "2GiB"]


def _stack(tmp: Path) -> tuple[Path, Path]:
    from pipeline.synth.render_builtin import render_builtin
    from pipeline.synth.structures import random_spheres

    labels = random_spheres((32, 48, 48), porosity=0.5, median_nm=120.0, voxel_size_nm=(10.0, 10.0, 10.0), seed=3).labels
    r = render_builtin(labels, (10.0, 10.0, 10.0), {"drift_px": 0.0}, seed=3)
    tifffile.imwrite(tmp / "stack.tif", r.image[:8])
    tifffile.imwrite(tmp / "truth.tif", r.labels[:8])
    return tmp / "stack.tif", tmp / "truth.tif"


@pytest.fixture(scope="module")
def analyzed(tmp_path_factory: pytest.TempPathFactory, model_factory) -> tuple[Path, Path]:  # noqa: ANN001
    tmp = tmp_path_factory.mktemp("analyze")
    stack, truth = _stack(tmp)
    out = tmp / "sample1"
    args = ["analyze", str(stack), "--voxel-size", "10,10,10", "--no-tilt", "--model", str(model_factory("slices", k=3)),
            "--refine-model", str(model_factory("volume")), "--truth", str(truth), "--truth-voxel-size", "10,10,10",
            "--out", str(out), *WORKERS]
    assert main(args) == 0
    return out, stack


def test_the_run_folder_holds_what_a_user_needs(analyzed: tuple[Path, Path]) -> None:
    out, _ = analyzed
    mask = open_volume(out / "mask.zarr")
    prob = open_volume(out / "probability.zarr", "probability")
    assert mask.dtype == np.uint8 and mask.shape == prob.shape and mask.attrs["voxel_size_nm"] == [10.0, 10.0, 10.0]
    assert "roi_box" in mask.attrs or "drift_px" in mask.attrs  # what the correction did travels with the mask
    m = json.loads((out / "metrics.json").read_text())
    assert {"porosity", "psd", "surface", "truth", "baseline"} <= set(m) and "sweep_spread" in m["baseline"]
    assert (out / "meshes" / "voxel_direct.ply").is_file() and (out / "report" / "index.html").is_file()
    assert (out / "job.yaml").is_file() and json.loads((out / "manifest.json").read_text())["status"] == "done"


def test_running_again_skips_everything(analyzed: tuple[Path, Path], model_factory, capsys) -> None:  # noqa: ANN001
    out, stack = analyzed
    spec = json.loads((out / "manifest.json").read_text())["spec"]
    before = json.loads((out / "manifest.json").read_text())["updated"]
    from pipeline.jobs.runner import run_job

    assert run_job(out / "job.yaml", runs_dir=out.parent).ran == []
    assert spec["stages"][0]["path"] == str(stack.resolve()) and before


def test_an_output_folder_that_holds_something_else_is_refused(tmp_path: Path, model_factory, capsys) -> None:  # noqa: ANN001
    stack, _ = _stack(tmp_path)
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["analyze", str(stack), "--voxel-size", "10,10,10", "--model", str(model_factory("slices")),
                 "--refine-model", "none", "--out", str(out)]) == 2
    assert "already holds something else" in capsys.readouterr().err and (out / "notes.txt").is_file()


@pytest.mark.parametrize("extra,match", [
    ([], "pass --voxel-size"),
    (["--voxel-size", "10,10"], "expected 3 positive numbers"),
    (["--voxel-size", "10,10,10", "--angle", "120"], "expected degrees"),
])
def test_bad_options_are_one_sentence(tmp_path: Path, model_factory, capsys, extra, match) -> None:  # noqa: ANN001
    stack, _ = _stack(tmp_path)
    with pytest.raises(SystemExit) if "expected 3" in match else _nothing():
        code = main(["analyze", str(stack), "--model", str(model_factory("slices")), "--refine-model", "none",
                     "--out", str(tmp_path / "o"), *extra])
        assert code == 2
    assert match in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_stack_too_small_for_the_model_names_the_minimum(tmp_path: Path, model_factory, capsys) -> None:  # noqa: ANN001
    from pipeline.io.volume import as_volume
    from pipeline.segment.volume import SegmentOptions, segment_volume
    from pipeline.errors import UserError

    small = as_volume(np.zeros((4, 3, 40), np.float32), (10, 10, 10))
    with pytest.raises(UserError, match=r"needs at least 4 x 4"):
        segment_volume(small, SegmentOptions(model=model_factory("slices")))


def test_one_image_is_segmented_as_one_slice(tmp_path: Path, model_factory) -> None:  # noqa: ANN001
    from pipeline.io.volume import as_volume
    from pipeline.segment.volume import SegmentOptions, segment_volume

    img = as_volume(np.random.default_rng(0).random((1, 40, 40)).astype(np.float32), (10, 10, 10))
    seg = segment_volume(img, SegmentOptions(model=model_factory("slices", k=3), runtime="torch"))
    assert seg.data.compute().shape == (2, 1, 40, 40)
    np.save(tmp_path / "one.npy", np.zeros((40, 40), np.uint8))
    from pipeline.io.stacks import open_stack

    assert open_stack(tmp_path / "one.npy").shape == (1, 40, 40)


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *a: object) -> bool:
        return False
