"""Ingest with each codec: exact round trips, the choice recorded in attrs, the CLI flag and the stage field."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml
import zarr

from pipeline.cli.main import main
from pipeline.io.ingest import ingest
from pipeline.io.volume import open_volume

VOXEL = (10.0, 5.0, 5.0)
CHUNKS = (4, 32, 32)


def _noise() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 65536, size=(10, 70, 66), dtype=np.uint16)


def _smooth() -> np.ndarray:
    z, y, x = np.mgrid[0:10, 0:70, 0:66]
    return (1000 + 10 * z + y + x).astype(np.uint16)


def _compressors(store: Path) -> tuple:
    return tuple(zarr.open_array(store / "image", mode="r").compressors)


@pytest.mark.parametrize("kind, expected", [("noise", "none"), ("smooth", "lz4")])
def test_auto_round_trips_and_records_its_choice(tmp_path: Path, kind: str, expected: str) -> None:
    data = _noise() if kind == "noise" else _smooth()
    tifffile.imwrite(tmp_path / "s.tif", data)
    out = ingest(tmp_path / "s.tif", tmp_path / "s.zarr", VOXEL, chunks=CHUNKS, progress=None)
    vol = open_volume(out)
    np.testing.assert_array_equal(vol.values, data)
    codec = vol.attrs["codec"]
    assert codec["name"] == expected and codec["requested"] == "auto" and codec["reason"]
    assert codec["min_ratio"] == 1.2 and (codec["sample_ratio"] < 1.2) == (expected == "none")
    comps = _compressors(out)
    assert comps == () if expected == "none" else comps[0].cname.value == "lz4"


@pytest.mark.parametrize("codec", ["none", "lz4", "zstd"])
def test_forced_codec_is_used_whatever_the_data(tmp_path: Path, codec: str) -> None:
    data = _smooth()  # auto would pick lz4
    np.save(tmp_path / "s.npy", data)
    out = ingest(tmp_path / "s.npy", tmp_path / "s.zarr", VOXEL, chunks=CHUNKS, progress=None, codec=codec)
    np.testing.assert_array_equal(open_volume(out).values, data)
    assert open_volume(out).attrs["codec"]["name"] == codec
    comps = _compressors(out)
    assert comps == () if codec == "none" else comps[0].cname.value == codec
    stored = sum(p.stat().st_size for p in (out / "image" / "c").rglob("*") if p.is_file())
    assert (stored >= data.nbytes) == (codec == "none")


def test_bad_codec_is_a_value_error_before_anything_is_written(tmp_path: Path) -> None:
    np.save(tmp_path / "s.npy", _smooth())
    with pytest.raises(ValueError, match="codec 'gzip' is not known; expected one of auto, none, lz4, zstd"):
        ingest(tmp_path / "s.npy", tmp_path / "s.zarr", VOXEL, progress=None, codec="gzip")
    assert not list(tmp_path.glob("*.zarr")) and not list(tmp_path.glob(".s.zarr*"))


def test_cli_codec_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    np.save(tmp_path / "s.npy", _smooth())
    argv = ["ingest", str(tmp_path / "s.npy"), "--voxel-size", "10,5,5", "--chunks", "4,32,32"]
    assert main([*argv, "-o", str(tmp_path / "a.zarr")]) == 0
    assert "codec: lz4 (" in capsys.readouterr().out
    assert main([*argv, "-o", str(tmp_path / "n.zarr"), "--codec", "none"]) == 0
    assert "codec: none (none was asked for explicitly)" in capsys.readouterr().out
    assert _compressors(tmp_path / "n.zarr") == ()
    with pytest.raises(SystemExit):
        main([*argv, "-o", str(tmp_path / "b.zarr"), "--codec", "gzip"])
    assert "invalid choice: 'gzip'" in capsys.readouterr().err


def test_stage_codec_field(tmp_path: Path) -> None:
    from pipeline.jobs.runner import run_job

    np.save(tmp_path / "noise.npy", _noise())
    np.save(tmp_path / "smooth.npy", _smooth())
    job = {
        "name": "codecs",
        "engine": {"dask": {"n_workers": 1, "memory_limit": "1GiB"}, "chunks": list(CHUNKS)},
        "stages": [
            {"stage": "ingest", "name": "noise", "path": "noise.npy", "voxel_size_nm": list(VOXEL)},
            {"stage": "ingest", "name": "forced", "path": "noise.npy", "voxel_size_nm": list(VOXEL), "codec": "zstd"},
            {"stage": "ingest", "name": "smooth", "path": "smooth.npy", "voxel_size_nm": list(VOXEL)},
            {"stage": "ingest", "name": "restore", "path": "smooth", "codec": "none"},
        ],
    }
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    run_job(tmp_path / "job.yaml", runs_dir=tmp_path / "runs", report=False)
    run = tmp_path / "runs" / "codecs"
    for name, codec, data in [("noise", "none", _noise()), ("forced", "zstd", _noise()),
                              ("smooth", "lz4", _smooth()), ("restore", "none", _smooth())]:
        vol = open_volume(run / f"{name}.zarr")
        np.testing.assert_array_equal(vol.values, data)
        assert vol.attrs["codec"]["name"] == codec, name
        comps = _compressors(run / f"{name}.zarr")
        assert comps == () if codec == "none" else comps[0].cname.value == codec
    stages = {s["name"]: s for s in json.loads((run / "manifest.json").read_text())["stages"]}
    assert stages["forced"]["metrics"]["codec"] == "zstd"


def test_stage_rejects_a_bad_codec(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    np.save(tmp_path / "s.npy", _smooth())
    job = {"name": "bad", "stages": [{"stage": "ingest", "path": "s.npy", "voxel_size_nm": list(VOXEL), "codec": "gzip"}]}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    assert main(["validate", str(tmp_path / "job.yaml")]) != 0
    assert "codec" in capsys.readouterr().err


def test_cli_and_stage_offer_the_codec_names() -> None:
    from pipeline.cli.ingest import CODEC_CHOICES
    from pipeline.io.codecs import CODEC_NAMES
    from pipeline.jobs.stages.ingest import Config

    assert CODEC_CHOICES == CODEC_NAMES
    assert set(Config.model_fields["codec"].annotation.__args__) == set(CODEC_NAMES)
