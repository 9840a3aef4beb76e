"""Synthetic FIB-SEM-like stacks with known defects for the correction tests."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import scipy.ndimage as ndi


def porous_stack(shape: tuple[int, int, int], seed: int, *, change: float = 0.99, margin: int = 0) -> np.ndarray:
    """Two-phase structure (0.25 pore, 0.75 solid, blurred) whose slices change in place (AR(1) field)."""
    rng = np.random.default_rng(seed)
    z, y, x = shape
    y, x = y + 2 * margin, x + 2 * margin
    f = ndi.gaussian_filter(rng.standard_normal((y, x)), 2.5)
    f /= f.std()
    out = np.empty((z, y, x))
    for k in range(z):
        n = ndi.gaussian_filter(rng.standard_normal((y, x)), 2.5)
        f = change * f + np.sqrt(1 - change**2) * n / n.std()
        out[k] = ndi.gaussian_filter(0.25 + 0.5 * (f > 0), 1.0)
    return out


@pytest.fixture
def make_stack() -> Callable[..., np.ndarray]:
    return porous_stack
