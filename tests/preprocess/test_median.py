"""The fast median networks equal scipy's median filter exactly."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi

import pipeline.preprocess.median as med


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.float32, np.float64])
@pytest.mark.parametrize("mode", ["reflect", "nearest", "mirror", "wrap", "constant"])
def test_median_equals_scipy(dtype: type, mode: str) -> None:
    rng = np.random.default_rng(0)
    a = (rng.standard_normal((7, 19, 23)) * 3).astype(dtype) if np.dtype(dtype).kind != "u" else rng.integers(0, 5, (7, 19, 23)).astype(dtype)
    assert np.array_equal(med.median3x3(a, mode=mode), ndi.median_filter(a, size=(1, 3, 3), mode=mode))
    assert np.array_equal(med.median3x3x3(a, mode=mode), ndi.median_filter(a, size=3, mode=mode))


def test_median_tiled_equals_untiled(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    a = rng.standard_normal((4, 30, 17)).astype(np.float32)
    ref2, ref3 = ndi.median_filter(a, size=(1, 3, 3)), ndi.median_filter(a, size=3)
    monkeypatch.setattr(med, "_TILE_VOXELS", 40)  # forces row tiles inside each slice
    assert np.array_equal(med.median3x3(a), ref2)
    assert np.array_equal(med.median3x3x3(a), ref3)


def test_selection_program_is_exact_on_permutations_with_ties() -> None:
    rng = np.random.default_rng(2)
    program, out = med.selection_program(27, 13, ())
    x = rng.integers(0, 4, (27, 5000))
    got = med._run_program(np, program, out, list(x))
    assert np.array_equal(got, np.median(x, axis=0).astype(int))


def test_other_sizes_and_input_untouched() -> None:
    rng = np.random.default_rng(3)
    a = rng.integers(0, 100, (5, 12, 12)).astype(np.uint16)
    before = a.copy()
    assert np.array_equal(med.median_filter(a, 5, dims=2), ndi.median_filter(a, size=(1, 5, 5)))
    assert np.array_equal(a, before)
    with pytest.raises(ValueError):
        med.median_filter(a, 4)
    with pytest.raises(ValueError):
        med.median_filter(a, 3, dims=4)
