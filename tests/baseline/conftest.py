"""A small rendered FIB-SEM stack with its true labels."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def rendered() -> tuple[np.ndarray, np.ndarray]:
    from pipeline.synth.render_builtin import render_builtin
    from pipeline.synth.structures import random_spheres

    s = random_spheres((12, 64, 64), porosity=0.45, median_nm=60.0, voxel_size_nm=(10, 10, 10), seed=1)
    r = render_builtin(s.labels, (10, 10, 10), seed=1)
    return r.image, r.labels
