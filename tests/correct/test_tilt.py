"""Tilt correction: shape, voxel size, interpolation, chunked == in memory."""

from __future__ import annotations

import math

import dask.array as da
import numpy as np
import pytest

from pipeline.correct.tilt import tilt_correct, tilt_correct_dask, tilt_rows, tilt_voxel_size


def test_shape_and_voxel_size() -> None:
    a = np.zeros((3, 100, 40), np.uint16)
    out = tilt_correct(a, 52.0)
    assert out.shape == (3, round(100 / math.sin(math.radians(52))), 40) == (3, 127, 40)
    vz, vy, vx = tilt_voxel_size([10.0, 5.0, 5.0], 100, 52.0)
    assert (vz, vx) == (10.0, 5.0)
    assert vy * 127 == pytest.approx(100 * 5.0 / math.sin(math.radians(52)))  # true extent kept
    assert tilt_voxel_size([10, 5, 5], 100, 52.0, resample=False)[1] == pytest.approx(5 / math.sin(math.radians(52)))
    assert tilt_rows(100, 90.0) == 100


def test_linear_ramp_is_resampled_exactly() -> None:
    ny = 64
    ramp = np.broadcast_to(np.arange(ny, dtype=np.float32)[None, :, None], (2, ny, 5)).copy()
    out = tilt_correct(ramp, 52.0)
    new = out.shape[1]
    pos = (np.arange(new) + 0.5) * ny / new - 0.5
    inner = (pos >= 0) & (pos <= ny - 1)
    np.testing.assert_allclose(out[0, inner, 0], pos[inner], atol=1e-4)


def test_chunked_equals_in_memory() -> None:
    rng = np.random.default_rng(0)
    a = rng.random((7, 45, 33)).astype(np.float32)
    got = tilt_correct_dask(da.from_array(a, chunks=(3, 10, 8)), 40.0).compute(scheduler="sync")
    np.testing.assert_allclose(got, tilt_correct(a, 40.0), atol=1e-6)


def test_bad_angle() -> None:
    with pytest.raises(ValueError):
        tilt_correct(np.zeros((1, 4, 4)), 0.0)
