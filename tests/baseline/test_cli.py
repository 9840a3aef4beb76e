"""`porelab baseline`: labels and the sweep from a grey store; errors are one sentence."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.cli.main import main
from pipeline.io.volume import as_volume, open_volume, write_volume


def test_baseline_cli(tmp_path: Path, rendered: tuple[np.ndarray, np.ndarray], capsys: pytest.CaptureFixture[str]) -> None:
    image, truth = rendered
    img = write_volume(as_volume(image, (10, 10, 10)), tmp_path / "img.zarr")
    tru = write_volume(as_volume(truth, (10, 10, 10), name="labels"), tmp_path / "t.zarr")
    out = tmp_path / "bl"
    assert main(["baseline", str(img), "-o", str(out), "--sweep-slices", "3", "--truth", str(tru)]) == 0
    assert "spread" in capsys.readouterr().out
    lab = open_volume(out / "labels.zarr")
    assert lab.dtype == np.uint8 and lab.attrs["voxel_size_nm"] == [10, 10, 10]
    res = json.loads((out / "baseline.json").read_text())
    assert res["porosity"] == pytest.approx(float(lab.data.mean().compute()))
    assert res["truth"]["accuracy"] > 0.7 and res["sweep"]["spread"] > 0
    assert main(["baseline", str(img), "-o", str(out), "--no-sweep"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["baseline", str(img), "-o", str(tmp_path / "b2"), "--filter-size", "-1"]) == 2
    assert "filter_size" in capsys.readouterr().err
    assert not (tmp_path / "b2").exists()
