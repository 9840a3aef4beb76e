"""The Fig. 11/12 comparison over structures, and the mesh files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trimesh

from pipeline.reconstruct import mesh_volume, write_mesh
from pipeline.reconstruct.compare import compare_methods, sphere_structure, summarize


def test_sphere_structure_has_an_exact_finer_truth() -> None:
    c = sphere_structure((24, 24, 24), porosity=0.5, seed=3)
    assert c.labels.dtype == np.uint8 and c.labels.shape == (24, 24, 24)
    assert abs(c.truth_porosity - c.labels.mean()) < 0.03
    assert c.truth_mesh.is_watertight
    box = 24 * 24 * 24 * 1000.0
    assert c.truth_mesh.volume / box == pytest.approx(c.truth_porosity, abs=0.01)
    again = sphere_structure((24, 24, 24), porosity=0.5, seed=3)
    assert np.array_equal(again.labels, c.labels)


def test_compare_methods_table_with_error_bars() -> None:
    cases = [sphere_structure((22, 22, 22), seed=s) for s in range(2)]
    rows = compare_methods(cases, ["voxel_direct", "convex_hull", "multiscale"], n_points=1500)
    assert len(rows) == 6
    summary = {r["method"]: r for r in summarize(rows)}
    assert set(summary) == {"voxel_direct", "convex_hull", "multiscale"}
    for r in summary.values():
        assert r["n"] == 2 and r["chamfer_nm_std"] >= 0
    # the paper's findings: the hull cannot follow the pores; voxel direct keeps the porosity
    assert summary["convex_hull"]["chamfer_nm"] > 3 * summary["voxel_direct"]["chamfer_nm"]
    assert summary["voxel_direct"]["porosity_abs_error"] < 0.02 < summary["convex_hull"]["porosity_abs_error"]


@pytest.mark.parametrize("suffix", [".ply", ".stl"])
def test_write_mesh_round_trip(tmp_path: Path, sphere: np.ndarray, suffix: str) -> None:
    mesh = mesh_volume(sphere, "mc_smoothed", voxel_size_nm=(4.0, 4.0, 4.0))
    path = write_mesh(mesh, tmp_path / f"m{suffix}")
    back = trimesh.load(path, force="mesh")
    assert back.volume == pytest.approx(mesh.volume, rel=1e-5)
    with pytest.raises(ValueError, match="already exists"):
        write_mesh(mesh, path)
    with pytest.raises(ValueError, match="not one of"):
        write_mesh(mesh, tmp_path / "m.obj")
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"m{suffix}"]  # nothing partial left
