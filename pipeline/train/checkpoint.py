"""Training checkpoints: ``weights.safetensors``, ``optimizer.safetensors`` and ``state.json`` in one folder.

Nothing is pickled: tensors go to safetensors, everything else (epoch, step,
best score, history, the stage hash, the optimiser's hyper-parameters) to
JSON. A checkpoint folder is written under a temporary name and renamed when
complete, so a folder named ``epoch-NNNN`` is always whole.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

__all__ = ["save_checkpoint", "load_checkpoint", "latest_checkpoint", "prune_checkpoints", "checkpoint_name"]

_NAME = re.compile(r"^epoch-(\d{4,})$")


def checkpoint_name(epoch: int) -> str:
    """Folder name of the checkpoint after ``epoch`` (1-based)."""
    return f"epoch-{int(epoch):04d}"


def _optimizer_tensors(opt: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    import torch

    sd = opt.state_dict()
    tensors: dict[str, Any] = {}
    scalars: dict[str, Any] = {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{idx}.{k}"] = v.detach().to("cpu").contiguous().clone()
            else:
                scalars[f"{idx}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def save_checkpoint(root: str | os.PathLike[str], epoch: int, *, net: Any, optimizer: Any, state: dict[str, Any]) -> Path:
    """Write the checkpoint after ``epoch`` into ``root/epoch-NNNN`` atomically and return it."""
    from safetensors.torch import save_file

    from pipeline.models.folder import WEIGHTS, state_dict_to_tensors

    from pipeline.io.volume import atomic_dir

    final = Path(root) / checkpoint_name(epoch)
    with atomic_dir(final, overwrite=True) as tmp:
        tmp.mkdir()
        module = getattr(net, "module", net)
        save_file(state_dict_to_tensors(module.state_dict()), str(tmp / WEIGHTS))
        tensors, opt_json = _optimizer_tensors(optimizer)
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        (tmp / "state.json").write_text(json.dumps({**state, "epoch": int(epoch), "optimizer": opt_json}, default=float))
    return final


def load_checkpoint(folder: str | os.PathLike[str], *, net: Any, optimizer: Any | None = None) -> dict[str, Any]:
    """Load weights (and optimiser state) from a checkpoint folder into ``net`` (and ``optimizer``); return its state."""
    from safetensors.torch import load_file

    from pipeline.models.folder import WEIGHTS

    folder = Path(folder)
    state = json.loads((folder / "state.json").read_text())
    module = getattr(net, "module", net)
    module.load_state_dict(load_file(str(folder / WEIGHTS)), strict=True)
    if optimizer is not None:
        tensors = load_file(str(folder / "optimizer.safetensors"))
        opt_json = state["optimizer"]
        per: dict[int, dict[str, Any]] = {}
        for key, v in {**tensors, **opt_json["scalars"]}.items():
            idx, name = key.split(".", 1)
            per.setdefault(int(idx), {})[name] = v
        optimizer.load_state_dict({"state": per, "param_groups": opt_json["param_groups"]})
    return state


def latest_checkpoint(root: str | os.PathLike[str], *, stage_hash: str | None = None) -> Path | None:
    """The newest complete checkpoint under ``root`` (of ``stage_hash`` when given), or None."""
    root = Path(root)
    if not root.is_dir():
        return None
    found = sorted((int(m.group(1)), p) for p in root.iterdir() if (m := _NAME.match(p.name)) and (p / "state.json").is_file())
    for _, p in reversed(found):
        if stage_hash is None:
            return p
        try:
            if json.loads((p / "state.json").read_text()).get("stage_hash") == stage_hash:
                return p
        except (OSError, json.JSONDecodeError):
            continue
    return None


def prune_checkpoints(root: str | os.PathLike[str], keep: int = 2, *, protect: tuple[str, ...] = ()) -> None:
    """Remove all but the ``keep`` newest checkpoints (and any ``protect``-ed names, e.g. the best one)."""
    root = Path(root)
    if not root.is_dir():
        return
    found = sorted((int(m.group(1)), p) for p in root.iterdir() if (m := _NAME.match(p.name)))
    for _, p in found[:-keep] if keep > 0 else found:
        if p.name not in protect:
            shutil.rmtree(p, ignore_errors=True)
