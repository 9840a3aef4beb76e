"""Every denoising filter gives on chunks what it gives in memory; bilateral keeps edges."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from pipeline.preprocess.denoise import bilateral, denoise, denoise_dask, gaussian, halo_depth

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
