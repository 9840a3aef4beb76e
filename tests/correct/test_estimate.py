"""The one estimation pass: equal to the statistics measured step by step, one read of the stack."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest

from pipeline.correct.chain import DriftParams, correct_volume, slab_depth
from pipeline.correct.destripe import _offsets, _subtract
from pipeline.correct.drift import PAIR_OPTIONS, _correlate, _spectrum, estimate_pairs, probe_starts, solve_drift
from pipeline.correct.estimate import EstimatePlan, estimate_dask
from pipeline.correct.illumination import _correct_block, fit_log_background, smooth_coefficients
from pipeline.correct.tilt import tilt_correct
from pipeline.io.volume import as_volume


def _stack(make_stack, z: int = 14, n: int = 64) -> np.ndarray:
    base = make_stack((z, n, n), 3)
    u = np.linspace(0, 1, n)[None, None, :]
    stripes = 0.04 * np.sin(np.arange(n) / 2.0)[None, None, :]
    return ((base + stripes) * (0.8 + 0.4 * u) * 200 + 20).astype(np.float32)


def _plan(z: int) -> EstimatePlan:
    return EstimatePlan(stripe_method="histogram", stripe_params={}, illumination="robust", lags=2,
                        drift_options={**PAIR_OPTIONS, "highpass_px": 16.0}, probe_lag=4,
                        probe_starts=tuple(int(s) for s in probe_starts(z, 4, 6)))


@pytest.mark.parametrize("zchunk", [3, 5, 14])
def test_one_pass_equals_step_by_step(make_stack, zchunk: int) -> None:
    stack = _stack(make_stack)
    plan = _plan(len(stack))
    with dask.config.set(scheduler="sync"):
        est = estimate_dask(da.from_array(stack, chunks=(zchunk, 32, 64)), plan)
    offsets = _offsets(stack, "histogram")
    flat = _subtract(stack, offsets, "histogram")
    coefs = np.stack([fit_log_background(s, 2) for s in flat])
    seen = _correct_block(flat, coefs, "robust", 2, 0.125, "divide")
    np.testing.assert_array_equal(est.offsets, offsets)
    np.testing.assert_array_equal(est.coefficients, coefs)
    np.testing.assert_array_equal(est.pairs, estimate_pairs(seen, 2, highpass_px=16.0))
    dy = [_correlate(_spectrum(seen[s + 4], 16.0), _spectrum(seen[s], 16.0), **PAIR_OPTIONS)[0] for s in plan.probe_starts]
    np.testing.assert_array_equal(est.probe_dy, dy)


def test_drift_measured_on_each_slice_fit_matches_the_smoothed_fit(make_stack) -> None:
    """The pairs see each slice flattened by its own fit; the chain applies the fits smoothed along z."""
    stack = _stack(make_stack, z=20, n=80)
    plan = _plan(len(stack))
    with dask.config.set(scheduler="sync"):
        est = estimate_dask(da.from_array(stack, chunks=(6, 80, 80)), plan)
    flat = _subtract(stack, est.offsets, "histogram")
    smoothed, _ = smooth_coefficients(est.coefficients, 51, 3.0)
    chain_input = _correct_block(flat, smoothed, "robust", 2, 0.125, "divide")
    ours, _ = solve_drift(est.pairs)
    theirs, _ = solve_drift(estimate_pairs(chain_input, 2, highpass_px=16.0))
    np.testing.assert_allclose(ours, theirs, atol=1.0 / PAIR_OPTIONS["upsample"])  # one sub-pixel step, 0.02 px


def test_correction_reads_the_stack_twice(make_stack) -> None:
    """One pass for every estimate, one for the result (it was one per step, and the probe's slices)."""
    raw = _stack(make_stack, z=24, n=48)
    reads: list[int] = []

    def read(block: np.ndarray, block_info: dict | None = None) -> np.ndarray:
        reads.append(block_info[None]["chunk-location"][0])
        return block

    lazy = da.from_array(raw, chunks=(4, 48, 48)).map_blocks(read, dtype=raw.dtype)
    with dask.config.set(scheduler="sync"):
        out = correct_volume(as_volume(lazy, [10, 5, 5]), drift=DriftParams(parallax=True), slab_mb=0.05)
        estimated = len(reads)
        out.values
    assert estimated == 6  # every chunk once
    assert len(reads) == 12


def test_plan_errors() -> None:
    arr = da.zeros((6, 8, 8), chunks=(3, 8, 8))
    with pytest.raises(ValueError, match="one coefficient row per slice"):
        estimate_dask(arr, EstimatePlan(illumination="rows"))
    with pytest.raises(ValueError, match="3D"):
        estimate_dask(da.zeros((6, 8), chunks=3), EstimatePlan())
    assert EstimatePlan(illumination="gaussian").empty and not EstimatePlan(lags=1).empty


def test_tilted_chunks_give_the_same_estimates(make_stack) -> None:
    """Whole-slice slabs of any depth: the merged shallow slabs still cross one boundary per pair."""
    stack = tilt_correct(_stack(make_stack, z=10, n=40), 52.0)
    plan = _plan(len(stack))
    with dask.config.set(scheduler="sync"):
        one = estimate_dask(da.from_array(stack, chunks=(10, -1, -1)), plan)
        many = estimate_dask(da.from_array(stack, chunks=(1, 17, 40)), plan)
    for a, b in [(one.offsets, many.offsets), (one.coefficients, many.coefficients), (one.pairs, many.pairs),
                 (one.probe_dy, many.probe_dy)]:
        np.testing.assert_array_equal(a, b)


def test_slab_depth_whole_input_chunks() -> None:
    assert slab_depth((100, 256, 256), 4.0) == 15  # 4 MB of float32 slices
    assert slab_depth((100, 256, 256), 4.0, align=4) == 12  # whole chunks of 4: no chunk read twice
    assert slab_depth((100, 256, 256), 4.0, align=16) == 15  # a chunk deeper than the slab is split
    assert slab_depth((10, 256, 256), 4.0, align=4) == 10  # the whole stack
