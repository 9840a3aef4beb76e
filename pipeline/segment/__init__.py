"""Segmentation by a model: tiled prediction on a global grid, over dask blocks with a halo.

- :mod:`~pipeline.segment.tiling` — the grid, the gaussian window, blending (NumPy).
- :mod:`~pipeline.segment.predictor` — a model folder as a NumPy function on tiles (test-time flips), loaded once per worker.
- :mod:`~pipeline.segment.infer` — whole volumes in memory and dask volumes block by block (chunk-invariant).
- :mod:`~pipeline.segment.volume` — checks and outputs of ``segment`` / ``refine`` on a volume.
- :mod:`~pipeline.segment.dataset` — the samples of a synthetic dataset (3D training, evaluation).
"""

__all__: list[str] = []
