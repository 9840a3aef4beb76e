"""`porelab measure`: METRICS.json from a label store (and a truth); one-sentence errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage as ndi

from pipeline.cli.main import main
from pipeline.io.volume import as_volume, write_volume


def test_measure_writes_metrics(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(2)
    lab = (ndi.gaussian_filter(rng.random((24, 32, 32)), 2) > 0.5).astype(np.uint8)
    noisy = lab.copy()
    noisy[5] ^= 1
    a = write_volume(as_volume(noisy, (10, 5, 5), name="labels"), tmp_path / "a.zarr", chunks=(8, 16, 16))
    t = write_volume(as_volume(lab, (10, 5, 5), name="labels"), tmp_path / "t.zarr")
    out = tmp_path / "m.json"
    assert main(["measure", str(a), "--truth", str(t), "-o", str(out), "--tortuosity", "both"]) == 0
    line = capsys.readouterr().out
    assert "porosity" in line and "pore tortuosity factor z" in line and "geometric tortuosity" in line
    m = json.loads(out.read_text())
    assert m["porosity"]["porosity"] == pytest.approx(noisy.mean())
    assert len(m["porosity"]["per_slice"]) == 24
    assert m["truth"]["porosity_truth"] == pytest.approx(lab.mean())
    assert m["truth"]["accuracy"] == pytest.approx(1 - 1 / 24)
    assert set(m["connectivity"]["connected_fraction"]) == {"z", "y", "x"}
    assert m["psd"]["fit"]["sigma"] > 0
    # the printed pore size is the distribution's median; the fit's comes with its KS distance
    assert f"median {m['psd']['median_nm']:.1f} nm" in line and f"KS {m['psd']['fit']['ks']:.3f}" in line
    assert set(m["transport"]["pore"]) == {"z", "y", "x"} and m["transport"]["pore"]["z"]["tau"] >= 1
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".porelab-")]  # no scratch left beside the output
    assert main(["measure", str(a), "-o", str(out), "--overwrite", "--no-tortuosity"]) == 0
    assert "skipped: tortuosity" in capsys.readouterr().out
    assert "tortuosity" in json.loads(out.read_text())["skipped"]
    assert main(["measure", str(a), "-o", str(tmp_path / "y.json"), "--transport-roi", "0:4,0:8"]) == 2
    assert "Z0:Z1,Y0:Y1,X0:X1" in capsys.readouterr().err
    assert main(["measure", str(a), "-o", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    small = write_volume(as_volume(lab[:4], (10, 5, 5), name="labels"), tmp_path / "s.zarr")
    assert main(["measure", str(a), "--truth", str(small), "-o", str(tmp_path / "x.json")]) == 2
    assert "expected the labels' shape" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()
