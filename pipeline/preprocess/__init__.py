"""Preprocessing: denoising (gaussian, exact fast median, bilateral) and intensity normalisation.

Plain array functions on NumPy or CuPy stacks (z, y, x) and dask wrappers
with exact halos; :func:`pipeline.preprocess.chain.preprocess_volume` chains
them lazily on a porelab volume.
"""

from pipeline.preprocess.denoise import bilateral, denoise, denoise_dask, gaussian, halo_depth
from pipeline.preprocess.median import median3x3, median3x3x3, median_filter
from pipeline.preprocess.normalize import normalize, normalize_dask, robust_range

__all__ = [
    "bilateral",
    "denoise",
    "denoise_dask",
    "gaussian",
    "halo_depth",
    "median3x3",
    "median3x3x3",
    "median_filter",
    "normalize",
    "normalize_dask",
    "robust_range",
]
