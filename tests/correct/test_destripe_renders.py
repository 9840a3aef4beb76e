"""Curtains of porelab's own renderer (partial height, textured grains, charging, noise) at 160 and 256 px.

Fraction removed = 1 - energy(out - clean) / energy(striped - clean). The
curtain field is the difference of two noise-free renders (curtain_amp 0.1
and 1e-9: the renderer's random stream stays aligned, so they differ only by
the curtains, up to 8-bit rounding); the same gaussian noise (8 levels, about
4 % of the range) is added to both, as in tests/correct/test_destripe.py.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from pipeline.correct.destripe import (
    ONSET_ROWS,
    apply_offsets_dask,
    destripe,
    destripe_dask,
    onset_offsets,
    stripe_offsets_dask,
    stripe_rms,
)


@pytest.fixture(scope="module")
def labels() -> dict[int, np.ndarray]:
    from pipeline.synth.structures import random_spheres

    return {n: random_spheres((12, n, n), porosity=0.45, median_nm=60.0, voxel_size_nm=(10, 10, 10), seed=3).labels for n in (160, 256)}


def _render_pair(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from pipeline.synth.render_builtin import render_builtin

    p = {"drift_px": 0.0, "dose": 1e7, "read_noise": 0.0, "gain": 0.8}
    striped = render_builtin(labels, (10, 10, 10), {**p, "curtain_amp": 0.1}, seed=seed).image[2::4].astype(np.float32)
    clean = render_builtin(labels, (10, 10, 10), {**p, "curtain_amp": 1e-9}, seed=seed).image[2::4].astype(np.float32)
    noise = np.random.default_rng(seed).normal(0, 8.0, clean.shape).astype(np.float32)
    return striped + noise, clean + noise


def _removed(out: np.ndarray, striped: np.ndarray, clean: np.ndarray) -> float:
    return 1.0 - float(np.sum((out - clean) ** 2) / np.sum((striped - clean) ** 2))


def _clean_change(clean: np.ndarray, method: str) -> float:
    return float(np.sqrt(np.mean((destripe(clean, method) - clean) ** 2)) / (clean.max() - clean.min()))


# Measured (seeds 1-4; fraction removed / clean change in % of the range RMS):
#   onset      256: 0.437 0.392 0.485 0.584 / 0.08 0.22 0.17 0.10
#              160: 0.469 0.119 0.232 0.477 / 0.40 0.71 0.59 0.50
#   histogram  256: 0.313 0.306 0.357 0.710 / 0.22 0.40 0.68 0.26
#              160: 0.389 0.105 0.212 0.576 / 0.56 0.46 0.38 0.87
FLOOR = {256: (0.35, 0.005), 160: (0.10, 0.01)}


@pytest.mark.parametrize("size", [160, 256])
@pytest.mark.parametrize("seed", [1, 2])
def test_onset_on_rendered_curtains(labels, size: int, seed: int) -> None:
    striped, clean = _render_pair(labels[size], seed)
    removed = _removed(destripe(striped, "onset"), striped, clean)
    floor, max_change = FLOOR[size]
    assert removed > floor, removed
    change = _clean_change(clean, "onset")
    assert change < max_change, change


@pytest.mark.xfail(reason="issue 11 goal not reached, also not with pool_slices (0.70-0.77 at 160, 0.44-0.86 at 256): "
                          "the structure moves column levels by 2-3.5 levels RMS and lasts many slices (destripe.py, Limits)", strict=False)
@pytest.mark.parametrize("size", [160, 256])
def test_goal_85_percent_removed(labels, size: int) -> None:
    striped, clean = _render_pair(labels[size], 1)
    assert _removed(destripe(striped, "onset"), striped, clean) >= 0.85
    assert _clean_change(clean, "onset") < 0.005


def test_onset_offsets_estimated_once_then_applied(labels) -> None:
    striped, _ = _render_pair(labels[160], 1)
    arr = da.from_array(striped, chunks=(2, 50, 70))
    offsets = stripe_offsets_dask(arr, "onset")
    assert offsets.shape == (3, ONSET_ROWS, 160)
    got = apply_offsets_dask(arr, offsets, "onset").compute(scheduler="sync")
    np.testing.assert_array_equal(got, destripe(striped, "onset"))
    rms = stripe_rms(offsets, 160)
    assert rms.shape == (3,) and np.all(rms > 0)
    np.testing.assert_allclose(stripe_rms(offsets[:, 1], 160), np.sqrt(np.mean(offsets[:, 1] ** 2, axis=1)))
    with pytest.raises(ValueError, match="do not fit"):
        apply_offsets_dask(arr, offsets[:, 0], "onset")


def test_onset_input_untouched_and_degenerate() -> None:
    a = np.random.default_rng(0).normal(0, 1, (40, 30)).astype(np.float32)
    before = a.copy()
    onset_offsets(a)
    np.testing.assert_array_equal(a, before)
    flat = np.full((1, 20, 30), 7, dtype=np.uint8)
    np.testing.assert_array_equal(destripe(flat, "onset"), flat.astype(np.float32))


# --------------------------------------------------------------------------- onset pooled over slices
def _consecutive_pair(size: int, seed: int, nz: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Consecutive slices (pooling needs neighbours): striped and clean renders plus the same gaussian noise."""
    from pipeline.synth.render_builtin import render_builtin
    from pipeline.synth.structures import random_spheres

    lab = random_spheres((nz, size, size), porosity=0.45, median_nm=60.0, voxel_size_nm=(10, 10, 10), seed=3).labels
    p = {"drift_px": 0.0, "dose": 1e7, "read_noise": 0.0, "gain": 0.8}
    striped = render_builtin(lab, (10, 10, 10), {**p, "curtain_amp": 0.1}, seed=seed).image.astype(np.float32)
    clean = render_builtin(lab, (10, 10, 10), {**p, "curtain_amp": 1e-9}, seed=seed).image.astype(np.float32)
    noise = np.random.default_rng(seed).normal(0, 8.0, clean.shape).astype(np.float32)
    return striped + noise, clean + noise


# pool_slices 8 and POOLED_DEFAULTS on 20 consecutive slices (2-17 scored); 28 slices: see destripe.py, Limits.
POOLED_FLOOR = {160: (0.55, 0.005)}  # measured 0.611 removed (seed 1, 20 slices)


@pytest.mark.parametrize("size", [160])
def test_pooled_onset_on_consecutive_slices(size: int) -> None:
    striped, clean = _consecutive_pair(size, 1)
    out = destripe(striped, "onset", pool_slices=8)
    sl = slice(2, -2)
    removed = _removed(out[sl], striped[sl], clean[sl])
    floor, max_change = POOLED_FLOOR[size]
    assert removed > floor, removed
    change = float(np.sqrt(np.mean((destripe(clean, "onset", pool_slices=8) - clean)[sl] ** 2)) / (clean.max() - clean.min()))
    assert change < max_change, change


def test_pooled_onset_dask_equals_in_memory() -> None:
    striped, _ = _consecutive_pair(96, 2, nz=12)
    want = destripe(striped, "onset", pool_slices=3)
    arr = da.from_array(striped, chunks=(2, 50, 40))  # slabs of 2 slices: pooling crosses their boundaries
    offsets = stripe_offsets_dask(arr, "onset", pool_slices=3)
    assert offsets.shape == (12, ONSET_ROWS, 96)
    np.testing.assert_array_equal(apply_offsets_dask(arr, offsets, "onset").compute(scheduler="sync"), want)
    np.testing.assert_array_equal(destripe_dask(arr, "onset", pool_slices=3).compute(scheduler="sync"), want)
    with pytest.raises(ValueError, match="pool_slices"):
        destripe(striped, "histogram", pool_slices=3)


def test_pooled_onset_input_untouched_and_degenerate() -> None:
    a = np.random.default_rng(0).normal(0, 1, (5, 40, 30)).astype(np.float32)
    before = a.copy()
    out = destripe(a, "onset", pool_slices=2)
    np.testing.assert_array_equal(a, before)
    assert out.shape == a.shape and out.dtype == np.float32
    flat = np.full((3, 20, 30), 7, dtype=np.uint8)
    np.testing.assert_array_equal(destripe(flat, "onset", pool_slices=2), flat.astype(np.float32))
    assert stripe_offsets_dask(da.zeros((0, 20, 30), chunks=(1, 20, 30)), "onset", pool_slices=2).shape[0] == 0
