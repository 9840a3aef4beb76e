"""Chunked meshing: the mesh built block by block (seams welded) equals the single-block mesh."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.io.volume import as_volume, open_volume, write_volume
from pipeline.reconstruct.build import METHODS, mesh_volume, mesh_voxels

VS = (10.0, 5.0, 5.0)
ISO = [m for m in METHODS if m not in ("voxel_direct",)]


def _edge_counts(faces: np.ndarray) -> np.ndarray:
    e = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    return np.unique(e, axis=0, return_counts=True)[1]


@pytest.mark.parametrize("structure", ["sphere", "porous"])
@pytest.mark.parametrize("method", ISO)
def test_chunked_mesh_is_watertight_and_matches_single_block(method: str, structure: str, request: pytest.FixtureRequest) -> None:
    mask = request.getfixturevalue(structure)
    single = mesh_volume(mask, method, voxel_size_nm=VS)
    chunked = mesh_volume(mask, method, voxel_size_nm=VS, block_shape=(11, 13, 16))
    assert chunked.metadata["blocks"] >= (4 if method == "mc_hole_filled" else 27)  # hole filling: whole-slice blocks
    assert single.is_watertight and chunked.is_watertight
    assert single.volume > 0 and chunked.volume > 0  # normals point out of the pores
    assert chunked.area == pytest.approx(single.area, rel=5e-3)
    assert chunked.volume == pytest.approx(single.volume, rel=5e-3)
    if method == "convex_hull":
        return  # the same polyhedron, but qhull may split its coplanar facets differently
    # in fact the same surface: same face count, every vertex within float32 rounding of the other's
    from scipy.spatial import cKDTree

    assert len(chunked.faces) == len(single.faces)
    assert len(chunked.vertices) == len(single.vertices)
    d, _ = cKDTree(single.vertices).query(chunked.vertices)
    assert d.max() < 1e-3  # nm


@pytest.mark.parametrize("structure", ["sphere", "porous"])
def test_chunked_voxel_direct_is_closed_and_exact(structure: str, request: pytest.FixtureRequest) -> None:
    mask = request.getfixturevalue(structure)
    single = mesh_volume(mask, "voxel_direct", voxel_size_nm=VS)
    chunked = mesh_volume(mask, "voxel_direct", voxel_size_nm=VS, block_shape=(7, 9, 10))
    exact = float(mask.sum()) * np.prod(VS)
    for m in (single, chunked):
        assert m.volume == pytest.approx(exact, rel=1e-12)
        counts = _edge_counts(np.asarray(m.faces))
        assert np.all(counts % 2 == 0)  # closed: every edge has an even number of faces (4 where voxels touch on an edge)
    assert chunked.area == pytest.approx(single.area, rel=1e-12)
    assert len(chunked.faces) == len(single.faces)
    if structure == "sphere":
        assert single.is_watertight and chunked.is_watertight


def test_out_of_core_store_matches_in_memory(tmp_path: Path, porous: np.ndarray) -> None:
    path = write_volume(as_volume(porous, VS, name="labels"), tmp_path / "m.zarr", chunks=(8, 16, 16))
    vol = open_volume(path)
    lazy = mesh_volume(vol, "multiscale", block_shape=(12, 12, 12))  # voxel size from the store
    mem = mesh_volume(porous, "multiscale", voxel_size_nm=VS)
    assert lazy.is_watertight
    assert lazy.volume == pytest.approx(mem.volume, rel=1e-6)  # float32 field rounding
    assert lazy.area == pytest.approx(mem.area, rel=1e-6)


def test_hole_filled_blocks_span_whole_slices(porous: np.ndarray) -> None:
    vm, info = mesh_voxels(porous, "mc_hole_filled", block_shape=(8, 8, 8))
    assert info["blocks"] == int(np.ceil((porous.shape[0] + 1) / 8))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="not one of"):
        mesh_voxels(np.zeros((4, 4, 4), np.uint8), "marching_squares")
    with pytest.raises(ValueError, match="3D"):
        mesh_voxels(np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="voxel_size_nm"):
        mesh_volume(np.zeros((4, 4, 4), np.uint8))


class _CountingArray:
    """An array-like that counts the chunk reads dask makes from it."""

    def __init__(self, data: np.ndarray) -> None:
        self.data, self.shape, self.dtype, self.ndim, self.reads = data, data.shape, data.dtype, data.ndim, 0

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        self.reads += 1
        return self.data[key]


def test_each_block_reads_only_its_region(porous: np.ndarray) -> None:
    import dask.array as da

    src = _CountingArray(porous)
    arr = da.from_array(src, chunks=(12, 10, 11), asarray=True)
    n_chunks = int(np.prod(arr.numblocks))
    mesh = mesh_volume(arr, "mc_basic", voxel_size_nm=VS, block_shape=(12, 10, 11))
    assert mesh.is_watertight
    # a block reads its chunks plus the one-sample seam into its neighbours: never the whole volume per block
    assert src.reads < 10 * n_chunks


def _mesh_area(mesh: object, vs: tuple[float, float, float]) -> float:
    v = np.asarray(mesh.vertices) * np.asarray(vs)  # type: ignore[attr-defined]
    t = v[np.asarray(mesh.faces)]  # type: ignore[attr-defined]
    return float(0.5 * np.linalg.norm(np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]), axis=1).sum())


def test_surface_area_is_the_area_of_the_blockwise_mesh(sphere: np.ndarray) -> None:
    from pipeline.reconstruct.build import surface_area

    mesh, _ = mesh_voxels(sphere, "mc_smoothed", params={"sigma": 1.0})
    expected = _mesh_area(mesh, VS)  # the ball touches no face: every triangle counts
    area = surface_area(sphere, VS, method="mc_smoothed", params={"sigma": 1.0}, block_shape=(9, 10, 11))
    assert area == pytest.approx(expected, rel=1e-9)


def test_blocks_on_a_dask_cluster_equal_the_threaded_ones(porous: np.ndarray) -> None:
    import dask.array as da
    from distributed import Client, LocalCluster

    from pipeline.reconstruct.build import surface_area

    arr = da.from_array(porous, chunks=(12, 10, 11))
    local = surface_area(arr, VS, method="mc_smoothed", block_shape=(12, 16, 16))
    mesh_local, _ = mesh_voxels(arr, "voxel_direct", block_shape=(12, 16, 16))
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster, Client(cluster):
        on_cluster = surface_area(arr, VS, method="mc_smoothed", block_shape=(12, 16, 16))
        mesh_cluster, _ = mesh_voxels(arr, "voxel_direct", block_shape=(12, 16, 16))
    assert on_cluster == pytest.approx(local, rel=1e-12)
    np.testing.assert_array_equal(mesh_cluster.faces, mesh_local.faces)
    np.testing.assert_array_equal(mesh_cluster.vertices, mesh_local.vertices)
