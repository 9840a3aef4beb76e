"""Tortuosity factor of steady diffusion: analytic cases, TauFactor on the same volume, and the geometric tortuosity."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.ndimage as ndi

from pipeline.analyze.transport import geometric_tortuosity, percolating, tortuosity_factor


@pytest.mark.parametrize("vs", [(1.0, 1.0, 1.0), (10.0, 4.0, 7.0)])
def test_straight_channels_have_tau_one(vs: tuple[float, float, float]) -> None:
    p = np.zeros((30, 12, 14), bool)
    p[:, 3:5, 3:6] = True
    p[:, 8, 2:10] = True
    r = tortuosity_factor(p, vs, axis=0)
    assert r["tau"] == pytest.approx(1.0, rel=1e-4)
    assert r["effective_diffusivity"] == pytest.approx(14 / (12 * 14), rel=1e-4)  # the open share of a cross section
    assert r["macmullin"] == pytest.approx(r["tau"] / r["volume_fraction"])
    assert r["converged"] and r["flux_spread"] < 1e-3
    p[4:9, 10:12, 10:13] = True  # a pocket that touches neither face: no flux, left out of the solve
    r = tortuosity_factor(p, vs, axis=0)
    assert r["effective_diffusivity"] == pytest.approx(14 / (12 * 14), rel=1e-4)
    assert r["tau"] == pytest.approx(p.mean() / r["effective_diffusivity"])  # epsilon of the whole phase, as TauFactor
    assert r["percolating_fraction"] == pytest.approx(1 - 30 / p.sum())


def test_layers_parallel_and_across() -> None:
    p = np.zeros((24, 20, 16), bool)
    p[:, ::3] = True  # lamellae: planes y = 0, 3, 6, ...
    along = tortuosity_factor(p, (1, 1, 1), axis=0)
    assert along["tau"] == pytest.approx(1.0, rel=1e-4) and along["effective_diffusivity"] == pytest.approx(p.mean(), rel=1e-4)
    across = tortuosity_factor(p, (1, 1, 1), axis=1)
    assert math.isinf(across["tau"]) and across["effective_diffusivity"] == 0.0 and across["percolating_fraction"] == 0.0


def test_a_winding_channel_has_the_square_of_its_length_ratio() -> None:
    # one voxel wide: a chain of n voxels is n face resistances in series, so tau = (n / N)^2
    p = np.zeros((13, 9, 3), bool)
    z, y = 0, 1
    path = []
    for leg in range(3):
        for _ in range(3):
            path.append((z, y))
            z += 1
        step = 1 if leg % 2 == 0 else -1
        for _ in range(6):
            path.append((z, y))
            y += step
    while z < 13:
        path.append((z, y))
        z += 1
    for a, b in path:
        p[a, b, 1] = True
    assert len(set(path)) == len(path) == p.sum()
    r = tortuosity_factor(p, (1, 1, 1), axis=0, rtol=1e-7)
    assert r["tau"] == pytest.approx((len(path) / 13) ** 2, rel=1e-4)


def test_equals_taufactor_on_the_same_volume() -> None:
    tau = pytest.importorskip("taufactor")
    rng = np.random.default_rng(4)
    lab = (ndi.gaussian_filter(rng.random((36, 30, 32)), 2.0) > 0.5).astype(np.uint8)
    for axis in (0, 2):
        ours = tortuosity_factor(lab == 1, (1, 1, 1), axis=axis, rtol=1e-6)
        img = np.ascontiguousarray(np.moveaxis(lab, axis, 0))
        solver = tau.Solver(img, device="cpu")
        theirs = float(np.asarray(solver.solve(verbose=False, conv_crit=1e-3)).ravel()[0])
        assert ours["tau"] == pytest.approx(theirs, rel=3e-3)
        assert ours["effective_diffusivity"] == pytest.approx(float(np.asarray(solver.D_rel).ravel()[0]), rel=3e-3)


def test_percolating_keeps_the_clusters_that_join_both_faces() -> None:
    p = np.zeros((10, 6, 6), bool)
    p[:, 1, 1] = True
    p[:5, 4, 4] = True  # touches one face only
    np.testing.assert_array_equal(percolating(p, 0) == 1, p & (np.arange(6)[None, :, None] == 1))


def test_geometric_tortuosity_equals_skimage_shortest_paths() -> None:
    from skimage.graph import MCP_Geometric

    rng = np.random.default_rng(5)
    p = ndi.gaussian_filter(rng.random((30, 26, 22)), 2.0) > 0.45
    vs = (2.0, 1.0, 1.5)
    for axis in range(3):
        pa = np.moveaxis(p, axis, 0)
        starts = [(0, *ix) for ix in np.argwhere(pa[0])]
        mcp = MCP_Geometric(np.where(pa, 1.0, np.inf), sampling=tuple(np.asarray(vs)[[axis] + [a for a in range(3) if a != axis]]))
        dist, _ = mcp.find_costs(starts)
        last = dist[-1][np.isfinite(dist[-1]) & pa[-1]]
        want = last.mean() / ((pa.shape[0] - 1) * vs[axis])
        assert geometric_tortuosity(p, vs, axis=axis) == pytest.approx(want, rel=1e-5)


def test_geometric_tortuosity_straight_and_winding() -> None:
    p = np.zeros((30, 9, 9), bool)
    p[:, 4, 4] = True
    assert geometric_tortuosity(p, (1, 1, 1), axis=0) == pytest.approx(1.0)
    assert np.isnan(geometric_tortuosity(p, (1, 1, 1), axis=1))
    w = np.zeros((21, 30, 5), bool)  # a zigzag: along y, then down z, back along y...
    for k in range(0, 21, 4):
        w[k, 1:29, 2] = True
    for k in range(0, 17, 4):
        w[k : k + 5, 28 if (k // 4) % 2 == 0 else 1, 2] = True
    assert geometric_tortuosity(w, (1, 1, 1), axis=0) > 5
