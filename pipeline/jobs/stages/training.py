"""What the ``train2d`` and ``train3d`` stage adapters share: data and model references, the run, the outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.jobs.base import StageOutput
from pipeline.jobs.context import StageContext

__all__ = ["run_training", "model_ref", "engines"]


def engines(cfg: Any) -> set[str]:
    """Ray when the training runs on Ray Train workers, else none (it trains in the runner's process)."""
    return {"ray"} if cfg.workers.executor == "ray" else set()


def model_ref(ctx: StageContext, ref: str | None, *, task: str) -> Path | None:
    """A model named in a stage: an earlier stage's model, a shipped model's name, "default", or a folder path."""
    from pipeline.models.folder import builtin_models, resolve_model

    if ref is None:
        return None
    if ref in ctx.outputs:
        return ctx.outputs[ref]
    if ref == "default" or ref in builtin_models():
        return resolve_model(ref, task=task)
    return resolve_model(ctx.resolve(ref), task=task)


def run_training(ctx: StageContext, cfg: Any, *, probability: Path | None = None) -> StageOutput:
    """Train the stage's model into ``<name>/model`` and report its validation metrics."""
    from pipeline.train.loop import history_paths
    from pipeline.train.run import train_model

    dataset = ctx.resolve_store(cfg.dataset) if cfg.dataset else ctx.require_input("a synthetic dataset")
    if cfg.workers.executor == "ray":
        ctx.ray()
    init = model_ref(ctx, cfg.init, task="refine" if probability is not None else "segment")
    result = train_model(cfg, root=ctx.path(ctx.name), dataset=dataset, seed=ctx.seed, stage_hash=ctx.stage_hash,
                         name=cfg.model_name or ctx.name, probability=probability, init=init,
                         progress=f"{ctx.name}: epochs")
    from pipeline.models.folder import read_card

    card = read_card(result.model)
    paths = history_paths(result.root)
    files = {"history": paths["json"], "history_csv": paths["csv"], "model_card": result.model / "README.md"}
    for name in ("curves", "epochs", "prediction"):
        f = paths["figures"] / f"{name}.png"
        if f.is_file():
            files[name] = f
    metrics = {
        "val": card.metrics.get("val", {}),
        "epochs": len(result.history),
        "chosen_epoch": card.training.get("chosen_epoch"),
        "seconds": round(result.seconds, 1),
        "samples_per_second": card.training.get("samples_per_second"),
        "parameters": card.parameters,
        "weights_sha256": card.weights_sha256,
    }
    return StageOutput(path=result.model, metrics=metrics, files=files)
