"""`porelab synth`: a dataset from the command line; bad values are one-sentence errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.cli.main import main
from pipeline.synth.dataset import figures_dir, open_dataset


def test_synth_writes_a_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "d.zarr"
    rc = main(["synth", "--count", "3", "--shape", "12,32,32", "--porosity", "0.4,0.6", "--median-nm", "60",
               "--family", "solid_spheres=2", "--family", "blobs", "--render-param", "dose=40,80",
               "--render-param", "sem_angle_deg=52", "--seed", "4", "--workers", "0", "-o", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "3 samples of 12 x 32 x 32 voxels" in text
    ds = open_dataset(out)
    assert ds["image"].shape == (3, 12, 32, 32)
    assert np.all((ds["render_dose"].values >= 40) & (ds["render_dose"].values <= 80))
    assert np.all(ds["render_sem_angle_deg"].values == 52)
    assert np.all((ds["target_porosity"].values >= 0.4) & (ds["target_porosity"].values <= 0.6))
    assert (figures_dir(out) / "card.json").is_file()
    # an existing dataset is not replaced without --overwrite
    assert main(["synth", "--count", "1", "--shape", "12,32,32", "--median-nm", "60", "--workers", "0", "-o", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--porosity", "1.5"], "porosity 1.5 is outside"),
        (["--render-param", "glow=1"], "'glow' is not a renderer parameter"),
        (["--render-param", "dose=-3"], "dose"),
        (["--family", "cubes"], "cubes"),
        (["--count", "0"], "--count 0 is not valid"),
        (["--median-nm", "5000"], "larger than half"),
        (["--generator", "pumapy"], "pumapy"),
    ],
)
def test_bad_values_are_one_sentence_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    from pipeline.synth.structures import pumapy_available

    if "--generator" in args and pumapy_available():
        pytest.skip("pumapy is importable here, so --generator pumapy is valid")
    out = tmp_path / "bad.zarr"
    base = ["synth", "--count", "1", "--shape", "12,32,32", "--median-nm", "60", "--workers", "0", "-o", str(out)]
    rc = main(base + args)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and not any(tmp_path.glob(".bad.zarr*"))
