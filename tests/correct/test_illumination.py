"""Uneven illumination: a known gradient is removed to under 2 % of the range."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from pipeline.correct.illumination import (
    correct_illumination_dask,
    estimate_backgrounds_dask,
    fit_background,
    poly_terms,
)


def _trend(img2d: np.ndarray) -> float:
    """Peak-to-peak of the least-squares plane through a slice."""
    ny, nx = img2d.shape
    v, u = np.meshgrid(np.linspace(-1, 1, ny), np.linspace(-1, 1, nx), indexing="ij")
    design = np.stack([np.ones(v.size), v.ravel(), u.ravel()], axis=1)
    c, *_ = np.linalg.lstsq(design, img2d.ravel(), rcond=None)
    plane = (design @ c).reshape(ny, nx)
    return float(plane.max() - plane.min())


@pytest.mark.parametrize("method,limit", [("poly", 0.02), ("gaussian", None)])
@pytest.mark.parametrize("mode", ["divide", "subtract"])
def test_gradient_removed(make_stack, method: str, limit: float | None, mode: str) -> None:
    clean = make_stack((4, 120, 150), 0)
    v, u = np.meshgrid(np.linspace(0, 1, 120), np.linspace(0, 1, 150), indexing="ij")
    gain = 0.6 + 0.8 * (0.7 * u + 0.3 * v)  # +-40 % shading
    shaded = clean * gain if mode == "divide" else clean + 0.4 * (u + v - 1)
    value_range = float(clean.max() - clean.min())
    assert _trend(shaded[0]) > 0.15 * value_range  # the defect is large
    out = correct_illumination_dask(da.from_array(shaded, chunks=(3, 50, 50)), method, mode=mode).compute(scheduler="sync")
    for k in range(4):
        if limit is not None:  # the default: under 2 % of the range
            assert _trend(out[k]) < limit * value_range, _trend(out[k]) / value_range
        else:  # the gaussian background bends at the borders: only a 3x reduction
            assert _trend(out[k]) < _trend(shaded[k]) / 3


def test_per_slice_coefficients_and_chunked_equals_in_memory(make_stack) -> None:
    clean = make_stack((5, 60, 70), 1)
    ramp = np.linspace(0.7, 1.3, 70)[None, None, :]
    shaded = (clean * ramp).astype(np.float32)
    coefs = estimate_backgrounds_dask(da.from_array(shaded, chunks=(2, 30, 30)))
    assert coefs.shape == (5, len(poly_terms(2)))
    np.testing.assert_allclose(coefs[0], fit_background(shaded[0]), atol=1e-9)
    a = correct_illumination_dask(da.from_array(shaded, chunks=(2, 30, 30)), coefficients=coefs).compute(scheduler="sync")
    b = correct_illumination_dask(da.from_array(shaded, chunks=(5, 60, 70))).compute(scheduler="sync")
    np.testing.assert_allclose(a, b, atol=1e-5)
