"""Every denoising filter gives on chunks what it gives in memory; bilateral keeps edges."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from pipeline.preprocess.denoise import bilateral, denoise, denoise_dask, gaussian, halo_depth, merged_chunks, output_range

CASES = [
    ("gaussian", {"sigma": 1.0}),
    ("gaussian", {"sigma": 2.3}),
    ("median", {"size": 3}),
    ("median", {"size": 5}),
    ("bilateral", {"sigma_spatial": 1.0, "sigma_range": 40.0}),
]


@pytest.mark.parametrize("method,params", CASES)
@pytest.mark.parametrize("dims", [2, 3])
def test_chunked_equals_in_memory(method: str, params: dict, dims: int) -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 1000, (17, 29, 31)).astype(np.uint16)
    ref = denoise(a, method, dims=dims, **params)
    for chunks in [(5, 7, 9), (4, 13, 2)]:  # none divides the shape; (.., 2) is thinner than some halos
        got = denoise_dask(da.from_array(a, chunks=chunks), method, dims=dims, **params).compute(scheduler="sync")
        assert got.dtype == ref.dtype
        np.testing.assert_allclose(got.astype(np.float64), ref.astype(np.float64), rtol=0, atol=1e-5 * 1000)


def test_halo_depths() -> None:
    assert halo_depth("gaussian", dims=2, sigma=1.0) == (0, 4, 4)
    assert halo_depth("gaussian", dims=3, sigma=1.0) == (4, 4, 4)
    assert halo_depth("median", dims=3, size=5) == (2, 2, 2)
    assert halo_depth("bilateral", dims=2, sigma_spatial=1.5) == (0, 3, 3)


def test_bilateral_keeps_an_edge_that_gaussian_blurs() -> None:
    rng = np.random.default_rng(1)
    clean = np.zeros((1, 40, 40), np.float32)
    clean[:, :, 20:] = 1.0
    noisy = clean + rng.normal(0, 0.05, clean.shape).astype(np.float32)
    b = bilateral(noisy, 1.5, 0.15)
    g = gaussian(noisy, 1.5)
    edge = slice(17, 23)
    err_b = np.abs(b - clean)[..., edge].mean()
    err_g = np.abs(g - clean)[..., edge].mean()
    assert err_b < 0.5 * err_g
    assert np.std(b[..., :15]) < 0.6 * np.std(noisy[..., :15])  # and still denoises flat regions


def test_bad_arguments() -> None:
    a = np.zeros((3, 4, 5), np.float32)
    with pytest.raises(ValueError):
        gaussian(a, 0.0)
    with pytest.raises(ValueError):
        denoise(a, "wiener")
    with pytest.raises(ValueError):
        gaussian(a[0], 1.0)


@pytest.mark.parametrize("method,params", [("none", {})] + CASES)
@pytest.mark.parametrize("mode", ["reflect", "nearest", "constant"])
def test_output_stays_in_the_range_output_range_gives(method: str, params: dict, mode: str) -> None:
    rng = np.random.default_rng(2)
    a = (200 + 300 * rng.random((5, 19, 23))).astype(np.float32)  # all far from 0: "constant" pads with 0
    lo, hi = output_range(method, (float(a.min()), float(a.max())), mode=mode)
    out = denoise(a, method, dims=3, mode=mode, **params)
    assert lo <= out.min() and out.max() <= hi
    assert (lo, hi) == ((0.0, float(a.max())) if mode == "constant" and method != "none" else (float(a.min()), float(a.max())))
    if mode == "constant" and method in ("gaussian", "median"):
        assert out.min() < a.min()  # the zero padding does reach the output: the input's range alone would be wrong


def test_output_range_rejects_unknown_methods() -> None:
    with pytest.raises(ValueError):
        output_range("wiener", (0.0, 1.0))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32])
def test_gaussian_of_integers_equals_gaussian_of_their_float32_copy(dtype: type) -> None:
    a = np.random.default_rng(3).integers(0, 200, (4, 33, 35)).astype(dtype)
    got = gaussian(a, 1.3, dims=3)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, gaussian(a.astype(np.float32), 1.3, dims=3))
    assert gaussian(a.astype(np.float64), 1.3).dtype == np.float64


def test_no_halo_along_axes_held_in_one_chunk() -> None:
    a = np.random.default_rng(4).integers(0, 1000, (9, 30, 28)).astype(np.uint16)
    slabs = denoise_dask(da.from_array(a, chunks=(2, 30, 28)), "gaussian", dims=2, sigma=1.5)
    assert not any("overlap" in str(k) for k in dict(slabs.__dask_graph__()))  # one task per slab, nothing exchanged
    np.testing.assert_array_equal(slabs.compute(scheduler="sync"), gaussian(a, 1.5))


def test_merged_chunks_join_whole_chunks_into_slices_while_blocks_stay_small() -> None:
    chunks = ((32, 32, 7), (256, 256), (256, 256, 100))
    assert merged_chunks(chunks, (0, 4, 4), max_voxels=32 * 512 * 612) == ((32, 32, 7), (512,), (612,))
    assert merged_chunks(chunks, (0, 4, 4)) == ((32, 32, 7), (512,), (256, 256, 100))  # 32 x 512 x 612 > 2**23
    assert merged_chunks(chunks, (0, 4, 4), max_voxels=1000) == chunks  # never split, never too large
    assert merged_chunks(chunks, (0, 0, 0)) == chunks  # nothing to exchange, nothing to gain
