"""Synthetic training data: porous structures with known labels, rendered as FIB-SEM stacks.

Modules (plain functions on arrays unless noted):

- :mod:`~pipeline.synth.structures` — structure families (PuMA random spheres with
  log-normal diameters, pore spheres, gaussian blobs, particle agglomerates; NASA pumapy as a generator).
- :mod:`~pipeline.synth.psd` — local thickness, log-normal fits, the Fig. 4 style plot.
- :mod:`~pipeline.synth.render_builtin` — the fast array renderer (NumPy / CuPy).
- :mod:`~pipeline.synth.render_blender` — the Blender / Cycles renderer (``porelab[blender]``).
- :mod:`~pipeline.synth.params` — domain randomisation: per-sample draws, seeds, splits.
- :mod:`~pipeline.synth.dataset` — the dataset store (one zarr v3 store, per-sample writes).
- :mod:`~pipeline.synth.factory` — sample plans, the unit of work, dataset assembly.
- :mod:`~pipeline.synth.pool` — fan-out of units of work over Ray tasks (engine side).
- :mod:`~pipeline.synth.figures` — size-distribution plot and example panels of a dataset.
"""
