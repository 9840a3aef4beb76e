"""Drift: a known sequence is recovered within 0.2 px RMS; shifting is exact on chunks."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import scipy.ndimage as ndi

from pipeline.correct.drift import (
    apply_shifts,
    apply_shifts_dask,
    applied_shifts,
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


def test_nearest_moves_by_whole_pixels_and_keeps_the_values() -> None:
    rng = np.random.default_rng(3)
    stack = rng.integers(1, 255, (4, 17, 19)).astype(np.float32)
    shifts = np.array([[0.0, 0.0], [0.4, -1.6], [-2.5, 3.49], [5.0, 0.0]])
    before = stack.copy()
    out = apply_shifts(stack, shifts, interpolation="nearest", cval=-1.0)
    np.testing.assert_array_equal(stack, before)  # the input is not modified
    moves = applied_shifts(shifts, "nearest")
    np.testing.assert_array_equal(moves, [[0, 0], [0, -2], [-2, 3], [5, 0]])  # numpy rounds halves to even
    for z, (sy, sx) in enumerate(moves.astype(int)):
        ref = ndi.shift(stack[z], (sy, sx), order=0, mode="constant", cval=-1.0)
        np.testing.assert_array_equal(out[z], ref)
    # every value is a measured one (or the fill), nothing averaged
    assert set(np.unique(out)) <= set(np.unique(stack)) | {-1.0}
    # integer shifts: linear is the same move
    np.testing.assert_array_equal(apply_shifts(stack, moves, interpolation="linear", cval=-1.0), out)
    # and linear interpolation of a fraction does average (the blur nearest avoids)
    assert not set(np.unique(apply_shifts(stack, shifts, interpolation="linear"))) <= set(np.unique(stack)) | {0.0}


def test_nearest_on_chunks_is_exact() -> None:
    rng = np.random.default_rng(4)
    stack = rng.normal(size=(6, 40, 45)).astype(np.float32)
    shifts = rng.uniform(-4, 4, (6, 2))
    whole = apply_shifts(stack, shifts, interpolation="nearest")
    got = apply_shifts_dask(da.from_array(stack, chunks=(4, 13, 17)), shifts, interpolation="nearest").compute(scheduler="sync")
    np.testing.assert_array_equal(got, whole)


def test_unknown_interpolation_is_refused() -> None:
    with pytest.raises(ValueError, match="interpolation 'cubic' is unknown"):
        apply_shifts(np.zeros((2, 4, 4), np.float32), np.zeros((2, 2)), interpolation="cubic")
    with pytest.raises(ValueError, match="expected one of nearest, linear"):
        apply_shifts_dask(da.zeros((2, 4, 4), chunks=2), np.zeros((2, 2)), interpolation="spline")


@pytest.mark.parametrize("n", [3, 4, 11, 64, 325])
def test_window_is_scipys_tukey(n: int) -> None:
    from scipy.signal.windows import tukey

    from pipeline.correct.drift import _window

    np.testing.assert_allclose(_window(n), tukey(n, 0.3), atol=1e-12)
