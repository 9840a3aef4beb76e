"""Models: the U-Net (2D, 2.5D, 3D), its losses, and model folders (safetensors + model.json).

- :mod:`~pipeline.models.nets` — :class:`~pipeline.models.nets.UNet` and the name registry.
- :mod:`~pipeline.models.losses` — CE, Dice, CE + Dice, focal, boundary-weighted.
- :mod:`~pipeline.models.card` — ``model.json`` (pydantic) and the generated Markdown card.
- :mod:`~pipeline.models.folder` — save, find and load model folders (never unpickles).
- :mod:`~pipeline.models.inputs` — how a network's input is cut from a volume (2.5D neighbours, padding).

Importing this package does not import torch; its modules do.
"""

__all__: list[str] = []
