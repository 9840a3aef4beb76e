"""Bad inputs to `porelab ingest`: exit 2, one sentence naming the file, no store left behind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from pipeline.cli.main import main


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(["ingest", *argv])
    err = capsys.readouterr().err
    return code, err


def _no_store(tmp_path: Path) -> None:
    leftovers = [p.name for p in tmp_path.iterdir() if ".zarr" in p.name]
    assert leftovers == [], leftovers


def _one_sentence(err: str) -> None:
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1, err
    assert "Traceback" not in err


def test_missing_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run(capsys, str(tmp_path / "nope.tif"), "--voxel-size", "1,1,1", "-o", str(tmp_path / "o.zarr"))
    assert code == 2 and "nope.tif" in err and "no such file" in err
    _one_sentence(err)
    _no_store(tmp_path)


def test_empty_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    code, err = _run(capsys, str(tmp_path / "empty"), "--voxel-size", "1,1,1", "-o", str(tmp_path / "o.zarr"))
    assert code == 2 and "empty" in err and "no slices" in err
    _one_sentence(err)
    _no_store(tmp_path)


def test_slices_of_different_shapes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    for i in range(4):
        tifffile.imwrite(folder / f"s{i}.tif", np.zeros((8, 8), np.uint8))
    tifffile.imwrite(folder / "s4.tif", np.zeros((8, 9), np.uint8))
    code, err = _run(capsys, str(folder), "--voxel-size", "1,1,1", "-o", str(tmp_path / "o.zarr"))
    assert code == 2 and "s4.tif" in err and "(8, 9)" in err
    _one_sentence(err)
    _no_store(tmp_path)


def test_truncated_tiff(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = np.arange(6 * 32 * 32, dtype=np.uint16).reshape(6, 32, 32)
    tifffile.imwrite(tmp_path / "t.tif", data)
    raw = (tmp_path / "t.tif").read_bytes()
    (tmp_path / "t.tif").write_bytes(raw[: len(raw) // 2])
    code, err = _run(capsys, str(tmp_path / "t.tif"), "--voxel-size", "1,1,1", "-o", str(tmp_path / "o.zarr"))
    assert code == 2 and "t.tif" in err and "truncated" in err.lower()
    _one_sentence(err)
    _no_store(tmp_path)


def test_truncated_compressed_tiff(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = np.random.default_rng(1).integers(0, 65535, (6, 64, 64), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "t.tif", data, compression="zlib")
    raw = (tmp_path / "t.tif").read_bytes()
    (tmp_path / "t.tif").write_bytes(raw[: int(len(raw) * 0.6)])
    code, err = _run(capsys, str(tmp_path / "t.tif"), "--voxel-size", "1,1,1", "-o", str(tmp_path / "o.zarr"))
    assert code == 2 and "t.tif" in err
    _one_sentence(err)
    _no_store(tmp_path)


def test_unsupported_dtype(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    np.save(tmp_path / "c.npy", np.zeros((3, 4, 5), np.complex64))
    code, err = _run(capsys, str(tmp_path / "c.npy"), "--voxel-size", "1,1,1", "-o", str(tmp_path / "o.zarr"))
    assert code == 2 and "c.npy" in err and "complex64" in err
    _one_sentence(err)
    _no_store(tmp_path)


@pytest.mark.parametrize("voxel", ["0,1,1", "1,-2,1", "1,1", "a,b,c", "1,1,nan"])
def test_bad_voxel_size(tmp_path: Path, capsys: pytest.CaptureFixture[str], voxel: str) -> None:
    np.save(tmp_path / "s.npy", np.zeros((3, 4, 5), np.uint8))
    code, err = _run(capsys, str(tmp_path / "s.npy"), f"--voxel-size={voxel}", "-o", str(tmp_path / "o.zarr"))
    assert code == 2 and voxel in err and "Z,Y,X" in err
    _one_sentence(err)
    _no_store(tmp_path)


def test_existing_output_needs_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    np.save(tmp_path / "s.npy", np.ones((3, 4, 5), np.uint8))
    out = str(tmp_path / "o.zarr")
    assert main(["ingest", str(tmp_path / "s.npy"), "--voxel-size", "1,1,1", "-o", out]) == 0
    code, err = _run(capsys, str(tmp_path / "s.npy"), "--voxel-size", "1,1,1", "-o", out)
    assert code == 2 and "--overwrite" in err
    assert main(["ingest", str(tmp_path / "s.npy"), "--voxel-size", "2,1,1", "-o", out, "--overwrite"]) == 0
