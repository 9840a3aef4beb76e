"""Training the U-Nets on synthetic datasets, under Ray Train or in one process.

- :mod:`~pipeline.train.config` — the settings of a training (stages ``train2d``, ``train3d``).
- :mod:`~pipeline.train.data` — a worker's share of patches, read from the dataset store.
- :mod:`~pipeline.train.augment` — flips, rotations, gamma, contrast, noise, blur.
- :mod:`~pipeline.train.checkpoint` — per-epoch checkpoints (safetensors + JSON).
- :mod:`~pipeline.train.loop` — the per-worker loop; :mod:`~pipeline.train.session` — local or Ray worker.
- :mod:`~pipeline.train.ray_runner` — ``TorchTrainer`` wiring; :mod:`~pipeline.train.run` — the entry point.
- :mod:`~pipeline.train.plots` — the paper's Fig. 7, 8 and 9 for a run.

Validation counts come from :mod:`pipeline.analyze.confusion`.
"""

__all__: list[str] = []
