"""`porelab mesh`: a mesh file from a label store; mistakes are one-sentence errors (exit 2)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trimesh

from pipeline.cli.main import main
from pipeline.io.volume import as_volume, write_volume


@pytest.fixture()
def store(tmp_path: Path, porous: np.ndarray) -> Path:
    return write_volume(as_volume(porous, (10.0, 5.0, 5.0), name="labels"), tmp_path / "m.zarr", chunks=(8, 16, 16))


def test_mesh_writes_ply_in_nm(tmp_path: Path, store: Path, porous: np.ndarray, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "pores.ply"
    assert main(["mesh", str(store), "--method", "voxel_direct", "--block", "10,12,14", "-o", str(out)]) == 0
    assert "porosity" in capsys.readouterr().out
    mesh = trimesh.load(out, force="mesh")
    assert mesh.volume == pytest.approx(porous.sum() * 250.0, rel=1e-6)
    assert main(["mesh", str(store), "-o", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["mesh", str(store), "--method", "multiscale", "-o", str(tmp_path / "p.stl"), "--block", "16"]) == 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["missing.zarr", "-o", "x.ply"], "no such store"),
        (["{store}", "-o", "x.obj"], "must end in .ply or .stl"),
        (["{store}", "-o", "x.ply", "--block", "0,4,4"], "expected Z,Y,X"),
        (["{store}", "-o", "x.ply", "--method", "poisson"], "invalid choice"),
    ],
)
def test_mesh_errors(tmp_path: Path, store: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["mesh"] + [a.replace("{store}", str(store)).replace("x.", str(tmp_path / "x.")) for a in args]
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse rejects choices and types itself
        rc = exc.code
    assert rc == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not list(tmp_path.glob("x.*"))


def test_mesh_refuses_a_grey_volume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    grey = write_volume(as_volume(np.random.default_rng(0).random((4, 8, 8)).astype(np.float32), (1, 1, 1)), tmp_path / "g.zarr")
    assert main(["mesh", str(grey), "-o", str(tmp_path / "g.ply")]) == 2
    assert "expected integer labels" in capsys.readouterr().err
