"""Robust percentiles out-of-core, normalisation to [0, 1], per-slice histogram matching."""

from __future__ import annotations

import importlib

import dask.array as da
import numpy as np
import pytest

from pipeline.preprocess.normalize import (
    HistogramSpec,
    histogram,
    histogram_spec,
    match_slices_dask,
    normalize,
    normalize_dask,
    robust_range,
)


def test_integer_percentiles_are_exact_out_of_core() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(1000, 200, (19, 33, 29)).clip(0).astype(np.uint16)
    lo, hi = robust_range(da.from_array(a, chunks=(5, 13, 11)), 1, 99)
    assert (lo, hi) == tuple(float(v) for v in np.percentile(a, [1, 99], method="inverted_cdf"))


def test_float_percentiles_within_a_bin() -> None:
    rng = np.random.default_rng(1)
    a = rng.gamma(2.0, 3.0, (11, 40, 40)).astype(np.float32)
    lo, hi = robust_range(da.from_array(a, chunks=(4, 17, 40)), 0.5, 99.5)
    ref = np.percentile(a, [0.5, 99.5])
    width = (a.max() - a.min()) / 65536
    assert abs(lo - ref[0]) < 2 * width and abs(hi - ref[1]) < 2 * width


def test_normalize_chunked_equals_in_memory() -> None:
    rng = np.random.default_rng(2)
    a = rng.integers(0, 4000, (9, 21, 23)).astype(np.uint16)
    out, (lo, hi) = normalize_dask(da.from_array(a, chunks=(4, 8, 10)), 2, 98)
    got = out.compute()
    assert got.dtype == np.float32 and got.min() == 0.0 and got.max() == 1.0
    np.testing.assert_allclose(got, normalize(a, lo, hi), atol=1e-6)
    inside = (a >= lo) & (a <= hi)
    np.testing.assert_allclose(got[inside], (a[inside] - lo) / (hi - lo), atol=1e-5)


def test_histogram_matching_evens_out_slices() -> None:
    rng = np.random.default_rng(3)
    b = np.stack([np.clip(rng.random((30, 30)) * (0.4 + k / 20), 0, 1) for k in range(12)]).astype(np.float32)
    matched, tables = match_slices_dask(da.from_array(b, chunks=(5, 13, 11)))
    m = matched.compute()
    assert tables.shape == (12, 1025)
    assert np.ptp(m.mean(axis=(1, 2))) < 0.1 * np.ptp(b.mean(axis=(1, 2)))
    # monotone per slice: ordering of voxels is kept
    k = 7
    order = np.argsort(b[k].ravel())
    assert np.all(np.diff(m[k].ravel()[order]) >= -1e-6)


def test_bad_percentiles() -> None:
    with pytest.raises(ValueError):
        robust_range(np.zeros((2, 2, 2), np.uint8), 60, 40)


# --- one-pass statistics: bins fixed in advance, exact percentiles, filter evaluated once ---------------------


def _reference_counts(values: np.ndarray, spec: "HistogramSpec") -> np.ndarray:
    """The documented binning, written out plainly: floor((v - lo) * bins / (hi - lo)) in float32, clipped."""
    t = (values.astype(np.float32) - np.float32(spec.lo)) * np.float32(spec.bins / (spec.hi - spec.lo))
    return np.bincount(np.minimum(t, spec.bins - 1).astype(np.int64).ravel(), minlength=spec.bins)


def test_counts_follow_the_documented_bins_in_any_tiling(monkeypatch: pytest.MonkeyPatch) -> None:
    nm = importlib.import_module("pipeline.preprocess.normalize")  # the package exports a function of that name

    rng = np.random.default_rng(4)
    a = rng.gamma(2.0, 3.0, (13, 21, 17)).astype(np.float32)
    spec = histogram_spec(a.dtype, (0.0, float(a.max())))
    view = np.pad(a, 2)[2:-2, 2:-2, 2:-2]  # a non-contiguous block, as map_overlap hands over
    ref = _reference_counts(a, spec)
    for tile in (1, 500, 1 << 20):
        monkeypatch.setattr(nm, "TILE_VOXELS", tile)
        np.testing.assert_array_equal(spec.count(a), ref)
        np.testing.assert_array_equal(spec.count(view), ref)
    assert ref.sum() == a.size and ref[-1] >= 1  # the maximum itself lands in the last bin


def test_values_outside_the_bins_are_an_error() -> None:
    spec = histogram_spec(np.float32, (0.0, 1.0))
    with pytest.raises(ValueError, match="outside"):
        spec.count(np.array([0.5, 1.5], np.float32).reshape(1, 1, 2))
    with pytest.raises(ValueError, match="outside"):
        spec.count(np.array([0.5, np.nan], np.float32).reshape(1, 1, 2))
    with pytest.raises(ValueError, match="value range"):
        histogram_spec(np.float32)


def test_histogram_with_a_known_range_equals_its_own_range_counts_on_chunks() -> None:
    rng = np.random.default_rng(5)
    a = rng.normal(50, 10, (9, 31, 26)).astype(np.float32)
    rng_in = (float(a.min()) - 3.0, float(a.max()) + 1.0)
    c_mem, e_mem = histogram(a, value_range=rng_in)
    c_dask, e_dask = histogram(da.from_array(a, chunks=(4, 13, 7)), value_range=rng_in)
    np.testing.assert_array_equal(c_mem, c_dask)
    np.testing.assert_array_equal(e_mem, e_dask)
    np.testing.assert_array_equal(c_mem, _reference_counts(a, histogram_spec(a.dtype, rng_in)))


def test_fused_histogram_equals_the_separate_one() -> None:
    """Counting blocks while they are persisted gives the histogram of the computed array."""
    import dask

    from pipeline.preprocess.normalize import histogram_dask, lazy_spec, lazy_value_range

    rng = np.random.default_rng(6)
    a = da.from_array(rng.normal(0, 1, (10, 40, 30)).astype(np.float32), chunks=(3, 16, 16))
    g = a.map_blocks(lambda b: b * 2 + 1, dtype=np.float32)
    spec = lazy_spec(g.dtype, lazy_value_range(g))
    kept, counts, spec = dask.persist(g, histogram_dask(g, spec), spec)
    whole, spec = g.compute(), spec.compute()
    np.testing.assert_array_equal(np.asarray(counts.compute()), spec.count(whole))
    assert spec.lo == float(whole.min()) and spec.hi == float(whole.max())


ARRAYS = {
    "gamma": lambda r: r.gamma(2.0, 3.0, (17, 23, 19)).astype(np.float32),
    "ties": lambda r: np.round(r.normal(0, 3, (11, 20, 20))).astype(np.float32),  # many equal values
    "spike": lambda r: np.where(r.random((8, 25, 25)) < 0.3, 7.0, r.normal(7, 1, (8, 25, 25))).astype(np.float32),
    "float64": lambda r: r.standard_cauchy((6, 30, 30)),  # long tails, coarse bins far too wide
    "constant": lambda r: np.full((3, 5, 7), 2.5, np.float32),
    "int32": lambda r: r.integers(-1000, 1000, (7, 9, 11)).astype(np.int32),
}


@pytest.mark.parametrize("name", sorted(ARRAYS))
@pytest.mark.parametrize("q", [(0.5, 99.5), (0.0, 100.0), (2.0, 98.0), (50.0, 50.01)])
def test_float_percentiles_equal_numpy(name: str, q: tuple[float, float]) -> None:
    a = ARRAYS[name](np.random.default_rng(7))
    ref = np.percentile(a, q)
    for arr in (a, da.from_array(a, chunks=tuple(max(1, s // 3 + 1) for s in a.shape))):
        got = robust_range(arr, *q) if q[0] < q[1] else None
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=0)


def test_fine_histogram_when_too_many_values_lie_near_a_percentile(monkeypatch: pytest.MonkeyPatch) -> None:
    nm = importlib.import_module("pipeline.preprocess.normalize")  # the package exports a function of that name

    monkeypatch.setattr(nm, "REFINE_CAP", 10)
    a = np.random.default_rng(8).normal(0, 1, (12, 40, 40)).astype(np.float32)
    got = robust_range(da.from_array(a, chunks=(5, 17, 40)), 0.5, 99.5)
    width = float(a.max() - a.min())
    np.testing.assert_allclose(got, np.percentile(a, [0.5, 99.5]), rtol=0, atol=1e-7 * width)


def _counted(a: np.ndarray, chunks: tuple[int, ...], calls: list[int]) -> da.Array:
    """A dask array whose every block evaluation is recorded (stands for an expensive filter)."""

    def fn(block: np.ndarray) -> np.ndarray:
        if block.size > 1:
            calls.append(block.size)
        return block * np.float32(1.5)

    return da.from_array(a, chunks=chunks).map_blocks(fn, dtype=np.float32)


def test_normalize_dask_persist_evaluates_the_volume_once() -> None:
    import dask

    a = np.random.default_rng(9).normal(100, 20, (16, 30, 30)).astype(np.float32)
    ref_lo, ref_hi = np.percentile(a * np.float32(1.5), [1, 99])
    results = {}
    for persist in (True, False):
        calls: list[int] = []
        with dask.config.set(scheduler="threads"):
            out, (lo, hi) = normalize_dask(_counted(a, (5, 16, 30), calls), 1, 99, persist=persist)
            results[persist] = out.compute()
        # False: out-of-core; the volume is evaluated for its min/max, its histogram, the values near the percentiles, the result
        assert sum(calls) == (1 if persist else 4) * a.size
        np.testing.assert_allclose([lo, hi], [ref_lo, ref_hi], rtol=1e-12)
    np.testing.assert_array_equal(results[True], results[False])
    np.testing.assert_allclose(results[True], normalize(a * np.float32(1.5), ref_lo, ref_hi), atol=1e-6)


def test_normalize_leaves_its_input_alone() -> None:
    a = np.linspace(0, 10, 60, dtype=np.float32).reshape(3, 4, 5)
    before = a.copy()
    out = normalize(a, 2.0, 8.0)
    np.testing.assert_array_equal(a, before)
    assert out.dtype == np.float32 and out is not a and not np.shares_memory(out, a)
    np.testing.assert_array_equal(normalize(a.astype(np.uint16), 2.0, 8.0), normalize(a.astype(np.uint16).astype(np.float32), 2.0, 8.0))


@pytest.mark.gpu
def test_counts_refinement_and_normalisation_on_cupy_blocks() -> None:
    from pipeline import backend

    cupy = pytest.importorskip("cupy")
    if not backend.gpu_available():
        pytest.skip("no usable CUDA device")
    from pipeline.preprocess.normalize import refine_spec

    a = np.random.default_rng(10).gamma(2.0, 3.0, (9, 40, 33)).astype(np.float32)
    g = cupy.asarray(a)
    spec = histogram_spec(a.dtype, (0.0, float(a.max())))
    np.testing.assert_array_equal(spec.count(g), spec.count(a))
    refine = refine_spec(spec, spec.count(a), [1, 99])
    for (b1, v1, c1), (b2, v2, c2) in zip(refine.count(g), refine.count(a)):
        assert b1 == b2
        np.testing.assert_array_equal(v1, v2)
        np.testing.assert_array_equal(c1, c2)
    np.testing.assert_array_equal(backend.to_numpy(normalize(g, 2.0, 9.0)), normalize(a, 2.0, 9.0))
