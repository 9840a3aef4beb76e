"""A loaded model as a NumPy function on tile batches, with optional test-time flips.

:func:`cached_predictor` loads a model folder once per worker (keyed by its
weights' sha256) and reuses it for every task that worker runs, run by torch
(:class:`TorchPredictor`, CPU or CUDA) or by ONNX Runtime on CPUs
(:class:`OnnxPredictor`, from a copy exported once).
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np


import numpy as np

from pipeline.models.folder import LoadedModel, load_model  # torch is imported only when a model is loaded

__all__ = ["TorchPredictor", "OnnxPredictor", "cached_predictor", "flip_sets", "set_torch_threads", "model_loads",
           "resolve_runtime"]

_CACHE: dict[tuple[str, str, str], LoadedModel] = {}
_LOCK = threading.Lock()
_LOADS = [0]
_SESSIONS: dict[tuple[str, str, str], tuple[Any, Any]] = {}


def flip_sets(axes: Sequence[int]) -> list[tuple[int, ...]]:
    """Every subset of ``axes`` (the identity first): the flips of test-time augmentation."""
    axes = sorted(set(int(a) for a in axes))
    return [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]


def set_torch_threads(n: int | None) -> None:
    """Intra-op threads of torch in this process (None: leave torch's choice)."""
    import torch

    if n is not None and n >= 1 and torch.get_num_threads() != n:
        torch.set_num_threads(int(n))


def _flip_np(x, axes):  # noqa: ANN001, ANN202
    import numpy as np

    return np.flip(x, axis=[a + 2 for a in axes]) if axes else x


class OnnxPredictor:
    """As :class:`TorchPredictor`, run by ONNX Runtime on CPUs (an exported copy of the model, see
    :mod:`pipeline.models.onnx`); outputs equal torch's to float rounding."""

    def __init__(self, card: Any, session: Any, *, tta: bool = False) -> None:
        self.card = card
        self.session = session
        self.slices = card.input.kind == "slices"
        self.flips = flip_sets(card.inference.tta_axes) if tta else [()]
        self.n_out = 2 if tta else 1

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(batch, dtype=np.float32)
        if self.slices:
            x = x[:, :, 0]
        outs = []
        for axes in self.flips:
            xi = np.ascontiguousarray(_flip_np(x, axes))
            logits = self.session.run(None, {"x": xi})[0][:, :1]
            p = 1.0 / (1.0 + np.exp(-logits.astype(np.float32)))
            outs.append(_flip_np(p, axes))
        stack = np.stack(outs)
        mean = stack.mean(0)
        res = np.concatenate([mean, stack.std(0)], 1) if self.n_out == 2 else mean
        res = res.astype(np.float32)
        return res[:, :, None] if self.slices else res


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


def resolve_runtime(runtime: str, device: str) -> str:
    """``torch`` or ``onnx`` for a setting (``auto``: ONNX Runtime on CPUs where it is installed, else torch)."""
    from pipeline.models.onnx import onnxruntime_available

    if runtime == "auto":
        return "onnx" if device == "cpu" and onnxruntime_available() else "torch"
    if runtime == "onnx" and not onnxruntime_available():
        from pipeline.errors import UserError

        raise UserError("runtime onnx needs ONNX Runtime (pip install onnxruntime); use runtime torch or auto")
    return runtime


def _onnx_session(path: str, threads: int | None) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads or 0)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def cached_predictor(folder: str | os.PathLike[str], sha256: str, *, tta: bool = False, device: str = "cpu",
                     threads: int | None = None, runtime: str = "torch") -> TorchPredictor | OnnxPredictor:
    """The predictor of the model in ``folder``, loaded once per process, ``sha256``, runtime and threads.

    ``runtime`` is ``torch`` or ``onnx`` (:func:`resolve_runtime`). An ONNX
    session opens the copy exported once from the weights
    (:func:`pipeline.models.onnx.ensure_onnx`); when it exists already, torch
    is not imported at all (about 250 MiB less per worker).
    """
    if runtime == "onnx":
        from pipeline.models.folder import read_card
        from pipeline.models.onnx import ensure_onnx

        skey = (str(folder), sha256, f"onnx-{threads}")
        with _LOCK:
            entry = _SESSIONS.get(skey)
            if entry is None:
                card = read_card(folder)
                entry = _SESSIONS[skey] = (card, _onnx_session(str(ensure_onnx(folder, card)), threads))
                _LOADS[0] += 1
        return OnnxPredictor(entry[0], entry[1], tta=tta)
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


