"""The grayscale-threshold baseline (Ferner et al. 2024) and its parameter sensitivity.

- :mod:`~pipeline.baseline.threshold` — destripe, filter, global threshold (given or Otsu), clean, per slice.
- :mod:`~pipeline.baseline.sweep` — porosity over a grid of its parameters (the paper's Fig. 1).
"""

from pipeline.baseline.sweep import DEFAULT_GRID, sensitivity_sweep
from pipeline.baseline.threshold import BaselineParams, baseline_segment

__all__ = ["BaselineParams", "baseline_segment", "sensitivity_sweep", "DEFAULT_GRID"]
