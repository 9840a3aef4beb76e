"""Log-normal fit of binned diameters and its goodness of fit."""

from __future__ import annotations

import math

import dask.array as da
import numpy as np
import pytest

from pipeline.analyze.psd import fit_lognormal_hist, lognormal_pdf, thickness_histogram


def test_fit_recovers_a_lognormal() -> None:
    rng = np.random.default_rng(0)
    d = rng.lognormal(mean=math.log(80.0), sigma=0.35, size=200_000)
    counts, edges = np.histogram(d, bins=np.geomspace(10, 800, 200))
    fit = fit_lognormal_hist(counts, edges)
    assert fit["median_nm"] == pytest.approx(80.0, rel=0.01)
    assert fit["sigma"] == pytest.approx(0.35, rel=0.02)
    assert fit["number_median_nm"] == pytest.approx(80.0 * math.exp(-3 * 0.35**2), rel=0.02)
    assert fit["ks"] < 0.01 and fit["r2_cdf"] > 0.999


def test_goodness_of_fit_flags_a_bimodal_distribution() -> None:
    rng = np.random.default_rng(1)
    d = np.concatenate([rng.normal(30, 2, 50_000), rng.normal(200, 5, 50_000)])
    counts, edges = np.histogram(d, bins=np.linspace(1, 260, 300))
    fit = fit_lognormal_hist(counts, edges)
    assert fit["ks"] > 0.1


def test_histogram_has_one_bin_per_thickness_value() -> None:
    t = np.zeros((4, 5, 6), np.float32)
    t[0, :2] = 10.0
    t[1] = 20.0
    t[3, 0, 0] = 35.0
    counts, edges = thickness_histogram(da.from_array(t, chunks=2))
    assert counts.tolist() == [12, 30, 1]
    centres = 0.5 * (edges[:-1] + edges[1:])
    assert np.all(np.abs(centres - [10, 20, 35]) < 5.1)
    c2, e2 = thickness_histogram(t, bins=7)
    assert c2.sum() == 43 and len(e2) == 8


def test_pdf_integrates_to_one() -> None:
    x = np.linspace(1e-3, 2000, 400_000)
    assert np.trapezoid(lognormal_pdf(x, 100.0, 0.4), x) == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(ValueError, match="two positive"):
        fit_lognormal_hist(np.array([1]), np.array([1.0, 2.0]))


def test_histogram_of_blocks_equals_numpy_on_uneven_chunks() -> None:
    rng = np.random.default_rng(3)
    t = rng.choice([0.0, 12.5, 20.0, 31.0, 47.5], size=(13, 11, 9)).astype(np.float32)
    values = np.array([12.5, 20.0, 31.0, 47.5])
    counts, edges = thickness_histogram(da.from_array(t, chunks=(5, 4, 7)), values=values)
    expected, _ = np.histogram(t[t > 0], bins=edges)
    assert counts.tolist() == expected.tolist()
    assert counts.sum() == np.count_nonzero(t)
