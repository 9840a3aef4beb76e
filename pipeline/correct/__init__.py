"""Image correction of FIB-SEM stacks: tilt, curtaining, illumination, drift, ROI.

Plain array functions on NumPy or CuPy stacks (z, y, x) and dask wrappers;
:func:`pipeline.correct.chain.correct_volume` chains them on a porelab volume.
"""

from pipeline.correct.destripe import destripe, destripe_dask
from pipeline.correct.drift import apply_shifts, estimate_pairs, phase_correlation, smooth_drift, solve_drift
from pipeline.correct.illumination import background, remove_background
from pipeline.correct.roi import valid_box
from pipeline.correct.tilt import tilt_correct, tilt_voxel_size

__all__ = [
    "apply_shifts",
    "background",
    "destripe",
    "destripe_dask",
    "estimate_pairs",
    "phase_correlation",
    "remove_background",
    "smooth_drift",
    "solve_drift",
    "tilt_correct",
    "tilt_voxel_size",
    "valid_box",
]
