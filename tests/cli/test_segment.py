"""``porelab segment``: the stores it writes and its one-sentence errors (exit 2, nothing left behind)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.cli.main import main
from pipeline.io.volume import as_volume, open_volume, write_volume

DASK = ["--workers", "1", "--memory-limit", "1GiB"]


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("seg")
    rng = np.random.default_rng(0)
    grey = rng.random((6, 40, 48)).astype(np.float32)
    out = {"grey": write_volume(as_volume(grey, (10, 5, 5)), tmp / "grey.zarr"),
           "raw": write_volume(as_volume((grey * 200).astype(np.uint8), (10, 5, 5)), tmp / "raw.zarr"),
           "labels": write_volume(as_volume((grey > 0.5).astype(np.uint8), (10, 5, 5), name="labels"), tmp / "labels.zarr"),
           "thin": write_volume(as_volume(grey[:2], (10, 5, 5)), tmp / "thin.zarr")}
    return out


def _err(capsys: pytest.CaptureFixture[str]) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(lines) == 1, lines
    return lines[0]


def test_segment_writes_mask_probability_and_uncertainty(stores, model_factory, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    model = model_factory("slices", k=3)
    out = tmp_path / "out.zarr"
    assert main(["segment", str(stores["grey"]), "-o", str(out), "--model", str(model), "--tta", "--refine", "none", *DASK]) == 0
    mask = open_volume(out)
    prob, unc = open_volume(out, "probability"), open_volume(out, "uncertainty")
    assert mask.name == "mask" and mask.dtype == np.uint8 and prob.dtype == np.float16
    assert mask.shape == prob.shape == unc.shape == (6, 40, 48)
    assert mask.attrs["voxel_size_nm"] == [10.0, 5.0, 5.0] and list(mask["y"].values[:2]) == [0.0, 5.0]
    assert np.array_equal(mask.values, (prob.values >= 0.5).astype(np.uint8))
    assert "porosity" in capsys.readouterr().out


def test_refine_keeps_the_2d_probability(stores, model_factory, tmp_path: Path) -> None:  # noqa: ANN001
    out = tmp_path / "ref.zarr"
    assert main(["segment", str(stores["grey"]), "-o", str(out), "--model", str(model_factory("slices", k=1)),
                 "--refine", str(model_factory("volume")), *DASK]) == 0
    assert {"mask", "probability", "probability_2d"} <= {p.name for p in out.iterdir()}
    assert open_volume(out).attrs["model"]["task"] == "segment"


def test_preprocess_option_normalises_a_raw_volume(stores, model_factory, tmp_path: Path) -> None:  # noqa: ANN001
    out = tmp_path / "raw.zarr"
    assert main(["segment", str(stores["raw"]), "-o", str(out), "--model", str(model_factory("slices")), "--preprocess",
                 "--refine", "none", *DASK]) == 0
    assert open_volume(out).shape == (6, 40, 48)


@pytest.mark.parametrize("case,match", [
    ("raw", "holds uint8 values, not a preprocessed volume"),
    ("labels", "holds labels"),
    ("thin", "reads 3 neighbouring slices, so it needs at least 3"),
])
def test_bad_inputs_are_one_sentence(case: str, match: str, stores, model_factory, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    out = tmp_path / "o.zarr"
    assert main(["segment", str(stores[case]), "-o", str(out), "--model", str(model_factory("slices", k=3)), *DASK]) == 2
    assert match in _err(capsys)
    assert not out.exists() and not list(tmp_path.glob(".o.zarr*"))


def test_bad_models_are_one_sentence(stores, model_factory, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    out = tmp_path / "o.zarr"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["segment", str(stores["grey"]), "-o", str(out), "--model", str(empty)]) == 2
    assert "has no model.json" in _err(capsys)
    assert main(["segment", str(stores["grey"]), "-o", str(out), "--model", str(model_factory("volume"))]) == 2
    assert "is a refine model" in _err(capsys)
    assert main(["segment", str(stores["grey"]), "-o", str(out), "--model", str(tmp_path / "nope")]) == 2
    assert "no such model folder" in _err(capsys)
    assert not out.exists()


def test_an_existing_output_is_kept_unless_overwrite(stores, model_factory, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    out = tmp_path / "o.zarr"
    out.mkdir()
    assert main(["segment", str(stores["grey"]), "-o", str(out), "--model", str(model_factory("slices"))]) == 2
    assert "already exists" in _err(capsys)
