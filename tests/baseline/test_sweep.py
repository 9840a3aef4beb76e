"""The sensitivity sweep reports the porosity spread over the baseline's parameters."""

from __future__ import annotations

import numpy as np

from pipeline.baseline import sensitivity_sweep


def test_sweep_spread(rendered: tuple[np.ndarray, np.ndarray]) -> None:
    image, _ = rendered
    grid = {"threshold_offset": (-0.05, 0.0, 0.05), "filter_size": (1.0, 5.0), "min_size": (0, 64)}
    sw = sensitivity_sweep(image, grid=grid, max_slices=6)
    por = [r["porosity"] for r in sw["runs"]]
    assert sw["spread"] == max(por) - min(por) > 0.02
    assert sw["slices"] == 6
    off = sw["by_parameter"]["threshold_offset"]["porosity"]
    assert off[0] < off[1] < off[2]  # a higher threshold counts more dark voxels as pore
    assert sw["default_porosity"] == off[1]
    # default run + one-at-a-time + the joint offset x filter grid, without duplicates
    keys = {tuple(sorted(r["params"].items())) for r in sw["runs"]}
    assert len(keys) == len(sw["runs"]) and len(sw["runs"]) == 1 + 2 + 2 + 2 + 4
    again = sensitivity_sweep(image, grid=grid, max_slices=6)
    assert again["spread"] == sw["spread"]
