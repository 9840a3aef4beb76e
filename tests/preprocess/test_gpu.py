"""Denoising and normalisation on CuPy chunks give the NumPy results (GPU only)."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
import scipy.ndimage as ndi

pytestmark = pytest.mark.gpu
cupy = pytest.importorskip("cupy")

from pipeline import backend  # noqa: E402
from pipeline.io.volume import as_volume  # noqa: E402
from pipeline.preprocess.chain import DenoiseParams, NormalizeParams, preprocess_volume  # noqa: E402
from pipeline.preprocess.denoise import denoise, denoise_dask  # noqa: E402

CHUNKS = (7, 24, 21)  # divides none of the shape's axes


@pytest.fixture(autouse=True)
def _gpu() -> None:
    if not backend.gpu_available():
        pytest.skip("no usable CUDA device")


def _stack(dtype: type = np.uint16) -> np.ndarray:
    rng = np.random.default_rng(11)
    phase = ndi.gaussian_filter(rng.standard_normal((20, 50, 45)), 2) > 0
    return np.clip(100 + 60 * phase + rng.normal(0, 12, phase.shape), 0, 255).astype(dtype)


@pytest.mark.parametrize(
    ("method", "dims", "params"),
    [("gaussian", 2, {"sigma": 1.0}), ("gaussian", 3, {"sigma": 1.5}), ("median", 2, {"size": 3}),
     ("median", 3, {"size": 3}), ("median", 2, {"size": 5}), ("bilateral", 2, {"sigma_spatial": 1.0, "sigma_range": 20.0}),
     ("bilateral", 3, {"sigma_spatial": 1.0, "sigma_range": 20.0})],
)
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_filters_on_cupy_chunks_equal_numpy_in_memory(method: str, dims: int, params: dict, dtype: type) -> None:
    a = _stack(dtype)
    want = denoise(a, method, dims=dims, **params)
    chunks = backend.chunks_on(da.from_array(a, chunks=CHUNKS), "cupy")
    with dask.config.set(scheduler="sync"):
        got = denoise_dask(chunks, method, dims=dims, **params).compute()
    assert isinstance(got, cupy.ndarray) and got.dtype == want.dtype
    np.testing.assert_allclose(got.get(), want, rtol=1e-5, atol=1e-5 * 255)


@pytest.mark.parametrize("persist", [True, False])
@pytest.mark.parametrize("match", [False, True])
def test_preprocess_volume_on_cupy_chunks_matches_numpy(persist: bool, match: bool) -> None:
    a = _stack(np.uint16)
    vol = as_volume(da.from_array(a, chunks=CHUNKS), (10, 5, 5))
    norm = NormalizeParams(match_histograms=match)
    with dask.config.set(scheduler="sync"):
        cpu = preprocess_volume(vol, DenoiseParams(), norm, persist=persist)
        gpu = preprocess_volume(backend.volume_on(vol, "cupy"), DenoiseParams(), norm, persist=persist)
        got = gpu.data.compute()
        want = cpu.values
    assert isinstance(got, cupy.ndarray) and got.dtype == np.float32
    assert gpu.attrs["normalization_range"] == pytest.approx(cpu.attrs["normalization_range"], rel=1e-6)
    np.testing.assert_allclose(got.get(), want, atol=1e-5)
