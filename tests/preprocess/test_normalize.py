"""Robust percentiles out-of-core, normalisation to [0, 1], per-slice histogram matching."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from pipeline.preprocess.normalize import match_slices_dask, normalize, normalize_dask, robust_range


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
