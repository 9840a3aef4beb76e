"""Point-to-surface distances are exact; Chamfer, Hausdorff and ratios behave on known shapes."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from pipeline.reconstruct.metrics import SurfaceDistance, enclosed_porosity, mesh_metrics, point_triangle_distance


def _brute(p: np.ndarray, tri: np.ndarray, n: int = 400) -> float:
    """Distance to a densely sampled triangle (barycentric grid), an upper bound close to the truth."""
    u, v = np.meshgrid(np.linspace(0, 1, n), np.linspace(0, 1, n))
    keep = u + v <= 1
    pts = tri[0] + u[keep, None] * (tri[1] - tri[0]) + v[keep, None] * (tri[2] - tri[0])
    return float(np.linalg.norm(pts - p, axis=1).min())


def test_point_triangle_distance_matches_dense_sampling() -> None:
    rng = np.random.default_rng(0)
    for _ in range(40):
        tri = rng.normal(size=(3, 3))
        p = rng.normal(size=3) * 2
        d = point_triangle_distance(p[None], tri[0][None], tri[1][None], tri[2][None])[0]
        b = _brute(p, tri)
        assert d <= b + 1e-12
        assert b - d < 0.02 * np.linalg.norm(tri[1] - tri[0]) + 0.02 * np.linalg.norm(tri[2] - tri[0])


def test_surface_distance_is_exact_against_all_triangles() -> None:
    mesh = trimesh.creation.icosphere(subdivisions=2, radius=5.0)
    rng = np.random.default_rng(1)
    pts = rng.normal(size=(300, 3)) * 6
    got = SurfaceDistance(mesh.vertices, mesh.faces)(pts)
    t = mesh.triangles
    want = np.array([point_triangle_distance(np.repeat(q[None], len(t), 0), t[:, 0], t[:, 1], t[:, 2]).min() for q in pts])
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_surface_distance_of_a_big_flat_box_face() -> None:
    box = trimesh.creation.box((100.0, 100.0, 100.0))  # 12 huge triangles: split for the tree
    pts = np.array([[0.0, 0.0, 0.0], [10.0, -20.0, 30.0], [0.0, 0.0, 70.0]])
    d = SurfaceDistance(box.vertices, box.faces, max_edge=10.0)(pts)
    np.testing.assert_allclose(d, [50.0, 20.0, 20.0], atol=1e-9)


def test_identical_meshes_have_zero_distance_and_unit_ratios() -> None:
    s = trimesh.creation.icosphere(subdivisions=3, radius=40.0)
    m = mesh_metrics(s, s, n_points=3000, seed=0)
    assert m["chamfer_nm"] < 1e-9 and m["hausdorff_nm"] < 1e-9
    assert m["volume_ratio"] == pytest.approx(1.0) and m["area_ratio"] == pytest.approx(1.0)


def test_concentric_spheres() -> None:
    a = trimesh.creation.icosphere(subdivisions=4, radius=42.0)
    b = trimesh.creation.icosphere(subdivisions=4, radius=40.0)
    m = mesh_metrics(a, b, n_points=4000, seed=2)
    assert m["chamfer_nm"] == pytest.approx(2.0, abs=0.05)
    assert m["hausdorff_nm"] == pytest.approx(2.0, abs=0.1)
    assert m["hausdorff95_nm"] <= m["hausdorff_nm"]
    assert m["volume_ratio"] == pytest.approx((42 / 40) ** 3, rel=0.01)
    assert m["area_ratio"] == pytest.approx((42 / 40) ** 2, rel=0.01)
    # seeded: the same draw gives the same numbers
    assert mesh_metrics(a, b, n_points=4000, seed=2) == m


def test_enclosed_porosity() -> None:
    box = trimesh.creation.box((10.0, 20.0, 30.0))  # 6000 nm³
    assert enclosed_porosity(box, (30, 20, 10), (1.0, 2.0, 4.0)) == pytest.approx(6000 / (30 * 40 * 40))
    assert enclosed_porosity(box, (30, 20, 10), (1.0, 2.0, 4.0), phase=0) == pytest.approx(1 - 6000 / (30 * 40 * 40))
