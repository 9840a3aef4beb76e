"""ONNX copies of model folders for ONNX Runtime: exported once from the safetensors weights, cached.

The copy is named by the weights' sha256, so it can never be stale; it lives
in the model folder's ``onnx/`` when that is writable (a trained model in a
run folder) and otherwise under ``$PORELAB_CACHE/onnx`` (a shipped model in
site-packages). Nothing is ever downloaded. Batch and spatial sizes are
dynamic, so one file serves every tile size.
"""

from __future__ import annotations

import os
import uuid
import warnings
from pathlib import Path

from pipeline.models.card import ModelCard
from pipeline.models.folder import LoadedModel

__all__ = ["OPSET", "onnx_path", "export_onnx", "ensure_onnx", "onnxruntime_available"]

OPSET = 17


def onnxruntime_available() -> bool:
    """Whether ONNX Runtime can be imported here."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def _writable(folder: Path) -> bool:
    try:
        (folder / "onnx").mkdir(exist_ok=True)
        probe = folder / "onnx" / f".probe-{uuid.uuid4().hex[:6]}"
        probe.touch()
        probe.unlink()
        return True
    except OSError:
        return False


def onnx_path(model: LoadedModel | None = None, *, folder: str | os.PathLike[str] | None = None,
              card: ModelCard | None = None) -> Path:
    """Where the ONNX copy of a model (``model``, or its ``folder`` and ``card``) is (or will be) kept."""
    if model is not None:
        folder, card = model.folder, model.card
    assert folder is not None and card is not None
    name = f"model-{card.weights_sha256[:16]}-opset{OPSET}.onnx"
    folder = Path(folder)
    if (folder / "onnx" / name).is_file() or _writable(folder):
        return folder / "onnx" / name
    cache = Path(os.environ.get("PORELAB_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "porelab")
    return cache / "onnx" / name


def export_onnx(model: LoadedModel) -> Path:
    """The ONNX copy of ``model``, exported now if it does not exist yet (atomically: workers may race)."""
    import torch

    path = onnx_path(model)
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    a = model.card.architecture
    channels = a.in_channels
    shape = (1, channels) + (model.card.input.divisor * 2,) * a.dims
    axes = {0: "batch", **{2 + i: f"s{i}" for i in range(a.dims)}}
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    net = model.net.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(net, (torch.zeros(shape),), str(tmp), input_names=["x"], output_names=["logits"],
                          dynamic_axes={"x": axes, "logits": axes}, opset_version=OPSET, dynamo=False)
    os.replace(tmp, path)
    return path


def ensure_onnx(folder: str | os.PathLike[str], card: ModelCard) -> Path:
    """The ONNX copy of the model in ``folder``, exported first if missing; torch is imported only then.

    Called once by whoever builds a segmentation graph, so that the workers
    that run it open the ONNX file without importing torch at all.
    """
    path = onnx_path(folder=folder, card=card)
    if path.is_file():
        return path
    from pipeline.models.folder import load_model

    return export_onnx(load_model(folder))
