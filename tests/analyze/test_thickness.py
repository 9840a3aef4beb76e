"""Local thickness: the fast method equals the radius sweep (in memory and out of core), analytic shapes come out right."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import scipy.ndimage as ndi

from pipeline.analyze.thickness import (
    EDGE_CORRECTION_VOXELS,
    local_thickness,
    local_thickness_dask,
    local_thickness_sweep,
    max_inscribed_radius,
    radius_grid,
)


@pytest.fixture(scope="module")
def porous() -> np.ndarray:
    rng = np.random.default_rng(3)
    return ndi.gaussian_filter(rng.random((40, 48, 52)), 2.5) > 0.5


@pytest.mark.parametrize("vs", [(1.0, 1.0, 1.0), (10.0, 5.0, 5.0), (3.0, 7.0, 5.5)])
@pytest.mark.parametrize("chunks", [(13, 16, 20), (40, 24, 52)])
def test_out_of_core_equals_the_sweep(porous: np.ndarray, vs: tuple[float, float, float], chunks: tuple[int, int, int]) -> None:
    # blocks of one chunk: every block reads a halo from its neighbours
    lazy, info = local_thickness_dask(da.from_array(porous, chunks=chunks), vs, block_voxels=1)
    assert info["block_shape"] == list(chunks)
    radii = np.asarray(info["radii_nm"])
    ref = local_thickness_sweep(porous, vs, radii=radii)
    out = lazy.compute(scheduler="threads")
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, ref)
    # the halo covers the largest pore radius (twice: balls' reach plus their distance map)
    assert all(h * v >= 2 * info["r_max_nm"] for h, v in zip(info["halo_voxels"], vs))


@pytest.mark.parametrize("vs", [(1.0, 1.0, 1.0), (3.0, 7.0, 5.5)])
@pytest.mark.parametrize("chunks", [(13, 16, 20), (8, 48, 52)])
def test_stored_distances_give_the_same_thickness(porous: np.ndarray, vs: tuple[float, float, float],
                                                  chunks: tuple[int, int, int], tmp_path) -> None:
    import zarr

    mask = da.from_array(porous, chunks=chunks)
    scratch = tmp_path / "d2.zarr"
    lazy, info = local_thickness_dask(mask, vs, block_voxels=1, scratch=scratch)
    stored = zarr.open_array(str(scratch), mode="r")
    vmin = min(vs)
    d2 = ndi.distance_transform_edt(porous, sampling=[v / vmin for v in vs]) ** 2
    np.testing.assert_allclose(stored[...], d2, rtol=1e-5, atol=1e-4)  # every block's exact squared distances
    ref = local_thickness_sweep(porous, vs, radii=np.asarray(info["radii_nm"]))
    np.testing.assert_array_equal(lazy.compute(scheduler="threads"), ref)
    plain, _ = local_thickness_dask(mask, vs, block_voxels=1)
    np.testing.assert_array_equal(plain.compute(scheduler="threads"), ref)


def test_stored_distances_of_a_block_without_phase_read_zero(tmp_path) -> None:
    lab = np.zeros((24, 20, 20), bool)
    lab[2:10, 3:15, 4:16] = True  # the blocks of z >= 12 hold no phase: nothing is written there
    lazy, info = local_thickness_dask(da.from_array(lab, chunks=(12, 20, 20)), (1, 1, 1), block_voxels=1,
                                      scratch=tmp_path / "d2.zarr")
    np.testing.assert_array_equal(lazy.compute(), local_thickness_sweep(lab, (1, 1, 1), radii=np.asarray(info["radii_nm"])))


@pytest.mark.parametrize("threads", [1, 2])
def test_in_memory_equals_the_sweep_on_its_own_and_given_radii(porous: np.ndarray, threads: int) -> None:
    vs = (2.0, 1.0, 1.5)
    want = local_thickness_sweep(porous, vs)
    np.testing.assert_array_equal(local_thickness(porous, vs, threads=threads), want)
    # radii of any spacing and order (here integers, as PoreSpy sweeps)
    radii = np.arange(1.0, 8.0)[::-1][[3, 0, 5, 1, 2, 4, 6]]
    np.testing.assert_array_equal(local_thickness(porous, vs, radii=radii, threads=threads),
                                  local_thickness_sweep(porous, vs, radii=radii))


def test_fibres_equal_the_sweep() -> None:
    from pipeline.synth.structures import random_fibers

    lab = random_fibers((40, 44, 48), porosity=0.8, diameter_nm=50.0, voxel_size_nm=(10, 10, 10), seed=2).labels == 1
    lazy, info = local_thickness_dask(da.from_array(lab, chunks=(20, 22, 24)), (10, 10, 10), block_voxels=1)
    np.testing.assert_array_equal(lazy.compute(), local_thickness_sweep(lab, (10, 10, 10), radii=np.asarray(info["radii_nm"])))


def test_max_inscribed_radius_grows_its_halo_until_exact(porous: np.ndarray) -> None:
    want = float(ndi.distance_transform_edt(porous).max())
    got = max_inscribed_radius(da.from_array(porous, chunks=(10, 12, 13)), (1, 1, 1), start_halo_nm=1.0)
    assert got == pytest.approx(want, rel=1e-6)


def test_max_inscribed_radius_needs_one_more_pass_when_a_halo_is_short(porous: np.ndarray, monkeypatch) -> None:
    import pipeline.progress as progress

    passes = []
    real = progress.compute

    def counted(*args, **kwargs):
        passes.append(len(args))
        return real(*args, **kwargs)

    monkeypatch.setattr(progress, "compute", counted)
    got = max_inscribed_radius(da.from_array(porous, chunks=(10, 12, 13)), (1, 1, 1), start_halo_nm=1.0)
    assert got == pytest.approx(float(ndi.distance_transform_edt(porous).max()), rel=1e-6)
    # the distances found with a short halo bound the true ones from above: a halo above them is exact
    assert len(passes) == 2, passes


def test_max_inscribed_radius_stores_exact_distances_when_halos_grow(porous: np.ndarray, tmp_path) -> None:
    import zarr

    from pipeline.analyze.thickness import _distance_store

    # a halo of 1 voxel is too small for most blocks: they are measured again with larger halos
    store = _distance_store(tmp_path / "d2.zarr", porous.shape, (10, 12, 13))
    max_inscribed_radius(da.from_array(porous, chunks=(10, 12, 13)), (1, 1, 1), start_halo_nm=1.0, block_voxels=1,
                         store=store)
    np.testing.assert_allclose(zarr.open_array(store, mode="r")[...], ndi.distance_transform_edt(porous) ** 2, atol=1e-4)


def _ball(n: int, d: float, centre: tuple[float, float, float]) -> np.ndarray:
    z, y, x = np.mgrid[:n, :n, :n]
    return ((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2) <= (d / 2) ** 2


@pytest.mark.parametrize("d", [12.0, 20.0, 30.0])
def test_analytic_sphere(d: float) -> None:
    ball = _ball(int(d) + 10, d, (d / 2 + 4.3, d / 2 + 4.6, d / 2 + 5.1))
    lt = local_thickness(ball, (2.0, 2.0, 2.0))
    assert np.median(lt[ball]) == pytest.approx(2.0 * d, abs=2.0 * 0.5)  # within half a voxel (2 nm voxels)
    assert lt[~ball].max() == 0
    # the out-of-core version sees the same ball across blocks
    lazy, _ = local_thickness_dask(da.from_array(ball, chunks=8), (2.0, 2.0, 2.0))
    assert np.median(lazy.compute()[ball]) == pytest.approx(2.0 * d, abs=1.0)


@pytest.mark.parametrize("d", [12.0, 20.0, 30.0])
def test_analytic_cylinder(d: float) -> None:
    n = int(d) + 8
    z, y, x = np.mgrid[:24, :n, :n]
    cyl = ((y - (n / 2 - 0.4)) ** 2 + (x - (n / 2 + 0.1)) ** 2) <= (d / 2) ** 2
    lt = local_thickness(cyl, (1.0, 1.0, 1.0))
    assert np.median(lt[cyl]) == pytest.approx(d, abs=0.5)
    # an axis cut by the faces: the ends are measured as far as they are seen, no thinning there
    assert np.median(lt[0][cyl[0]]) == pytest.approx(d, abs=0.5)


def test_two_sizes_are_told_apart() -> None:
    a = _ball(30, 10.0, (8.2, 15.0, 8.0)) | _ball(30, 20.0, (15.1, 15.3, 19.0))
    small = _ball(30, 10.0, (8.2, 15.0, 8.0)) & ~_ball(30, 20.0, (15.1, 15.3, 19.0))
    lt = local_thickness(a, (1, 1, 1))
    assert np.median(lt[small]) == pytest.approx(10.0, abs=1.0)
    assert lt.max() == pytest.approx(20.0, abs=1.0)


def test_radius_grid_and_edge_cases() -> None:
    g = radius_grid(10.0, (1.0, 1.0, 1.0), n_radii=64)
    assert g[0] == 10.0 and g[-1] == 1.0 and np.all(np.diff(g) < 0) and np.diff(g).max() >= -0.25 - 1e-12
    assert len(radius_grid(100.0, (1.0, 1.0, 1.0), n_radii=16)) == 16
    assert local_thickness(np.zeros((4, 4, 4), bool)).max() == 0
    one = np.zeros((5, 5, 5), bool)
    one[2, 2, 2] = True
    assert local_thickness(one)[2, 2, 2] == pytest.approx(2.0 + EDGE_CORRECTION_VOXELS)
    with pytest.raises(ValueError, match="fills the whole volume"):
        local_thickness_dask(da.ones((4, 4, 4), dtype=bool, chunks=2), (1, 1, 1))
    with pytest.raises(ValueError, match="3D"):
        local_thickness(np.ones((4, 4), bool))


def test_written_thickness_and_histogram_from_measure(tmp_path, porous: np.ndarray) -> None:  # noqa: ANN001
    from pipeline.analyze import measure
    from pipeline.io.volume import open_volume

    lab = porous.astype(np.uint8)
    store = tmp_path / "lt.zarr"
    m = measure(da.from_array(lab, chunks=(8, 16, 16)), (1.0, 1.0, 1.0), thickness_store=store, tortuosity=False)
    lt = np.asarray(open_volume(store).values)
    radii = np.asarray(local_thickness_dask(da.from_array(porous, chunks=8), (1, 1, 1))[1]["radii_nm"])
    np.testing.assert_array_equal(lt, local_thickness_sweep(porous, (1, 1, 1), radii=radii))
    assert sum(m["psd"]["counts"]) == int(porous.sum())
    edges = np.asarray(m["psd"]["edges_nm"])
    assert np.histogram(lt[porous], bins=edges)[0].tolist() == m["psd"]["counts"]
    # one bin per value the thickness takes
    assert np.all(np.histogram(np.unique(lt[porous]), bins=edges)[0] <= 1)
