"""Drift: a known sequence is recovered within 0.2 px RMS; shifting is exact on chunks."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import scipy.ndimage as ndi

from pipeline.correct.drift import (
    apply_shifts,
    apply_shifts_dask,
    estimate_pairs,
    estimate_pairs_dask,
    phase_correlation,
    smooth_drift,
    solve_drift,
)


def _drifted(make_stack, seed: int = 0, z: int = 40, n: int = 160, noise: float = 0.05):
    m = 12
    base = make_stack((z, n, n), seed, margin=m)
    t = np.arange(z)
    true = np.stack([2.5 * np.sin(t / 7) + 0.05 * t, 0.08 * t + 1.5 * np.cos(t / 9) - 1.5], axis=1)
    true -= true[0]
    stack = np.stack([ndi.shift(base[k], true[k], order=3, mode="nearest")[m:-m, m:-m] for k in range(z)])
    stack += np.random.default_rng(seed + 100).normal(0, noise, stack.shape)
    return stack, true


def test_single_shift_subpixel() -> None:
    rng = np.random.default_rng(0)
    img = ndi.gaussian_filter(0.25 + 0.5 * (ndi.gaussian_filter(rng.standard_normal((200, 200)), 3) > 0), 1.0)
    for s in [(0.3, 0.7), (1.5, -2.2), (-4.25, 0.1)]:
        mov = ndi.shift(img, s, order=3, mode="nearest")[20:-20, 20:-20] + rng.normal(0, 0.05, (160, 160))
        dy, dx, conf = phase_correlation(mov, img[20:-20, 20:-20])
        assert abs(dy - s[0]) < 0.06 and abs(dx - s[1]) < 0.06
        assert conf > 10


@pytest.mark.parametrize("seed", [0, 1])
def test_known_drift_recovered(make_stack, seed: int) -> None:
    stack, true = _drifted(make_stack, seed)
    pairs = estimate_pairs_dask(da.from_array(stack, chunks=(7, 80, 80)), 1)
    np.testing.assert_allclose(pairs, estimate_pairs(stack, 1), atol=1e-9, equal_nan=True)
    drift, used = solve_drift(pairs)
    drift = smooth_drift(drift, 5)
    rms = np.sqrt(((drift - true) ** 2).sum(axis=1).mean())
    assert rms < 0.2, rms
    assert used[1:, 0].all()


@pytest.mark.parametrize(("lags", "zchunks"), [(1, (7, 7, 7, 3)), (2, (5, 1, 9, 9)), (3, (4, 4, 13, 3)), (2, (24,))])
def test_pairs_across_slab_boundaries_equal_in_memory(make_stack, lags: int, zchunks: tuple[int, ...]) -> None:
    stack, _ = _drifted(make_stack, 0)
    stack = stack[: sum(zchunks)]
    got = estimate_pairs_dask(da.from_array(stack, chunks=(zchunks, 40, 80)), lags)
    want = estimate_pairs(stack, lags)
    np.testing.assert_allclose(got, want, atol=1e-9, equal_nan=True)
    assert np.isfinite(got[lags:]).all()


def test_unreliable_step_is_bridged_and_jump_kept() -> None:
    z = 12
    pairs = np.full((z, 2, 3), np.nan)
    steps = np.zeros((z, 2))
    steps[1:, 0] = 0.5
    steps[6] = [4.0, -3.0]  # a real jump with a clear peak
    for i in range(1, z):
        pairs[i, 0] = [*steps[i], 30.0]
        if i >= 2:
            pairs[i, 1] = [*(steps[i] + steps[i - 1]), 20.0]
    pairs[3, 0] = [9.0, 9.0, 1.0]  # garbage with a weak peak
    drift, used = solve_drift(pairs)
    np.testing.assert_allclose(drift, np.cumsum(steps, axis=0), atol=1e-3)
    assert not used[3, 0] and used[6, 0]


def test_apply_shifts_undoes_drift_and_chunks_are_exact(make_stack) -> None:
    stack, true = _drifted(make_stack, 2, z=9, n=64, noise=0.0)
    shifts = -true
    out = apply_shifts(stack, shifts)
    got = apply_shifts_dask(da.from_array(stack.astype(np.float32), chunks=(4, 20, 27)), shifts).compute(scheduler="sync")
    np.testing.assert_allclose(got, apply_shifts(stack.astype(np.float32), shifts), atol=1e-5)
    # after correction consecutive slices agree much better than before
    inner = (slice(None), slice(8, -8), slice(8, -8))
    before = np.abs(np.diff(stack[inner], axis=0)).mean()
    after = np.abs(np.diff(out[inner], axis=0)).mean()
    assert after < 0.85 * before


@pytest.mark.parametrize("n", [3, 4, 11, 64, 325])
def test_window_is_scipys_tukey(n: int) -> None:
    from scipy.signal.windows import tukey

    from pipeline.correct.drift import _window

    np.testing.assert_allclose(_window(n), tukey(n, 0.3), atol=1e-12)
