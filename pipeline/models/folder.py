"""Model folders: ``weights.safetensors`` + ``model.json`` (+ a generated ``README.md`` card).

Loading checks the weights' sha256 against ``model.json``, builds the network
from porelab's registry and loads the tensors with ``strict=True``; nothing is
unpickled. The models that ship with porelab live in
``pipeline/models/builtin/<name>/`` and are found by name.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from pipeline.errors import UserError
from pipeline.models.card import ModelCard, card_markdown

__all__ = ["WEIGHTS", "CARD", "LoadedModel", "builtin_models", "resolve_model", "read_card", "file_sha256",
           "save_model", "load_model", "state_dict_to_tensors"]

WEIGHTS = "weights.safetensors"
CARD = "model.json"

#: What "default" means for each task: the shipped model's folder name.
DEFAULT_MODELS: dict[str, str] = {"segment": "segment-default", "refine": "refine-default"}


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of a file, hex."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _builtin_root() -> Path:
    return Path(str(resources.files("pipeline.models") / "builtin"))


def builtin_models() -> dict[str, Path]:
    """The models shipped inside the package, by name."""
    root = _builtin_root()
    if not root.is_dir():
        return {}
    return {p.name: p for p in sorted(root.iterdir()) if (p / CARD).is_file() and (p / WEIGHTS).is_file()}


def resolve_model(ref: str | os.PathLike[str] | None, *, task: str = "segment") -> Path:
    """The folder of a model named by ``ref``.

    ``None`` or ``"default"``: the shipped model for ``task``; the name of a
    shipped model; otherwise a path to a model folder.

    Raises
    ------
    UserError
        When no such model exists.
    """
    shipped = builtin_models()
    if ref is None or str(ref) == "default":
        name = DEFAULT_MODELS[task]
        if name not in shipped:
            raise UserError(f"no default {task} model ships with this porelab; name a model folder written by porelab train "
                            f"({'--model' if task == 'segment' else '--refine-model / --refine'} DIR, or model: in a job)")
        return shipped[name]
    if str(ref) in shipped and not Path(ref).exists():
        return shipped[str(ref)]
    path = Path(ref)
    if not path.exists():
        names = ", ".join(shipped) or "none"
        raise UserError(f"{path}: no such model folder; expected a folder with {WEIGHTS} and {CARD} (shipped models: {names})")
    return path


def read_card(folder: str | os.PathLike[str]) -> ModelCard:
    """The validated ``model.json`` of a model folder."""
    from pydantic import ValidationError

    folder = Path(folder)
    f = folder / CARD
    if not f.is_file():
        raise UserError(f"{folder}: has no {CARD}; expected a model folder written by porelab train ({WEIGHTS} + {CARD})")
    try:
        raw = json.loads(f.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{f}: is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    try:
        return ModelCard.model_validate(raw)
    except ValidationError as err:
        e = err.errors()[0]
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        raise UserError(f"{f}: {loc}: {e['msg']}") from None


def state_dict_to_tensors(state: dict[str, Any]) -> dict[str, Any]:
    """Contiguous CPU copies of a state dict's tensors (what safetensors stores), DDP prefixes removed."""
    out = {}
    for k, v in state.items():
        key = k.removeprefix("module.").removeprefix("_orig_mod.")
        out[key] = v.detach().to("cpu").contiguous().clone()
    return out


def save_model(folder: str | os.PathLike[str], net: Any, card: ModelCard, *, overwrite: bool = True) -> Path:
    """Write ``net``'s weights and ``card`` (with the weights' hash and size) into ``folder``, atomically.

    Returns the folder. A ``README.md`` model card is generated from ``model.json``.
    """
    from safetensors.torch import save_file

    from pipeline.models.nets import count_parameters

    from pipeline.io.volume import atomic_dir

    folder = Path(folder)
    with atomic_dir(folder, overwrite=overwrite) as tmp:
        tmp.mkdir()
        module = getattr(net, "module", net)
        save_file(state_dict_to_tensors(module.state_dict()), str(tmp / WEIGHTS), metadata={"format": "pt"})
        card = card.model_copy(update={"weights_sha256": file_sha256(tmp / WEIGHTS), "parameters": count_parameters(module)})
        (tmp / CARD).write_text(card.to_json() + "\n")
        (tmp / "README.md").write_text(card_markdown(card))
    return folder


@dataclass
class LoadedModel:
    """A network ready for inference (eval mode) with its card and folder."""

    net: Any
    card: ModelCard
    folder: Path

    @property
    def key(self) -> str:
        """Identity of the weights (their sha256)."""
        return self.card.weights_sha256


def load_model(ref: str | os.PathLike[str] | None = None, *, task: str = "segment", device: str = "cpu") -> LoadedModel:
    """Load a model folder (or a shipped model by name, or the default for ``task``) for inference.

    Raises
    ------
    UserError
        A folder without ``model.json`` or weights, weights whose hash differs
        from ``model.json``, or weights that do not fit its architecture.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from pipeline.models.nets import build_network

    folder = resolve_model(ref, task=task)
    card = read_card(folder)
    wpath = folder / WEIGHTS
    if not wpath.is_file():
        raise UserError(f"{folder}: has no {WEIGHTS}; expected the weights beside {CARD}")
    if card.weights_sha256 and file_sha256(wpath) != card.weights_sha256:
        raise UserError(f"{wpath}: sha256 differs from the one in {CARD}; the weights were changed or are incomplete")
    try:
        state = load_file(str(wpath), device=device)
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"{wpath}: is not a readable safetensors file ({exc})") from None
    try:
        net = build_network({"name": card.architecture.name, **card.architecture.kwargs()})
    except ValueError as exc:
        raise UserError(f"{folder / CARD}: {exc}") from None
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in first[1:3])[:300]
        raise UserError(f"{wpath}: the weights do not fit the architecture in {CARD} ({detail})") from None
    net.to(device).eval()
    return LoadedModel(net=net, card=card, folder=folder)
