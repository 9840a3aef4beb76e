"""preprocess_volume: same result kept in memory or out-of-core, equal to scipy + numpy in memory; filter runs once when kept."""

from __future__ import annotations

import importlib

import dask
import dask.array as da
import numpy as np
import pytest
import scipy.ndimage as ndi

from pipeline.io.volume import as_volume
from pipeline.preprocess.chain import DenoiseParams, NormalizeParams, preprocess_volume
from pipeline.preprocess.normalize import normalize

CHUNKS = (7, 24, 21)  # divides none of the shape's axes


def _stack(dtype: type = np.uint16) -> np.ndarray:
    rng = np.random.default_rng(11)
    phase = ndi.gaussian_filter(rng.standard_normal((20, 50, 45)), 2) > 0
    return np.clip(100 + 60 * phase + rng.normal(0, 12, phase.shape), 0, 255).astype(dtype)


def _volume(a: np.ndarray) -> object:
    return as_volume(da.from_array(a, chunks=CHUNKS), (10, 5, 5))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_equals_scipy_and_numpy_in_memory(dtype: type) -> None:
    a = _stack(dtype)
    g = ndi.gaussian_filter(a.astype(np.float32), (0, 1.0, 1.0))
    lo, hi = np.percentile(g, [0.5, 99.5])
    ref = normalize(g, lo, hi)
    outs = {}
    for persist in (True, False, None):
        with dask.config.set(scheduler="threads"):
            out = preprocess_volume(_volume(a), persist=persist)
            outs[persist] = out.values
        assert out.attrs["normalization_range"] == pytest.approx([lo, hi], rel=1e-12)
        np.testing.assert_allclose(outs[persist], ref, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(outs[True], outs[False])


@pytest.mark.parametrize(
    "denoise",
    [
        DenoiseParams(method="median", dims=3),
        DenoiseParams(method="bilateral", sigma=1.0, sigma_range=30.0),
        DenoiseParams(method="gaussian", dims=3, sigma=1.5, mode="constant"),
        DenoiseParams(method="none"),
    ],
)
def test_kept_and_out_of_core_agree(denoise: DenoiseParams) -> None:
    a = _stack()
    norm = NormalizeParams(low=2, high=98, match_histograms=denoise.method == "none")
    with dask.config.set(scheduler="threads"):
        kept = preprocess_volume(_volume(a), denoise, norm, persist=True)
        ooc = preprocess_volume(_volume(a), denoise, norm, persist=False)
        np.testing.assert_array_equal(kept.values, ooc.values)
    assert kept.attrs["normalization_range"] == ooc.attrs["normalization_range"]
    assert kept.attrs["histogram_matching"] is (denoise.method == "none")


def test_the_filter_runs_once_per_block_when_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    dn = importlib.import_module("pipeline.preprocess.denoise")  # the package exports a function of that name
    seen: list[tuple[int, ...]] = []
    real = dn.gaussian

    def counting(image: np.ndarray, *args: object, **kw: object) -> np.ndarray:
        if image.size > 100:  # not dask's probes on tiny arrays
            seen.append(image.shape)
        return real(image, *args, **kw)

    monkeypatch.setattr(dn, "gaussian", counting)
    vol = _volume(_stack())
    blocks = int(np.prod(vol.data.numblocks))
    with dask.config.set(scheduler="threads"):
        preprocess_volume(vol, persist=True).values
    # kept: chunks merged into whole slices (no halo for a 2D filter), each voxel filtered once
    assert sum(int(np.prod(s)) for s in seen) == vol.size and len(seen) == vol.data.numblocks[0]
    seen.clear()
    with dask.config.set(scheduler="threads"):
        preprocess_volume(vol, persist=False).values
    assert len(seen) == 3 * blocks  # out-of-core: histogram, values near the percentiles, result


def test_without_normalisation_the_denoised_volume_as_float32() -> None:
    a = _stack()
    out = preprocess_volume(_volume(a), normalize=NormalizeParams(enabled=False))
    assert out.dtype == np.float32 and "normalization_range" not in out.attrs
    np.testing.assert_array_equal(out.values, ndi.gaussian_filter(a.astype(np.float32), (0, 1.0, 1.0)))
