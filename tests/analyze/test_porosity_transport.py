"""Porosity maps, connectivity per axis, truth metrics and the measure() bundle."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from pipeline.analyze import measure
from pipeline.analyze.porosity import porosity_stats
from pipeline.analyze.transport import connectivity
from pipeline.analyze.truth import laplacian_smoothness, truth_metrics


def test_porosity_global_slice_block() -> None:
    a = np.zeros((4, 6, 8), np.uint8)
    a[:2] = 1
    a[2, :, :4] = 1
    s = porosity_stats(da.from_array(a, chunks=(1, 3, 3)), block_shape=(2, 6, 4))
    assert s["porosity"] == pytest.approx(a.mean())
    assert s["per_slice"] == [1.0, 1.0, 0.5, 0.0]
    assert np.asarray(s["per_block"]).shape == (2, 1, 2)
    np.testing.assert_allclose(np.asarray(s["per_block"])[:, 0], [[1.0, 1.0], [0.5, 0.0]])


def test_porosity_map_on_chunks_that_straddle_its_blocks() -> None:
    rng = np.random.default_rng(5)
    a = (rng.random((13, 11, 10)) < 0.4).astype(np.uint8)
    s = porosity_stats(da.from_array(a, chunks=(5, 3, 7)), block_shape=(4, 4, 4))
    expected = [[[a[z:z + 4, y:y + 4, x:x + 4].mean() for x in range(0, 10, 4)] for y in range(0, 11, 4)]
                for z in range(0, 13, 4)]
    np.testing.assert_allclose(s["per_block"], expected)
    np.testing.assert_allclose(s["per_slice"], a.mean(axis=(1, 2)))
    assert s["porosity"] == pytest.approx(a.mean())
    assert porosity_stats(a, block_shape=(4, 4, 4))["per_block"] == s["per_block"]
    with pytest.raises(ValueError, match="block_shape"):
        porosity_stats(a, block_shape=(0, 4, 4))


def test_connectivity_of_a_straight_channel() -> None:
    p = np.zeros((20, 10, 10), bool)
    p[:, 4:6, 4:6] = True  # along z
    p[5, 0:2, 0:2] = True  # isolated pocket
    c = connectivity(p)
    assert c["connected_fraction"]["z"] == pytest.approx(80 / 84)
    assert c["connected_fraction"]["y"] == 0.0 and c["connected_fraction"]["x"] == 0.0
    assert c["components"] == 2


def test_truth_metrics_known_counts() -> None:
    t = np.zeros((3, 4, 4), np.uint8)
    t[:, :2] = 1  # 24 pore voxels
    p = t.copy()
    p[0, 0, :2] = 0  # 2 false negatives
    p[2, 3, :] = 1  # 4 false positives
    m = truth_metrics(da.from_array(p, chunks=2), t)
    assert m["accuracy"] == pytest.approx(42 / 48)
    assert m["iou_pore"] == pytest.approx(22 / 28) and m["iou_3d"] == m["iou_pore"]
    assert m["iou_solid"] == pytest.approx(20 / 26)
    assert m["dice"] == pytest.approx(44 / 50)
    assert m["porosity_error"] == pytest.approx((26 - 24) / 48)
    assert m["smoothness_truth"] == 0.0 and m["smoothness"] > 0


def test_smoothness_counts_flicker() -> None:
    a = np.zeros((5, 2, 2), np.uint8)
    a[2] = 1
    assert laplacian_smoothness(a) == pytest.approx((1 + 2 + 1) / 3)


def test_measure_bundle_on_a_ball() -> None:
    z, y, x = np.mgrid[:40, :40, :40]
    ball = (((z - 20) ** 2 + (y - 19.5) ** 2 + (x - 20.3) ** 2) <= 12.0**2).astype(np.uint8)
    m = measure(ball, (2.0, 2.0, 2.0), truth=ball, tortuosity_method="both")
    assert m["porosity"]["porosity"] == pytest.approx(ball.mean())
    assert m["surface"]["area_nm2"] == pytest.approx(4 * np.pi * 24.0**2, rel=0.02)
    assert m["surface"]["specific_surface_per_nm"] == pytest.approx(m["surface"]["area_nm2"] / 80.0**3)
    assert m["psd"]["fit"]["median_nm"] < 48.5
    assert 2 * m["psd"]["r_max_nm"] == pytest.approx(48.0, abs=2.5)
    assert m["connectivity"]["connected_fraction"] == {"z": 0.0, "y": 0.0, "x": 0.0}
    assert all(np.isinf(v["tau"]) for v in m["transport"]["pore"].values())  # a closed ball: no path
    assert all(np.isnan(v) for v in m["transport"]["geometric"].values())
    # the distribution's own median is the value that half the pore volume is below
    counts, centres = np.asarray(m["psd"]["counts"]), np.diff(m["psd"]["edges_nm"]) / 2 + np.asarray(m["psd"]["edges_nm"][:-1])
    below = counts[centres < m["psd"]["median_nm"]].sum()
    assert below < counts.sum() / 2 <= below + counts[centres == m["psd"]["median_nm"]].sum()
    assert m["truth"]["iou_pore"] == 1.0 and m["truth"]["porosity_error"] == 0.0
    none = measure(np.zeros((8, 8, 8), np.uint8), (1, 1, 1), tortuosity=False)
    assert "psd" in none["skipped"] and "tortuosity" in none["skipped"] and "transport" not in none


def test_measure_transport_limits_and_sub_volume() -> None:
    lab = np.zeros((20, 16, 16), np.uint8)
    lab[:, 2:6, 2:6] = 1  # a straight square channel along z
    lab[:, 10, :] = 1  # a wall-to-wall plate
    big = measure(lab, (1, 1, 1), transport_voxels=1000)
    assert "transport" not in big and "transport_roi" in big["skipped"]["tortuosity"]
    sub = measure(lab, (1, 1, 1), transport_voxels=1000, transport_roi=[(0, 10), (0, 8), (0, 8)], solid_tortuosity=True)
    assert sub["transport"]["roi"] == [[0, 10], [0, 8], [0, 8]]
    assert sub["transport"]["pore"]["z"]["tau"] == pytest.approx(1.0, rel=1e-4)
    assert np.isinf(sub["transport"]["pore"]["y"]["tau"])
    assert sub["transport"]["solid"]["y"]["tau"] > 1
    with pytest.raises(ValueError, match="not inside the volume"):
        measure(lab, (1, 1, 1), transport_roi=[(0, 30), (0, 8), (0, 8)])


def test_measure_centre_takes_the_centred_sub_volume_above_the_limits() -> None:
    lab = np.zeros((20, 16, 16), np.uint8)
    lab[:, 2:14, 6:10] = 1  # a slab along z and y, through the centre
    m = measure(lab, (1, 1, 1), transport_voxels=1000, in_memory_voxels=1000, transport_roi="centre")
    roi = m["transport"]["roi"]
    assert int(np.prod([b - a for a, b in roi])) <= 1000
    assert all((a + b) / 2 == pytest.approx(n / 2, abs=1) for (a, b), n in zip(roi, lab.shape))
    assert m["connectivity"]["roi"] == roi
    assert m["transport"]["pore"]["z"]["tau"] == pytest.approx(1.0, rel=1e-4)
    assert m["connectivity"]["connected_fraction"]["z"] == 1.0
    assert "tortuosity" not in m["skipped"] and "connectivity" not in m["skipped"]
    whole = measure(lab, (1, 1, 1), transport_roi="centre")  # fits: the whole volume
    assert whole["transport"]["roi"] == [[0, 20], [0, 16], [0, 16]] and "roi" not in whole["connectivity"]
    with pytest.raises(ValueError, match="unknown"):
        measure(lab, (1, 1, 1), transport_roi="middle")


def test_measure_stores_the_distances_in_its_scratch_and_removes_them(tmp_path, monkeypatch) -> None:
    import importlib

    import scipy.ndimage as ndi

    from pipeline.analyze.thickness import local_thickness_dask

    measure_module = importlib.import_module("pipeline.analyze.measure")  # the package exports the function of that name

    seen = []

    def small_blocks(*args, **kwargs):
        seen.append(kwargs.get("scratch"))
        return local_thickness_dask(*args, **{**kwargs, "block_voxels": 1})

    monkeypatch.setattr(measure_module, "local_thickness_dask", small_blocks)
    rng = np.random.default_rng(5)
    lab = (ndi.gaussian_filter(rng.random((24, 24, 24)), 2.0) > 0.5).astype(np.uint8)
    vol = da.from_array(lab, chunks=12)
    plain = measure(vol, (1, 1, 1), tortuosity=False)
    stored = measure(vol, (1, 1, 1), tortuosity=False, scratch_dir=tmp_path)
    assert seen[0] is None and seen[1] is not None and str(seen[1]).startswith(str(tmp_path))
    assert stored["psd"]["counts"] == plain["psd"]["counts"] and sum(plain["psd"]["counts"]) == int(lab.sum())
    assert list(tmp_path.iterdir()) == []  # the distances are removed
