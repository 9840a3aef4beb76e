"""Small structures shared by the reconstruction tests."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi


@pytest.fixture(scope="session")
def sphere() -> np.ndarray:
    """A ball of radius 11.3 voxels off the grid centre (1 = pore inside)."""
    z, y, x = np.mgrid[:34, :36, :38]
    return (((z - 16.3) ** 2 + (y - 17.6) ** 2 + (x - 18.9) ** 2) <= 11.3**2).astype(np.uint8)


@pytest.fixture(scope="session")
def porous() -> np.ndarray:
    """A random porous structure touching every face (thresholded smoothed noise, porosity about 0.5)."""
    rng = np.random.default_rng(7)
    return (ndi.gaussian_filter(rng.random((36, 40, 44)), 2.0) > 0.5).astype(np.uint8)
