"""A loaded model as a NumPy function on tile batches, with optional test-time flips.

:func:`cached_predictor` loads a model folder once per worker (keyed by its
weights' sha256) and reuses it for every task that worker runs, run by torch
(:class:`TorchPredictor`, CPU or CUDA, fp32 or bf16) or by ONNX Runtime on
CPUs (:class:`OnnxPredictor`, from a copy exported once).

Runtimes (:func:`resolve_runtime`): ``torch`` (fp32), ``torch-bf16`` (bf16
autocast: on CPUs with AMX 2-3x faster than fp32 torch and than ONNX Runtime,
probabilities within 0.07 of fp32, 0.2 % of mask voxels changed), ``onnx``; ``auto`` picks ``torch-bf16`` on CPUs
with AMX and on CUDA devices with bf16, else ONNX Runtime on CPUs where it is
installed, else ``torch``.
"""

from __future__ import annotations

import functools
import itertools
import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from pipeline.models.folder import LoadedModel, load_model  # torch is imported only when a model is loaded

__all__ = ["TorchPredictor", "OnnxPredictor", "cached_predictor", "flip_sets", "set_torch_threads", "model_loads",
           "resolve_runtime", "cpu_has_amx", "RUNTIMES"]

#: What can run a network: fp32 torch, bf16-autocast torch, ONNX Runtime (CPU); ``auto`` chooses.
RUNTIMES = ("auto", "torch", "torch-bf16", "onnx")

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
    precision : {"fp32", "bf16"}
        Arithmetic of the forward pass (bf16: autocast; the probabilities
        are returned as float32).

    Notes
    -----
    The tiles go in channels-last layout: oneDNN's fast one on CPUs (1.5x
    for the 2D network, 2.2x for the 3D one in fp32 on AMX cores), and the
    one tensor cores read on CUDA.
    """

    def __init__(self, model: LoadedModel, *, tta: bool = False, device: str = "cpu", precision: str = "fp32") -> None:
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision is {precision!r}; expected 'fp32' or 'bf16'")
        self.model = model
        self.device = device
        self.precision = precision
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
        layout = _layout(x.ndim)
        outs = []
        with torch.inference_mode(), torch.autocast(self.device.split(":")[0], dtype=torch.bfloat16,
                                                    enabled=self.precision == "bf16"):
            for axes in self.flips:
                dims = [a + 2 for a in axes]
                xi = torch.flip(x, dims) if dims else x
                if layout is not None:
                    xi = xi.contiguous(memory_format=layout)
                p = torch.sigmoid(self.model.net(xi)[:, :1].float())
                outs.append(torch.flip(p, dims) if dims else p)
        stack = torch.stack(outs)
        mean = stack.mean(0)
        res = torch.cat([mean, stack.std(0, unbiased=False)], 1) if self.n_out == 2 else mean
        out = res.float().cpu().numpy()
        return out[:, :, None] if self.slices else out


def _layout(ndim: int) -> Any:
    import torch

    return {4: torch.channels_last, 5: torch.channels_last_3d}.get(ndim)


@functools.lru_cache(maxsize=1)
def cpu_has_amx() -> bool:
    """Whether this CPU has AMX-BF16 tiles (Intel Sapphire Rapids and later; read from /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return "amx_bf16" in line.split()
    except OSError:
        pass
    return False


def _cuda_bf16() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    except (ImportError, RuntimeError):
        return False


#: Below this much memory per worker, ``auto`` keeps ONNX Runtime on AMX CPUs (torch needs about 480 MiB loaded, ONNX Runtime 310).
TORCH_MIN_WORKER_BYTES = 1 << 30


def resolve_runtime(runtime: str, device: str, memory_limit: int | None = None) -> str:
    """``torch``, ``torch-bf16`` or ``onnx`` for a setting of :data:`RUNTIMES`.

    ``auto``: on CPUs with AMX, ``torch-bf16`` (measured on 2 cores: 2D 256^2
    tiles 4.5 Mvox/s against 1.7 for ONNX Runtime and 1.6 for fp32 torch; 3D
    7.0 against 2.1 and 3.4); on other CPUs ONNX Runtime where it is
    installed, else ``torch``; on CUDA ``torch-bf16`` where the device has
    bf16 (Ampere and later; not measured on a GPU yet), else ``torch``.
    Workers of less than :data:`TORCH_MIN_WORKER_BYTES` (``memory_limit``)
    keep ONNX Runtime on AMX CPUs: torch alone would fill most of them.
    """
    from pipeline.models.onnx import onnxruntime_available

    if runtime not in RUNTIMES:
        from pipeline.errors import UserError

        raise UserError(f"runtime is {runtime!r}; expected one of {', '.join(RUNTIMES)}")
    if runtime == "auto":
        if device != "cpu":
            return "torch-bf16" if _cuda_bf16() else "torch"
        small = memory_limit is not None and memory_limit < TORCH_MIN_WORKER_BYTES and onnxruntime_available()
        if cpu_has_amx() and not small:
            return "torch-bf16"
        return "onnx" if onnxruntime_available() else "torch"
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

    ``runtime`` is ``torch``, ``torch-bf16`` or ``onnx`` (:func:`resolve_runtime`). An ONNX
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
    if runtime not in ("torch", "torch-bf16"):
        raise ValueError(f"runtime is {runtime!r}; expected 'torch', 'torch-bf16' or 'onnx' (see resolve_runtime)")
    set_torch_threads(threads)
    key = (str(folder), sha256, device)
    with _LOCK:
        model = _CACHE.get(key)
        if model is None:
            model = load_model(folder, device=device)
            model.net.to(memory_format=_layout(model.card.architecture.dims + 2))
            _CACHE[key] = model
            _LOADS[0] += 1
    return TorchPredictor(model, tta=tta, device=device, precision="bf16" if runtime == "torch-bf16" else "fp32")


def model_loads() -> int:
    """How many times this process loaded a model folder (once per model and worker is the goal)."""
    return _LOADS[0]


