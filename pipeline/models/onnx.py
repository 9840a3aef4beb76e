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

from pipeline.models.folder import LoadedModel

__all__ = ["OPSET", "onnx_path", "export_onnx", "onnxruntime_available"]

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


def onnx_path(model: LoadedModel) -> Path:
    """Where the ONNX copy of ``model`` is (or will be) kept."""
    name = f"model-{model.card.weights_sha256[:16]}-opset{OPSET}.onnx"
    folder = Path(model.folder)
    if _writable(folder):
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
