"""A loaded model as a NumPy function on tile batches, with optional test-time flips.

One :class:`TorchPredictor` per process and model: :func:`cached_predictor`
loads a model folder once per worker (keyed by its weights' sha256) and
reuses it for every task that worker runs.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Sequence


import numpy as np

from pipeline.models.folder import LoadedModel, load_model

__all__ = ["TorchPredictor", "cached_predictor", "flip_sets", "set_torch_threads", "model_loads"]

_CACHE: dict[tuple[str, str, str], LoadedModel] = {}
_LOCK = threading.Lock()
_LOADS = [0]


def flip_sets(axes: Sequence[int]) -> list[tuple[int, ...]]:
    """Every subset of ``axes`` (the identity first): the flips of test-time augmentation."""
    axes = sorted(set(int(a) for a in axes))
    return [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]


def set_torch_threads(n: int | None) -> None:
    """Intra-op threads of torch in this process (None: leave torch's choice)."""
    import torch

    if n is not None and n >= 1 and torch.get_num_threads() != n:
        torch.set_num_threads(int(n))


class TorchPredictor:
    """``(batch, channels, *tile) -> (batch, outputs, *tile)`` pore probabilities of a model.

    Parameters
    ----------
    model : LoadedModel
        The network (eval mode) and its card.
    tta : bool
        Average the probabilities over the flips of the tile axes that
        training flipped (``card.inference.tta_axes``); a second output is the
        spread (standard deviation) across the flips.
    device : str
        ``"cpu"`` or ``"cuda"``.
    """

    def __init__(self, model: LoadedModel, *, tta: bool = False, device: str = "cpu") -> None:
        self.model = model
        self.device = device
        card = model.card
        self.slices = card.input.kind == "slices"
        self.flips = flip_sets(card.inference.tta_axes) if tta else [()]
        self.n_out = 2 if tta else 1

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import torch

        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        if self.slices:
            x = x[:, :, 0]  # tiles of one slice: (batch, k, y, x) for the 2D network
        x = x.to(self.device)
        outs = []
        with torch.inference_mode():
            for axes in self.flips:
                dims = [a + 2 for a in axes]
                xi = torch.flip(x, dims) if dims else x
                p = torch.sigmoid(self.model.net(xi)[:, :1])
                outs.append(torch.flip(p, dims) if dims else p)
        stack = torch.stack(outs)
        mean = stack.mean(0)
        res = torch.cat([mean, stack.std(0, unbiased=False)], 1) if self.n_out == 2 else mean
        out = res.float().cpu().numpy()
        return out[:, :, None] if self.slices else out


def cached_predictor(folder: str | os.PathLike[str], sha256: str, *, tta: bool = False, device: str = "cpu",
                     threads: int | None = None) -> TorchPredictor:
    """The predictor of the model in ``folder``, its network loaded once per process and ``sha256``."""
    set_torch_threads(threads)
    key = (str(folder), sha256, device)
    with _LOCK:
        model = _CACHE.get(key)
        if model is None:
            model = load_model(folder, device=device)
            _CACHE[key] = model
            _LOADS[0] += 1
    return TorchPredictor(model, tta=tta, device=device)


def model_loads() -> int:
    """How many times this process loaded a model folder (once per model and worker is the goal)."""
    return _LOADS[0]


