"""Measurements on a label volume (1 = pore, 0 = solid).

Modules (plain functions on arrays; dask arrays are read block by block):

- :mod:`~pipeline.analyze.porosity` — global, per-slice and per-block porosity.
- :mod:`~pipeline.analyze.thickness` — local thickness: the radius sweep (reference) and the fast
  exact method (one distance transform, balls painted largest first; numba kernels in
  ``_lt_kernels``), in memory and out of core.
- :mod:`~pipeline.analyze.psd` — pore-size histogram, the distribution's median, log-normal fit and its goodness of fit.
- :mod:`~pipeline.analyze.transport` — connectivity per axis, tortuosity factor of steady diffusion
  (effective diffusivity, MacMullin number; kernels in ``_transport_kernels``), geometric tortuosity.
- :mod:`~pipeline.analyze.truth` — accuracy, IoU, Dice, 3D IoU, smoothness, porosity error against a truth.
- :mod:`~pipeline.analyze.confusion` — the same as counts that add up over slices, samples and workers.
- :mod:`~pipeline.analyze.evaluate` — segmentations of a dataset's samples against their labels, per family.
- :mod:`~pipeline.analyze.measure` — :func:`measure`, all of it as one JSON-able dict.

The specific surface area is measured on an isosurface (see
:func:`pipeline.reconstruct.build.surface_area`).
"""

from pipeline.analyze.measure import measure

__all__ = ["measure"]
